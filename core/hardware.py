"""Hardware probes every layer may ask: the one place that decides whether bf16 is fast here.

Callers keep their own policy on top (an explicit ``bf16=`` argument, ``precision="fp32"``, batches
only); this module only answers what the hardware does. No torch import unless asked about CUDA.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_BF16_CPU_FLAGS = re.compile(r"\b(amx_bf16|avx512_bf16)\b")


def bf16_fast(device: Any = "cpu") -> bool:
    """True when ``device`` multiplies bf16 natively, so bf16 is worth using there.

    CPU (the default): AMX or AVX-512 BF16 in ``/proc/cpuinfo`` (bf16 is then ~3x faster);
    ``HYBRID_BF16=0|1`` forces the answer. CUDA (a ``torch.device`` or ``"cuda"``):
    ``torch.cuda.is_bf16_supported()``; the variable does not apply there.
    """
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    forced = os.environ.get("HYBRID_BF16")
    if forced is not None:
        return forced.strip() not in ("0", "false", "no", "")
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return bool(_BF16_CPU_FLAGS.search(flags))
