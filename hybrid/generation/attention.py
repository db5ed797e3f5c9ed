"""Attention for batched generation on CPU, in the model's own dtype, registered with transformers.

    from hybrid.generation.attention import use_blocked_attention
    use_blocked_attention(bf16_model)        # its layers now attend through ``blocked_attention``

Why: on CPU, PyTorch's fused attention (``scaled_dot_product_attention``'s flash kernel) is slow in
the two shapes a batch of answers spends its time in. Measured with SmolLM2-135M in bf16, 1 thread
(9 query heads sharing 3 key/value heads):

- prefill, one 1,200-token prompt, causal, no mask: 26.5 ms per layer, 55% of the prefill, while
  the model's matrix products run at ~460 GFLOP/s; the same attention as blocked matrix products
  takes ~10-16 ms;
- decoding, 8 rows over a 1,280-slot static cache with a mask: 1.6 ms per layer and step, 62% of a
  decoding step; as grouped matrix products 0.74 ms, near the time it takes to read the cache.

``blocked_attention`` computes the same softmax(q k^T * scale + mask) v with plain matrix products:
queries in blocks of ``BLOCK`` (each block's scores fit in cache; a causal block reads only the keys
up to its last query), the query heads that share a key/value head grouped into one product, so the
keys are never repeated. Results match the fused kernel to bf16 rounding. Anything it does not
handle (a padded prefill with a mask, dropout, soft-capping, sliding windows, non-CPU tensors) goes
to transformers' own ``sdpa`` function unchanged.

Only the bf16 weight copy that batches decode with takes this (``HFGenerator._bf16_model``): single
answers and every model a user loads keep transformers' defaults.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NAME", "BLOCK", "blocked_attention", "use_blocked_attention"]

NAME = "hybrid_blocked"
BLOCK = 192  # queries per block in a causal prefill (64-256 measured within noise of each other)


def _sdpa(*args: Any, **kwargs: Any) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


def blocked_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function signature: query [B, H, q, D], key/value [B, KV, k, D], the
    mask boolean [B, 1, q, k] (True: attend) or None. Returns ([B, q, H, D], None)."""
    import torch

    b, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True)) and q_len > 1
    usable = True
    if attention_mask is not None:
        causal = False  # the mask says what each query sees; a row that sees nothing goes to sdpa
        usable = attention_mask.dtype == torch.bool and bool(attention_mask.any(-1).all())
    if (dropout or kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None
            or kwargs.get("position_bias") is not None or query.device.type != "cpu" or not usable
            or heads % kv_heads or key.shape[0] != b):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     is_causal=is_causal, **kwargs)
    if causal and key.shape[2] > q_len:  # as sdpa: a prefill into an empty static cache; the rest is empty
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    k_len = key.shape[2]
    group = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    q = (query * scale).view(b, kv_heads, group, q_len, dim)
    keys_t = key.transpose(-1, -2)
    out = query.new_empty((b, kv_heads, group, q_len, dim))
    step = BLOCK if q_len > 1 else 1
    for s in range(0, q_len, step):
        e = min(q_len, s + step)
        n = e - s
        seen = e if causal else k_len  # a causal block reads only the keys up to its last query
        if attention_mask is not None:  # and a masked one up to the last key any of its queries sees
            seen = int(attention_mask[:, :, s:e, :].reshape(-1, k_len).any(0).nonzero()[-1]) + 1
        scores = torch.matmul(q[:, :, :, s:e].reshape(b, kv_heads, group * n, dim), keys_t[..., :seen])
        scores = scores.view(b, kv_heads, group, n, seen)
        if causal:  # the block's own corner: query s + i sees keys up to s + i
            corner = torch.ones(n, n, dtype=torch.bool, device=query.device).triu(1)
            scores[..., s:e].masked_fill_(corner, float("-inf"))
        elif attention_mask is not None:  # [B or 1, 1, q, k] -> [B or 1, 1, 1, n, k]
            scores.masked_fill_(~attention_mask[:, :, s:e, :seen].unsqueeze(1), float("-inf"))
        probs = torch.softmax(scores, dim=-1).view(b, kv_heads, group * n, seen)
        out[:, :, :, s:e] = torch.matmul(probs, value[:, :, :seen]).view(b, kv_heads, group, n, dim)
    return out.view(b, heads, q_len, dim).transpose(1, 2).contiguous(), None


def use_blocked_attention(model: Any) -> Any:
    """Register ``blocked_attention`` with transformers (once) and switch ``model`` to it. Returns
    the model. A model whose attention cannot be switched keeps its own (transformers warns)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, blocked_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same boolean masks sdpa gets
    model.set_attn_implementation(NAME)
    return model
