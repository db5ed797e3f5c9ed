"""Optuna sweeps on the tiny random Llama: the space file, the click command (CliRunner), tracked trials,
pruning, the report and plot, resuming a stopped study and one killed in the middle of a trial."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.waiting import wait_until
import yaml

from core.errors import ConfigError, InputError
from tests.tuning.conftest import make_tiny_model

optuna = pytest.importorskip("optuna")
pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "rank": [4, 16], "dropout": {"low": 0.0, "high": 0.1},
         "steps": 3, "pruning": {"startup_trials": 1, "eval_every": 1}}
TINY = ["--set", "data.max_length=96", "--set", "train.batch_tokens=384", "--set", "train.progress=false",
        "--set", "train.tensorboard=false", "--set", "train.warmup_steps=1", "--set", "train.lr=0.01",
        "--set", "data.system_prompt=You are a test shop assistant."]


def _write(path: Path, obj) -> Path:
    path.write_text(yaml.safe_dump(obj), encoding="utf-8")
    return path


def _invoke(args, tokenizer, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hybrid.cli.tune_sweep import sweep

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "mlruns").as_uri()
    factory = {"model_factory": lambda cfg: (make_tiny_model(tokenizer), tokenizer)}
    return CliRunner().invoke(sweep, [*args, *TINY, "--set", f"track.uri={store}"], obj=factory,
                              catch_exceptions=True), store


def test_unknown_space_parameter_is_one_line_naming_it(tmp_path, tokenizer, catalogue_file, monkeypatch):
    space = _write(tmp_path / "space.yaml", {"lr": [0.01], "rnak": [4, 8]})
    res, _ = _invoke(["--data", str(catalogue_file), "--space", str(space), "--trials", "1", "--out",
                      str(tmp_path / "sw")], tokenizer, tmp_path, monkeypatch)
    assert isinstance(res.exception, ConfigError)
    msg = str(res.exception)
    assert "unknown parameter 'rnak'" in msg and "known: alpha" in msg and "\n" not in msg
    assert not (tmp_path / "sw").exists()  # refused before anything was trained or written


@pytest.mark.parametrize("space,message", [
    ({"lr": {"low": 0.1, "high": 0.01}}, r"lr: low \(0.1\) must be < high \(0.01\)"),
    ({"lr": {"low": 0.0, "high": 0.01}}, r"lr: a log range needs low > 0"),
    ({"rank": {"low": 2}}, r"rank: a range is \{low, high"),
    ({"rank": []}, r"rank: an empty list of choices"),
    ({"method": {"low": 1, "high": 2}}, r"method: takes a list of choices"),
    ({"steps": 10}, r"nothing to search"),
    ({"lr": [0.01], "pruning": {"patience": 2}}, r"unknown pruning setting 'patience'"),
    ([1, 2], r"must be a mapping of parameters"),
])
def test_bad_spaces_are_one_line_config_errors(space, message):
    from hybrid.tuning.sweep import parse_space

    with pytest.raises(ConfigError, match=message) as e:
        parse_space(space, "sweep.yaml")
    assert "\n" not in str(e.value)


def test_a_missing_or_broken_space_file(tmp_path):
    from hybrid.tuning.sweep import load_space

    with pytest.raises(InputError, match="sweep space not found: .*nope.yaml"):
        load_space(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML"):
        load_space(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"empty.yaml must be a mapping of parameters, got nothing"):
        load_space(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- lr\n")
    with pytest.raises(ConfigError, match=r"list.yaml: top level must be a mapping, got list"):
        load_space(tmp_path / "list.yaml")


def test_a_preset_outside_the_space_gets_no_baseline_trial(tmp_path, tokenizer, catalogue_file):
    from hybrid.tuning.sweep import parse_space, run_sweep
    from tests.tuning.conftest import tiny_cfg

    lines: list[str] = []
    run_sweep(tiny_cfg("train.max_steps=1", "track.enabled=false"), parse_space({"rank": [2, 4]}), 1,
              data=[catalogue_file], out=tmp_path / "sw", echo=lines.append,
              model_factory=lambda c: (make_tiny_model(tokenizer), tokenizer))
    assert lines[0] == "no preset trial: the config's rank=16 lies outside the space"
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{tmp_path / 'sw' / 'study.sqlite'}")
    assert len(study.trials) == 1 and not study.trials[0].user_attrs.get("baseline")


def test_trial_values_are_checked_by_the_config():
    from hybrid.tuning.sweep import trial_config
    from tests.tuning.conftest import tiny_cfg

    cfg = trial_config(tiny_cfg(), {"lr": 0.003, "rank": 8, "epochs": 2.0})
    assert (cfg.train.lr, cfg.lora.r, cfg.train.epochs, cfg.train.max_steps) == (0.003, 8, 2.0, 0)
    with pytest.raises(ConfigError, match=r"lora.dropout must be in \[0, 1\), got 1.5"):
        trial_config(tiny_cfg(), {"dropout": 1.5})


def test_median_pruner_stops_a_trial_worse_than_the_median():
    from hybrid.tuning.sweep import _Pruning

    study = optuna.create_study(direction="minimize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    for step, v in [(1, 2.0), (2, 1.5), (3, 1.2)]:
        _Pruning(good)(step, {"eval_loss": v})
    study.tell(good, 1.2)
    bad = study.ask()
    p = _Pruning(bad)
    p(1, {"loss": 9.0})  # a step without an eval reports nothing
    with pytest.raises(optuna.TrialPruned, match="worse than the median"):
        p(2, {"eval_loss": 5.0})
    assert p.last_step == 2
    # the same losses at the trial's final step are kept: its training is already paid for
    last = study.ask()
    _Pruning(last, final_step=2)(2, {"eval_loss": 5.0})
    assert last.should_prune()  # the pruner would have stopped it; _Pruning kept it (did not raise)


def test_sweep_tracks_trials_reports_the_best_and_resumes(tmp_path, tokenizer, catalogue_file, monkeypatch):
    space = _write(tmp_path / "space.yaml", SPACE)
    out = tmp_path / "sw"
    args = ["--data", str(catalogue_file), "--space", str(space), "--out", str(out)]
    res, store = _invoke([*args, "--trials", "2"], tokenizer, tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert [line.split(":")[0] for line in res.output.splitlines() if line.startswith("trial ")] == \
        ["trial 0", "trial 1"]
    assert res.output.splitlines()[0].startswith("trial 0: eval_loss ")
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{out / 'study.sqlite'}")
    assert len(study.trials) == 2
    assert study.trials[0].user_attrs.get("baseline") and study.trials[0].params["lr"] == pytest.approx(0.01)

    # a second call with the same study continues the count: trials 2 and 3 run, 0 and 1 are not redone
    res, _ = _invoke([*args, "--trials", "4"], tokenizer, tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output + repr(res.exception)
    ran = [line.split(":")[0] for line in res.output.splitlines() if line.startswith("trial ")]
    assert ran == ["trial 2", "trial 3"]
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{out / 'study.sqlite'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and all(s in ("COMPLETE", "PRUNED") for s in states)
    # the resumed run's sampler does not replay the first run's sequence
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    best = study.best_trial
    assert f"best trial {best.number}: eval_loss {best.value:.4f}" in res.output
    from hybrid.tuning.card import read_card

    card = read_card(out / "best")
    assert card.eval_loss == pytest.approx(best.value)
    assert card.hyperparameters["config"]["lora"]["r"] == best.params["rank"]
    md = (out / "sweep.md").read_text()
    assert f"best: trial {best.number}" in md and "| 0 (preset) |" in md and "![eval_loss" in md
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # every trial is a tracked MLflow run, tagged with its study and trial number
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=store)
    runs = c.search_runs([c.get_experiment_by_name("hybrid-sweep-sw").experiment_id])
    assert sorted(int(r.data.tags["optuna.trial"]) for r in runs) == [0, 1, 2, 3]
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    assert float(by_trial[best.number].data.params["train.lr"]) == pytest.approx(best.params["lr"])
    for t in study.trials:
        assert by_trial[t.number].info.status == ("FINISHED" if t.state.name == "COMPLETE" else "KILLED")


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_retries_the_interrupted_trial(tmp_path, tokenizer, catalogue_file,
                                                                  monkeypatch):
    """A real process is killed in the middle of a trial; the rerun marks that trial failed, runs its
    parameters again, and the study ends with the requested number of finished trials."""
    space = _write(tmp_path / "space.yaml", {**SPACE, "steps": 400, "pruning": {"startup_trials": 99}})
    out = tmp_path / "sw"
    script = textwrap.dedent(f"""
        import os
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        from transformers import AutoTokenizer
        from hybrid.models import resolve_model
        from hybrid.tuning.sweep import load_space, run_sweep
        from tests.tuning.conftest import make_tiny_model, tiny_cfg
        tok = AutoTokenizer.from_pretrained(resolve_model("default").path, local_files_only=True)
        cfg = tiny_cfg("train.eval_every=0", "track.uri={(tmp_path / 'mlruns').as_uri()}")
        run_sweep(cfg, load_space({str(tmp_path / 'space.yaml')!r}), 3, data=[{str(catalogue_file)!r}],
                  out={str(out)!r}, model_factory=lambda c: (make_tiny_model(tok), tok))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    storage = f"sqlite:///{out / 'study.sqlite'}"
    try:
        def trial_running():  # a trial in the middle of training, with metrics on disk
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            ckpt = out / "trials" / "trial-000.run" / "metrics.jsonl"
            # the trial's metrics exist only after the sweep created the study: reading the database
            # before that would race the sweep on writing its schema
            if not (ckpt.is_file() and ckpt.stat().st_size > 0):
                return None
            try:
                st = optuna.load_study(study_name="sw", storage=storage)
            except (KeyError, Exception):  # noqa: BLE001 - the study is still being created
                return None
            runs = [t for t in st.trials if t.state.name == "RUNNING" and "owner" in t.user_attrs]
            return runs[0] if runs else None

        running = wait_until(trial_running, "the sweep to start a trial", timeout=300, interval=1)
    finally:
        proc.kill()
        proc.wait()
    st = optuna.load_study(study_name="sw", storage=storage)
    assert [t.state.name for t in st.trials] == ["RUNNING"]  # killed mid-trial, nothing finished

    from hybrid.tuning.sweep import load_space, run_sweep
    from tests.tuning.conftest import tiny_cfg

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    lines: list[str] = []
    cfg = tiny_cfg("track.uri=" + (tmp_path / "mlruns").as_uri())
    space_fast = _write(tmp_path / "space2.yaml", {**SPACE, "pruning": {"startup_trials": 99}})
    result = run_sweep(cfg, load_space(space_fast), 2, data=[catalogue_file], out=out,
                       model_factory=lambda c: (make_tiny_model(tokenizer), tokenizer), echo=lines.append)
    assert lines[0] == f"resuming: trials [{running.number}] were interrupted; their parameters run again"
    st = optuna.load_study(study_name="sw", storage=storage)
    assert [t.state.name for t in st.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert st.trials[1].params == running.params and st.trials[1].user_attrs["retry_of"] == running.number
    assert result.ran == 2 and result.best_adapter is not None


def test_downstream_objective_bad_inputs_are_one_line(tmp_path, tokenizer, catalogue_file, monkeypatch):
    from hybrid.tuning.sweep import downstream_objective

    with pytest.raises(InputError, match=r"--objective eval:nosuch: unknown strategy 'nosuch'"):
        downstream_objective(ROOT / "apps" / "legal", ROOT / "apps" / "legal" / "questions.jsonl", "nosuch")
    with pytest.raises(InputError, match=r"dev question set not found: .*missing.jsonl"):
        downstream_objective(ROOT / "apps" / "legal", tmp_path / "missing.jsonl", "tuned")
    space = _write(tmp_path / "space.yaml", SPACE)
    res, _ = _invoke(["--data", str(catalogue_file), "--space", str(space), "--trials", "1", "--out",
                      str(tmp_path / "sw"), "--objective", "eval:tuned"], tokenizer, tmp_path, monkeypatch)
    assert res.exit_code == 2 and "needs --app and --questions" in res.output
    res, _ = _invoke(["--data", str(catalogue_file), "--space", str(space), "--trials", "1", "--out",
                      str(tmp_path / "sw"), "--objective", "accuracy"], tokenizer, tmp_path, monkeypatch)
    assert res.exit_code == 2 and "--objective must be eval_loss or eval:<strategy>, got 'accuracy'" in res.output


def test_a_schema_race_on_a_new_study_is_retried_and_other_storage_errors_are_one_line():
    """Two processes creating the same new database race on the schema's version row; the loser
    retries and opens the study. Any other failure stays one line naming the storage."""
    import sqlalchemy.exc

    from hybrid.tuning.sweep import _open_study

    calls: list[int] = []

    class RacyOptuna:
        @staticmethod
        def create_study(**kw):
            calls.append(1)
            if len(calls) == 1:
                raise sqlalchemy.exc.IntegrityError(
                    "INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed: alembic_version.version_num"))
            return "study"

    assert _open_study(RacyOptuna, "sw", "sqlite:///x.db", "minimize", None) == "study" and len(calls) == 2

    class Broken:
        @staticmethod
        def create_study(**kw):
            raise RuntimeError("no such driver: foo\nmore detail")

    with pytest.raises(InputError, match=r"^cannot open the study storage foo://x: no such driver: foo$"):
        _open_study(Broken, "sw", "foo://x", "minimize", None)

    class AlwaysRacing:
        @staticmethod
        def create_study(**kw):
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")

    with pytest.raises(InputError, match="UNIQUE constraint"):
        _open_study(AlwaysRacing, "sw", "sqlite:///x.db", "minimize", None, attempts=2)
