"""Record a finished ``hybrid eval`` run in MLflow (``hybrid.tuning.tracking``): each strategy's mean
primary score and F1 as metrics, the settings as params, the report as artifacts, and a tag linking
the run to the tune run of the adapter it evaluated. Tracking never fails an evaluation: without
mlflow, or with a broken store, it logs why and returns None.

    track_eval(summary, out_dir, cfg, adapter="adapters/legal")   # -> MLflow run id or None
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from core.errors import HybridError

log = logging.getLogger("hybrid.eval")


def eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """``{"rag.primary": 0.41, "rag.f1": 0.38, ...}`` from a report summary's per-strategy means."""
    out: dict[str, float] = {}
    for name, s in (summary.get("strategies") or {}).items():
        for metric in ("primary", "f1"):
            mean = (s.get(metric) or {}).get("mean") if isinstance(s.get(metric), dict) else None
            if isinstance(mean, (int, float)) and not isinstance(mean, bool):
                out[f"{name}.{metric}"] = float(mean)
    return out


def track_eval(summary: dict[str, Any], out_dir: str | Path, cfg: Any, *, adapter: str | Path | None = None,
               enabled: bool | str = "auto") -> str | None:
    """Log the run when ``enabled`` (``auto``: when mlflow is installed); returns the run id or None."""
    from hybrid.tuning.tracking import log_eval_run, mlflow_available

    if enabled is False or (enabled == "auto" and not mlflow_available()):
        return None
    out = Path(out_dir)
    adapter = adapter if adapter is not None and (Path(adapter) / "adapter_card.json").is_file() else None
    run = summary.get("run") or {}
    params = {**{k: v for k, v in dataclasses.asdict(cfg).items() if k != "track"},
              "app": run.get("app"), "questions": run.get("questions"), "n_evaluated": run.get("n_evaluated")}
    try:
        return log_eval_run(eval_metrics(summary), adapter=adapter, params=params, name=f"eval {run.get('app', '')}",
                            artifacts=[p for p in (out / "report.md", out / "summary.json") if p.is_file()])
    except (HybridError, OSError) as e:
        log.warning("this eval run was not tracked: %s", e)
        return None
