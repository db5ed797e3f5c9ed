"""MLflow tracking of tune runs, read back through MLflow's own client: a file store for the fast tests, a
real ``mlflow server`` on loopback for one slow test. Bad stores: unreachable, required but missing."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import urllib.request
import uuid

import pytest

from tests.waiting import wait_until

from core.errors import InputError
from hybrid.tuning.card import read_card
from hybrid.tuning.trainer import train
from tests.tuning.conftest import tiny_cfg

pytest.importorskip("mlflow")


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    # MLflow 3 keeps plain-file stores only on request; they start instantly, unlike a new SQLite store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _only_run(uri, experiment="hybrid-tune"):
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} in {uri}"
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return c, runs[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_tracked_run(c, run, out, steps: int) -> None:
    """Params = the resolved config, per-step metrics, data hashes as tags, the card as an artifact."""
    card = read_card(out)
    assert card.extra["mlflow"]["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["method"] == "lora" and p["lora.r"] == "16" and float(p["train.lr"]) == 0.01
    assert p["data.max_length"] == "96" and p["run.total_steps"] == str(steps)
    loss = c.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(1, steps + 1))
    jsonl = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in sorted(loss, key=lambda m: m.step)] == pytest.approx(
        [r["loss"] for r in jsonl if "loss" in r], rel=1e-6)  # the runs use log_every=1
    assert len(c.get_metric_history(run.info.run_id, "lr")) == steps
    assert all(m.value > 0 for m in c.get_metric_history(run.info.run_id, "tokens_per_s"))
    evals = c.get_metric_history(run.info.run_id, "eval_loss")
    assert sorted(m.step for m in evals) == [s for s, _ in card.extra["eval_history"]]
    assert run.data.metrics["final_eval_loss"] == pytest.approx(card.eval_loss)
    tags = run.data.tags
    assert tags["data.train.0.sha256"] == card.data[0].sha256
    assert tags["hybrid.adapter_dir"] == str(out.resolve())
    names = {a.path for a in c.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_card.json", "adapter/README.md", "adapter/metrics.jsonl"} <= names
    local = c.download_artifacts(run.info.run_id, "adapter/adapter_card.json", str(out.parent))
    logged = json.loads(open(local, encoding="utf-8").read())
    assert logged["data"][0]["sha256"] == card.data[0].sha256


def test_tune_run_is_tracked_with_params_metrics_hashes_and_card(tmp_path, tokenizer, tiny_model, catalogue_file,
                                                                  file_store):
    out = tmp_path / "shop"
    train(tiny_cfg("train.log_every=1", f"track.uri={file_store}", "track.enabled=true"), [catalogue_file], out,
          model=tiny_model, tokenizer=tokenizer)
    c, run = _only_run(file_store)
    _check_tracked_run(c, run, out, 4)
    assert run.info.run_name == "shop"


def test_no_track_writes_no_run_and_keeps_the_jsonl(tmp_path, tokenizer, tiny_model, catalogue_file, file_store):
    out = tmp_path / "a"
    train(tiny_cfg("track.enabled=false", f"track.uri={file_store}"), [catalogue_file], out,
          model=tiny_model, tokenizer=tokenizer)
    assert "mlflow" not in read_card(out).extra
    assert not (tmp_path / "mlruns").exists()
    assert (out / "metrics.jsonl").read_text().count("eval_loss") >= 2


def test_unreachable_server_warns_and_tracks_locally(tmp_path, tokenizer, tiny_model, catalogue_file, caplog):
    # Decision: a training run costs far more than its record, so a dead server must not throw it away;
    # the run goes to the local store, tagged with the URI it was meant for, and one warning says so.
    dead = f"http://127.0.0.1:{_free_port()}"
    marker = uuid.uuid4().hex
    out = tmp_path / "a"
    with caplog.at_level(logging.WARNING, logger="hybrid.tuning.tracking"):
        train(tiny_cfg(f"track.uri={dead}", f"track.tags={{probe: {marker}}}"), [catalogue_file], out,
              model=tiny_model, tokenizer=tokenizer)
    warned = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warned) == 1 and dead in warned[0] and "local store" in warned[0] and "\n" not in warned[0]
    from hybrid.tuning.tracking import local_uri

    c = _client(local_uri())
    runs = c.search_runs([c.get_experiment_by_name("hybrid-tune").experiment_id],
                         filter_string=f"tags.probe = '{marker}'")
    assert len(runs) == 1
    assert runs[0].data.tags["hybrid.intended_tracking_uri"] == dead
    assert read_card(out).extra["mlflow"]["run_id"] == runs[0].info.run_id


def test_unreachable_server_with_on_unreachable_fail_stops_before_training(tmp_path, tokenizer, tiny_model,
                                                                         catalogue_file):
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(InputError, match=r"tracking store http://127\.0\.0\.1:\d+ is unreachable") as e:
        train(tiny_cfg(f"track.uri={dead}", "track.on_unreachable=fail"), [catalogue_file], tmp_path / "a",
              model=tiny_model, tokenizer=tokenizer)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "a").exists()


def test_required_tracking_without_mlflow_says_how_to_install(tmp_path, tokenizer, tiny_model, catalogue_file,
                                                              monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(InputError, match=r"needs the mlflow package: pip install 'hybrid\[lab\]'"):
        train(tiny_cfg("track.enabled=true"), [catalogue_file], tmp_path / "a", model=tiny_model,
              tokenizer=tokenizer)
    # auto: the run trains untracked
    res = train(tiny_cfg("train.max_steps=1"), [catalogue_file], tmp_path / "b", model=tiny_model,
                tokenizer=tokenizer)
    assert res.steps == 1 and "mlflow" not in read_card(tmp_path / "b").extra


def test_store_failing_mid_run_stops_tracking_not_training(tmp_path, tokenizer, tiny_model, catalogue_file,
                                                           file_store, monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    calls = {"n": 0}
    real = MlflowClient.log_batch

    def flaky(self, run_id, metrics=(), params=(), tags=(), **kw):
        if metrics:
            calls["n"] += 1
            if calls["n"] >= 2:
                raise ConnectionError("store went away")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    with caplog.at_level(logging.WARNING, logger="hybrid.tuning.tracking"):
        res = train(tiny_cfg(f"track.uri={file_store}"), [catalogue_file], tmp_path / "a", model=tiny_model,
                    tokenizer=tokenizer)
    assert res.steps == 4 and (tmp_path / "a" / "adapter_model.safetensors").is_file()
    stopped = [r for r in caplog.records if "tracking stopped" in r.getMessage()]
    assert len(stopped) == 1 and "store went away" in stopped[0].getMessage()
    assert calls["n"] == 2  # nothing more was tried after the failure


def test_eval_run_is_linked_to_the_adapter_run(tmp_path, tokenizer, tiny_model, catalogue_file, file_store):
    from hybrid.tuning.tracking import ADAPTER_RUN_TAG, log_eval_run

    out = tmp_path / "shop"
    train(tiny_cfg(f"track.uri={file_store}", "train.max_steps=1"), [catalogue_file], out, model=tiny_model,
          tokenizer=tokenizer)
    report = tmp_path / "report.md"
    report.write_text("# eval\nf1 0.5\n")
    rid = log_eval_run({"f1": 0.5, "abstain_rate": 0.1}, adapter=out, params={"strategy": "rag"},
                       artifacts=[report], uri=file_store)
    c = _client(file_store)
    run = c.get_run(rid)
    assert run.data.tags[ADAPTER_RUN_TAG] == read_card(out).extra["mlflow"]["run_id"]
    assert run.data.metrics == {"f1": 0.5, "abstain_rate": 0.1} and run.data.params == {"strategy": "rag"}
    assert [a.path for a in c.list_artifacts(rid, "eval")] == ["eval/report.md"]
    with pytest.raises(InputError, match="eval artifact not found: .*nope.md"):
        log_eval_run({"f1": 0.5}, artifacts=[tmp_path / "nope.md"], uri=file_store)


@pytest.mark.slow
def test_real_mlflow_server_on_loopback(tmp_path, tokenizer, tiny_model, catalogue_file):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log_file = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def healthy():
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(uri + "/health", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        # generous: a new SQLite store runs its migrations first
        wait_until(healthy, "the mlflow server to become ready", timeout=240, interval=1)
        out = tmp_path / "shop"
        train(tiny_cfg("train.log_every=1", f"track.uri={uri}", "track.on_unreachable=fail"), [catalogue_file],
              out, model=tiny_model, tokenizer=tokenizer)
        c, run = _only_run(uri)
        _check_tracked_run(c, run, out, 4)
        assert read_card(out).extra["mlflow"]["tracking_uri"] == uri
        # an eval of that adapter, on the same server, linked to the tune run it measured
        from hybrid.tuning.tracking import ADAPTER_RUN_TAG, log_eval_run

        rid = log_eval_run({"rag.primary": 0.4}, adapter=out, uri=uri, on_unreachable="fail")
        ev = c.get_run(rid)
        assert ev.data.metrics["rag.primary"] == 0.4 and ev.data.tags[ADAPTER_RUN_TAG] == run.info.run_id
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def test_a_new_sqlite_store_keeps_its_schema_migrations_out_of_the_output(tmp_path):
    # the first run in a fresh SQLite store: mlflow creates its tables and logs each step at INFO through
    # its own stderr handler, which `make demo` printed between its training lines. In a subprocess, so
    # the logger levels this sets do not leak into other tests.
    code = ("import sys; from hybrid.tuning.tracking import _client; "
            "c = _client('sqlite:///' + sys.argv[1]); c.search_experiments()")
    db = tmp_path / "mlflow.db"
    r = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert db.is_file()
    assert "database tables" not in r.stderr and " INFO " not in r.stderr, r.stderr[-2000:]
