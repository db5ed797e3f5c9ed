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


# ------------------------------------------------------------------------------------------------
# run callbacks: observers of a run (experiment tracking, sweeps) without branches in the loop


class RunCallback:
    """What the trainer tells a run's observers (rank 0 only). Every hook is optional.

    ``on_start`` once the plan is known, ``on_log`` with every step's row (and each eval row),
    ``on_card`` before the adapter is written (an observer may add to ``card.extra``), then ``on_end``
    after it is written, or ``on_fail`` when the run stops on an exception (a pruned sweep trial too).
    """

    def on_start(self, info: dict[str, Any]) -> None:
        pass

    def on_log(self, row: dict[str, Any]) -> None:
        pass

    def on_card(self, card: Any) -> None:
        pass

    def on_end(self, card: Any, out: Path | None, status: str) -> None:
        pass

    def on_fail(self, exc: BaseException) -> None:
        pass


class Callbacks(RunCallback):
    """Fans every hook out to several callbacks, in order."""

    def __init__(self, items: list[RunCallback] | tuple[RunCallback, ...] = ()) -> None:
        self.items = [c for c in items if c is not None]

    def on_start(self, info: dict[str, Any]) -> None:
        for c in self.items:
            c.on_start(info)

    def on_log(self, row: dict[str, Any]) -> None:
        for c in self.items:
            c.on_log(row)

    def on_card(self, card: Any) -> None:
        for c in self.items:
            c.on_card(card)

    def on_end(self, card: Any, out: Path | None, status: str) -> None:
        for c in self.items:
            c.on_end(card, out, status)

    def on_fail(self, exc: BaseException) -> None:
        for c in self.items:
            c.on_fail(exc)


def default_callbacks(cfg: TuneConfig, main: bool) -> list[RunCallback]:
    """The observers every run gets from its config: today the MLflow tracker, when tracking is on."""
    if not main:
        return []
    from hybrid.tuning.tracking import tracker_for

    tracker = tracker_for(cfg)
    return [tracker] if tracker is not None else []
