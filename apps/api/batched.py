"""What batched serving adds to the backend: the app's generator wrapped for batching, and the
torch thread setting applied to request threads.

    gen = batched_generator(app_config, BatchingSettings(batch_max_size=8))   # None when off
    torch_threads()                                                            # HYBRID_TORCH_THREADS here
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("apps.api.backend")  # one logger for the backend's lines

__all__ = ["batched_generator", "shorter_gil_turns", "torch_threads"]


GIL_TURN_S = 0.001


def shorter_gil_turns() -> None:
    """Hand the GIL over every 1 ms instead of Python's 5 ms. With batching, up to a batch's worth of
    request threads prepare prompts at once (chat templates, tokenizers: Python under the GIL), and
    the event loop, which answers 429s and health checks, waits a turn behind each of them."""
    import sys

    if sys.getswitchinterval() > GIL_TURN_S:
        sys.setswitchinterval(GIL_TURN_S)


def torch_threads() -> None:
    """HYBRID_TORCH_THREADS for this worker thread's retrieval too (torch's setting is per thread):
    8 answers retrieving at once with 2-thread teams each oversubscribe a 2-core machine."""
    from hybrid.generation.cpu import env_threads

    n = env_threads()
    if n:
        import torch

        torch.set_num_threads(n)


def batched_generator(cfg: Any, batching: Any) -> Any:
    """The app's generator wrapped in a ``BatchingGenerator`` when batching is on and the app runs
    the in-process transformers backend; None (the assistant makes its own, as before) otherwise."""
    if batching.batch_max_size <= 1:
        return None
    from hybrid.assemble import make_generator
    from hybrid.generation import HFGenerator
    from hybrid.generation.batching import BatchingGenerator

    gen = make_generator(cfg)
    if not isinstance(gen, HFGenerator):
        log.warning("app %s: batched serving needs the transformers backend; %s answers one at a time",
                    cfg.name, type(gen).__name__)
        return gen
    log.info("app %s: batched serving, up to %d answers per batch, %.0f ms gathering window, "
             "%s preparing at once", cfg.name, batching.batch_max_size, batching.batch_window_ms,
             getattr(batching, "batch_prep_concurrency", 0) or "any number")
    return BatchingGenerator(gen, max_batch=batching.batch_max_size, window=batching.batch_window_ms / 1000,
                             max_wait=getattr(batching, "batch_max_wait_ms", 0.0) / 1000,
                             max_prep=getattr(batching, "batch_prep_concurrency", 0))
