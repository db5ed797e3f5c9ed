"""Batch prefill one row at a time: each prompt through the model on its own, without padding,
its keys and values laid out left-padded in one preallocated cache that the batch decodes from.

    cache = row_prefill(model, rows, max_new_tokens)          # rows: token id lists, any lengths
    model.generate(input_ids=padded, attention_mask=mask, cache=cache, ...)   # continues each row

Why not one padded forward: prefill is compute-bound, and a left-padded batch pays for its padding
(8 legal ``rag`` prompts of 579 to 1,248 tokens: 22% of the padded positions were padding) and
attends through an explicit mask, where a lone row runs causal attention with no mask at all.
Decoding still runs all rows at once, from a ``StaticCache`` (transformers' growing cache copies
every layer's keys and values at each step).

The cache holds every prompt token but the last one, at the positions a left-padded batch gives
it (``generate`` feeds the last token and computes positions from the mask, as for padding). A
row's keys are those it has alone: rotary positions count from the row's own first token, as in a
padded batch whose mask skips the padding. Models with sliding-window or mixed attention layers
are not handled here (``supported`` says so): their caches have another layout.

The prompts' common first tokens (the system prompt and the chat template's opening: 131 of the
legal app's ~1,100) are run once per batch, and each row goes on from a copy of their keys and
values, when at least ``MIN_SHARED`` tokens are shared.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["MIN_SHARED", "row_prefill", "shared_prefix", "supported"]

MIN_SHARED = 16  # fewer shared tokens than this are recomputed per row (not worth the copies)


def supported(model: Any, rows: list[list[int]]) -> bool:
    """Whether ``row_prefill`` applies: a decoder-only model with full attention in every layer,
    and every row at least 2 tokens long (the last one is left for ``generate``)."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "layer_types", None):
        return False
    return len(rows) > 1 and all(len(r) >= 2 for r in rows)


def shared_prefix(rows: list[list[int]]) -> int:
    """How many first tokens every row shares, leaving each row at least one token of its own to
    prefill besides its last; 0 below ``MIN_SHARED``."""
    limit = min(len(r) for r in rows) - 2
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n if n >= MIN_SHARED else 0


def row_prefill(model: Any, rows: list[list[int]], max_new_tokens: int, *, bf16_autocast: bool = False) -> Any:
    """A ``StaticCache`` for ``len(rows)`` rows, room for the widest row plus ``max_new_tokens``,
    filled with each row's prompt but its last token. Its dtype is the model's (a bf16 model gives
    a bf16 cache). ``bf16_autocast`` runs the prefill matmuls in bf16 and keeps the cache in the
    model's dtype (fp32 decoding after a bf16 prefill)."""
    import torch
    from transformers import DynamicCache, StaticCache

    config = model.config
    width = max(len(r) for r in rows)
    dtype = next(model.parameters()).dtype
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16_autocast else contextlib.nullcontext()
    per_row: list[list[tuple[Any, Any]]] = []  # row -> layer -> (keys, values), each [1, heads, len - 1, dim]
    n = shared_prefix(rows)
    prefix: list[tuple[Any, Any]] = []  # layer -> the shared tokens' (keys, values), positions 0..n-1
    if n:
        shared = DynamicCache(config=config)
        with amp:
            model(input_ids=torch.tensor([rows[0][:n]], dtype=torch.long), cache=shared, use_cache=True,
                  logits_to_keep=1)
        prefix = [(layer.keys, layer.values) for layer in shared.layers]
    for r in rows:
        cache = DynamicCache(config=config)
        for i, (keys, values) in enumerate(prefix):
            cache.update(keys.clone(), values.clone(), i)
        with amp:
            model(input_ids=torch.tensor([r[n:-1]], dtype=torch.long), cache=cache, use_cache=True, logits_to_keep=1)
        per_row.append([(layer.keys, layer.values) for layer in cache.layers])
    static = StaticCache(config=config, max_cache_len=width + max_new_tokens)
    for i in range(len(per_row[0])):  # layer by layer: the rows' copies are dropped as each is laid out
        k0, v0 = per_row[0][i]
        keys = k0.new_zeros((len(rows), k0.shape[1], width - 1, k0.shape[3]), dtype=dtype)
        values = v0.new_zeros((len(rows), v0.shape[1], width - 1, v0.shape[3]), dtype=dtype)
        for j, r in enumerate(rows):
            k, v = per_row[j][i]
            keys[j, :, width - len(r):width - 1] = k[0]  # the row's columns of the padded batch, but the last
            values[j, :, width - len(r):width - 1] = v[0]
            per_row[j][i] = (None, None)
        static.update(keys, values, i)
    return static
