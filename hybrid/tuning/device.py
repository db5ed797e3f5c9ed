"""Where and how a tuning run computes: the process group ``torchrun``/``accelerate launch`` describe
(a no-op ``Dist`` in a single process), a sum across ranks, and bf16 autocast where the hardware has it."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("hybrid.tuning.trainer")  # the name run logs have always carried


# ------------------------------------------------------------------------------------------------
# distributed helpers (a no-op in a single process)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the process group that ``torchrun``/``accelerate launch`` describe in the environment."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if world <= 1:
        return Dist(device=device)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=device)


def _all_sum(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


# ------------------------------------------------------------------------------------------------
# precision


def use_bf16(precision: str, device: Any) -> bool:
    """bf16 autocast where the hardware multiplies bf16 natively; fp32 elsewhere."""
    from core.hardware import bf16_fast

    if precision == "fp32":
        return False
    ok = bf16_fast(device)
    if precision == "bf16" and not ok:
        log.warning("precision=bf16 requested but this device has no fast bf16; it will be slow")
        return True
    return ok


def autocast(enabled: bool, device: Any):
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=getattr(device, "type", "cpu"), dtype=torch.bfloat16)
