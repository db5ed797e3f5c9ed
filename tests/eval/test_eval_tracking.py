"""``hybrid eval`` runs recorded in MLflow (hybrid/eval/track.py), read back through MLflow's own client."""

from __future__ import annotations

import pytest

from hybrid.eval.runner import EvalConfig, run_eval
from hybrid.eval.track import eval_metrics
from indexes.embed import HashEmbedder
from tests.core.conftest import make_assistant, write_app
from tests.eval.test_runner import qfile, reply

pytest.importorskip("mlflow")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a plain-file store starts at once
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _runs(uri):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("hybrid-eval")
    return c, ([] if exp is None else c.search_runs([exp.experiment_id]))


def test_an_eval_run_is_tracked_with_its_scores_settings_and_report(tmp_path, store):
    bot = make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)
    cfg = EvalConfig(strategies=["few_shot", "rag"], batch_size=2, track=True)
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", cfg, assistant=bot, progress=False)
    c, runs = _runs(store)
    assert len(runs) == 1 and runs[0].info.run_id == res.summary["run"]["mlflow_run_id"]
    run = runs[0]
    assert run.data.metrics["rag.primary"] == pytest.approx(res.summary["strategies"]["rag"]["primary"]["mean"])
    assert run.data.metrics == pytest.approx(eval_metrics(res.summary))
    assert run.data.params["strategies"] == '["few_shot", "rag"]' and run.data.tags["hybrid.kind"] == "eval"
    assert {a.path for a in c.list_artifacts(run.info.run_id, "eval")} >= {"eval/report.md", "eval/summary.json"}


def test_track_false_records_nothing(tmp_path, store):
    bot = make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)
    cfg = EvalConfig(strategies=["rag"], batch_size=2, track=False)
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", cfg, assistant=bot, progress=False)
    assert res.summary["run"]["mlflow_run_id"] is None and _runs(store)[1] == []
