"""Experiment tracking with MLflow: every tune run (and, through ``log_eval_run``, every eval run) becomes
an MLflow run with its resolved config as params, per-step metrics, the data hashes of the adapter card as
tags, and the card as an artifact.

The default store is local: SQLite at ``$HYBRID_CACHE/mlflow/mlflow.db`` with artifacts beside it, so
nothing leaves the machine unless ``track.uri`` or ``$MLFLOW_TRACKING_URI`` names a server::

    tracker = tracker_for(cfg)          # None when tracking is off (or auto and mlflow is not installed)
    tracker.on_start({...}); tracker.on_log({"step": 1, "loss": 2.3}); tracker.on_end(card, out, "FINISHED")
    mlflow ui --backend-store-uri sqlite:///$HYBRID_CACHE/mlflow/mlflow.db

Tracking is a record of the training, never a reason to lose it: an error while logging warns once and
stops tracking, and training goes on (``metrics.jsonl`` keeps everything).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from core.errors import ConfigError, InputError
from hybrid.tuning.run_files import RunCallback

log = logging.getLogger("hybrid.tuning.tracking")

LAB_HINT = "pip install 'hybrid[lab]'"
ADAPTER_RUN_TAG = "hybrid.adapter_run_id"
_PARAM_MAX = 6000  # MLflow's limit on a param value


def require(module: str, what: str) -> Any:
    """Import an optional lab package, or fail with one line saying how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs the {module} package: {LAB_HINT}") from None


def mlflow_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


def local_uri() -> str:
    """The default store: SQLite under the project's cache (MLflow 3 refuses new plain-file stores)."""
    from core.io import cache_dir

    return "sqlite:///" + str(cache_dir("mlflow") / "mlflow.db")


def resolve_uri(uri: str = "") -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI", "") or local_uri()


def _artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite file (MLflow's own default is ./mlruns in the
    current directory, which would scatter files into whatever folder the user ran from); servers decide."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return None


def check_reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None when the store answers, else why not (one line). HTTP stores get a ``/health`` probe first, so a
    dead server costs seconds instead of MLflow's retries with backoff."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                return None if r.status == 200 else f"/health answered HTTP {r.status}"
        except (urllib.error.URLError, OSError, socket.timeout, ValueError) as e:
            return str(getattr(e, "reason", e))
    try:
        client = _client(uri)
        client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any store error means "not usable"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def _client(uri: str) -> Any:
    require("mlflow", "experiment tracking")
    from mlflow.tracking import MlflowClient

    # mlflow logs its SQLite schema migrations at INFO ("Creating initial MLflow database tables...")
    # on the first run: store housekeeping, not the user's training output
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)

    return MlflowClient(tracking_uri=uri)


def open_store(uri: str = "", on_unreachable: str = "local") -> str:
    """The URI to track into: ``uri`` when it answers; otherwise the local store with a warning
    (``on_unreachable='local'``) or a one-line ``InputError`` (``'fail'``)."""
    want = resolve_uri(uri)
    why = check_reachable(want)
    if why is None:
        return want
    if on_unreachable == "fail" or want == local_uri():
        raise InputError(f"tracking store {want} is unreachable ({why}); fix it, set track.on_unreachable=local, "
                         "or turn tracking off (--no-track / track.enabled=false)")
    fallback = local_uri()
    log.warning("tracking store %s is unreachable (%s); tracking into the local store %s instead", want, why,
                fallback)
    return fallback


def _experiment_id(client: Any, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(uri))
    except Exception:  # noqa: BLE001 - another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"train.lr": "0.0002", ...}``; lists and dicts of scalars as JSON."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, (dict, list, tuple)):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = str(v)
    return {k: (v if len(v) <= _PARAM_MAX else v[:_PARAM_MAX - 3] + "...") for k, v in out.items()}


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTracker(RunCallback):
    """One MLflow run per training run, fed by the trainer's callbacks (rank 0 only)."""

    def __init__(self, cfg: Any, *, uri: str) -> None:
        self.cfg = cfg
        self.uri = uri
        self.intended = resolve_uri(cfg.track.uri)
        self.client = _client(uri)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._dead = False

    # every MLflow call goes through here: a failing store stops tracking, never the training
    def _safe(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        if self._dead:
            return None
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001
            self._dead = True
            log.warning("tracking stopped (%s: %s); training goes on, metrics stay in metrics.jsonl", what,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            return None

    def on_start(self, info: dict[str, Any]) -> None:
        from dataclasses import asdict

        def start() -> None:
            tc = self.cfg.track
            self.experiment_id = _experiment_id(self.client, self.uri, tc.experiment)
            tags = {"hybrid.kind": "tune", "hybrid.method": self.cfg.method, **tc.tags}
            if self.intended != self.uri:
                tags["hybrid.intended_tracking_uri"] = self.intended
            if info.get("out"):
                tags["hybrid.adapter_dir"] = str(Path(info["out"]).resolve())
            name = tc.run_name or (Path(info["out"]).name if info.get("out") else None)
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            self.run_id = run.info.run_id
            params = flatten(asdict(self.cfg))
            params.update({f"run.{k}": str(v) for k, v in info.items() if k != "out"})
            self._log_params(params)

        self._safe("start", start)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        if self.run_id is None or not values:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._safe("log", self.client.log_batch, self.run_id,
                   metrics=[Metric(k, v, ts, step) for k, v in sorted(values.items())])

    def on_log(self, row: dict[str, Any]) -> None:
        self.log_metrics(_numeric(row), int(row.get("step", 0)))

    def on_card(self, card: Any) -> None:
        if self.run_id is not None and not self._dead:
            card.extra["mlflow"] = {"run_id": self.run_id, "experiment_id": self.experiment_id,
                                    "tracking_uri": self.uri}

    def on_end(self, card: Any, out: Path | None, status: str) -> None:
        if self.run_id is None:
            return

        def end() -> None:
            if card is not None:
                tags = {}
                for i, f in enumerate(card.data):
                    tags[f"data.{f.split}.{i}.sha256"] = f.sha256
                    tags[f"data.{f.split}.{i}.path"] = f.path
                    tags[f"data.{f.split}.{i}.rows"] = str(f.rows)
                tags["hybrid.system_prompt_hash"] = card.system_prompt_hash
                tags["hybrid.template_hash"] = card.template_hash
                tags["hybrid.base_model_sha"] = card.base_model_sha
                for k, v in tags.items():
                    self.client.set_tag(self.run_id, k, v)
                final = {"final_train_loss": card.train_loss, "final_eval_loss": card.eval_loss,
                         "tokens_seen": card.tokens_seen, "wall_time_s": card.wall_time_s}
                for task, c in (card.extra.get("mix") or {}).get("tasks", {}).items():
                    final[f"mix.{task}.sampled_examples"] = c.get("sampled_examples")
                    final[f"mix.{task}.sampled_tokens"] = c.get("sampled_tokens")
                for task, v in (card.extra.get("eval_loss_by_task") or {}).items():
                    final[f"final_eval_loss.{task}"] = v
                self.log_metrics({k: float(v) for k, v in final.items() if v is not None}, card.steps)
                self._log_card(card, out)
            self.client.set_terminated(self.run_id, status=status)

        self._safe("end", end)
        if self._dead and status != "FINISHED":
            self._safe("end", self.client.set_terminated, self.run_id, status=status)

    def _log_card(self, card: Any, out: Path | None) -> None:
        from hybrid.tuning.card import write_card

        files = [out / n for n in ("adapter_card.json", "README.md", "metrics.jsonl", "tune_config.json")] \
            if out is not None else []
        files = [f for f in files if f.is_file()]
        if files:
            for f in files:
                self.client.log_artifact(self.run_id, str(f), artifact_path="adapter")
            return
        with tempfile.TemporaryDirectory() as tmp:  # no adapter written: log the card alone
            write_card(card, tmp)
            self.client.log_artifacts(self.run_id, tmp, artifact_path="adapter")

    def on_fail(self, exc: BaseException) -> None:
        if self.run_id is None:
            return
        pruned = type(exc).__name__ == "TrialPruned"
        status = "KILLED" if pruned or isinstance(exc, KeyboardInterrupt) else "FAILED"
        self._safe("fail", self.client.set_tag, self.run_id, "hybrid.outcome",
                   "pruned" if pruned else f"{type(exc).__name__}: {str(exc)[:500]}")
        self._safe("fail", self.client.set_terminated, self.run_id, status=status)


def tracker_for(cfg: Any) -> MlflowTracker | None:
    """The tracker ``cfg.track`` asks for: None when off, or auto without mlflow installed."""
    tc = cfg.track
    if tc.enabled is False:
        return None
    if tc.enabled == "auto" and not mlflow_available():
        log.info("experiment tracking is off: mlflow is not installed (%s); metrics.jsonl has the metrics",
                 LAB_HINT)
        return None
    if tc.enabled is True:
        require("mlflow", "experiment tracking (track.enabled=true)")
    try:
        uri = open_store(tc.uri, tc.on_unreachable)
    except InputError as e:
        # on_unreachable=fail, or the local store itself is unusable (e.g. locked by another process):
        # tracking that was asked for fails the run; automatic tracking steps aside with a warning
        if tc.enabled is True or tc.on_unreachable == "fail":
            raise
        log.warning("experiment tracking is off for this run: %s", e)
        return None
    return MlflowTracker(cfg, uri=uri)


def log_eval_run(metrics: dict[str, float], *, adapter: str | os.PathLike[str] | None = None,
                 params: dict[str, Any] | None = None, artifacts: Iterable[str | os.PathLike[str]] = (),
                 name: str | None = None, experiment: str = "hybrid-eval", uri: str = "",
                 on_unreachable: str = "local", tags: dict[str, str] | None = None) -> str:
    """Record one eval run; returns its MLflow run id. With ``adapter``, the run is tagged with the tune run
    that produced it (from the adapter card), so the UI links an eval to the adapter it measured::

        log_eval_run({"f1": 0.61}, adapter="adapters/legal", artifacts=["report/report.md"])
    """
    client_uri = open_store(uri, on_unreachable)
    client = _client(client_uri)
    all_tags = {"hybrid.kind": "eval", **(tags or {})}
    if adapter is not None:
        from hybrid.tuning.card import read_card

        card = read_card(adapter)
        all_tags["hybrid.adapter_dir"] = str(Path(adapter).resolve())
        all_tags["hybrid.base_model_sha"] = card.base_model_sha
        linked = (card.extra.get("mlflow") or {}).get("run_id")
        if linked:
            all_tags[ADAPTER_RUN_TAG] = linked
        else:
            log.warning("adapter %s has no tracked tune run in its card; the eval run is not linked", adapter)
    exp = _experiment_id(client, client_uri, experiment)
    run = client.create_run(exp, run_name=name, tags=all_tags)
    rid = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        ts = int(time.time() * 1000)
        bad = [k for k, v in metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
        if bad:
            raise ConfigError(f"eval metrics must be numbers; not: {', '.join(bad)}")
        client.log_batch(rid, metrics=[Metric(k, float(v), ts, 0) for k, v in sorted(metrics.items())],
                         params=[Param(k, v) for k, v in sorted(flatten(params or {}).items())][:100])
        for a in artifacts:
            p = Path(a)
            if p.is_dir():
                client.log_artifacts(rid, str(p), artifact_path="eval")
            elif p.is_file():
                client.log_artifact(rid, str(p), artifact_path="eval")
            else:
                raise InputError(f"eval artifact not found: {p}")
    except BaseException:
        client.set_terminated(rid, status="FAILED")
        raise
    client.set_terminated(rid)
    return rid
