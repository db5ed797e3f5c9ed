"""A run's own files beside the adapter: the run directory (``adapters/NAME.run``), its metrics log
(JSON lines, plus TensorBoard scalars when installed), and the settings a checkpoint must match to resume."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hybrid.tuning.config import TuneConfig


# ------------------------------------------------------------------------------------------------
# metrics


class Metrics:
    """Appends JSON lines (and TensorBoard scalars when ``tensorboard`` is installed)."""

    def __init__(self, path: Path | None, tensorboard: bool) -> None:
        self.path = path
        self._f = open(path, "a", encoding="utf-8") if path else None
        self._tb = None
        if path is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self._tb = None

    def log(self, row: dict[str, Any]) -> None:
        if self._f:
            self._f.write(json.dumps(row) + "\n")
            self._f.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row.get("step", 0))

    def close(self) -> None:
        if self._f:
            self._f.close()
        if self._tb is not None:
            self._tb.close()


# ------------------------------------------------------------------------------------------------
# run directory and resume key


def _resume_key(cfg: TuneConfig) -> dict[str, Any]:
    """Settings that must match for a checkpoint to continue this run exactly."""
    t = cfg.train
    return {"method": cfg.method, "method_settings": cfg.method_settings(), "data": asdict(cfg.data),
            "lr": t.lr, "batch_tokens": t.batch_tokens, "grad_accum": t.grad_accum, "seed": t.seed,
            "packing": t.packing, "schedule": t.schedule, "weight_decay": t.weight_decay}


def run_dir_for(out: str | os.PathLike[str]) -> Path:
    """Checkpoints and metrics live beside the adapter (``adapters/NAME.run``), never inside it,
    so swapping in a new adapter directory cannot delete them."""
    out = Path(out)
    return out.with_name(out.name + ".run")
