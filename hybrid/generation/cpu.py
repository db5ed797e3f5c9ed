"""CPU-specific generation helpers: the torch thread setting and the bf16 prefill for batches.

    check_threads(1); env_threads()          # HYBRID_TORCH_THREADS, validated (None when unset)
    cache = bf16_prefill(model, input_ids, mask, max_new_tokens)   # generate(..., cache=cache)
"""

from __future__ import annotations

import os
from typing import Any

from core.errors import InputError

__all__ = ["THREADS_ENV", "check_threads", "env_threads", "use_threads", "bf16_prefill"]

THREADS_ENV = "HYBRID_TORCH_THREADS"


def check_threads(n: Any, where: str = "threads") -> int:
    """``n`` if it is a positive integer, else a one-line ``InputError`` naming ``where``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{where} must be a positive integer, got {n!r}")
    return n


def env_threads() -> int | None:
    """``HYBRID_TORCH_THREADS``: torch threads for generation in any command (unset = torch's default)."""
    v = os.environ.get(THREADS_ENV, "").strip()
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        n = v  # type: ignore[assignment]
    return check_threads(n, THREADS_ENV)


def use_threads(gen: Any, n: int) -> None:
    """``n`` torch threads in this thread (embedding, and generation when it runs here), and on the
    generator, which sets them again in whichever thread generates."""
    import torch

    torch.set_num_threads(check_threads(n))
    if hasattr(gen, "threads"):
        gen.threads = n


def bf16_prefill(model: Any, input_ids: Any, mask: Any, max_new_tokens: int) -> Any:
    """The prompt's KV cache (all but its last token), computed under bf16 autocast, in fp32,
    preallocated for the whole generation. One padded forward for the whole batch: batches now
    prefill row by row (``hybrid.generation.prefill``); this is left for the models that path does
    not take (sliding-window or mixed attention) and for ``HFGenerator.row_prefill = False``.

    Profiled on this AMX CPU (1 thread, busy machine, each variant twice). 8 rows of 800 prompt
    tokens, 32 new: whole-batch autocast 46 s, fp32 42 s, this split 32 / 19 s. bf16 pays off in
    the prefill's large matmuls; in decoding, autocast re-casts every weight at every step for one
    token per row, so the steps run in fp32 (greedy tokens then follow fp32's closely). 8 rows of
    1,200 tokens, 32 new: decoding from the default growing cache took 517 / 552 ms a step, from
    this preallocated one 275 / 367 ms, because the default cache copies every layer's keys and
    values with ``torch.cat`` at each step. ``generate`` continues from the cache with the
    prompt's last token; positions follow the left padding, as it computes them.
    """
    import torch
    from transformers import DynamicCache, StaticCache

    config = model.config
    cache = DynamicCache(config=config)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=input_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
              cache=cache, use_cache=True, logits_to_keep=1)
    if getattr(config, "sliding_window", None) or getattr(config, "layer_types", None):
        for layer in cache.layers:  # mixed or windowed attention: keep transformers' own layout
            layer.keys, layer.values = layer.keys.float(), layer.values.float()
        return cache
    static = StaticCache(config=config, max_cache_len=input_ids.shape[1] + max_new_tokens)
    for i, layer in enumerate(cache.layers):
        static.update(layer.keys.float(), layer.values.float(), i)
    return static
