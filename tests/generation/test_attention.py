"""``blocked_attention``: the batch path's CPU attention equals PyTorch's fused attention.

Random tensors in fp32 (agreement to float rounding), in the three shapes batches use (a causal
prefill, a prefill continuing from shared keys under a mask, a decoding step over a left-padded
cache), plus the cases it hands back to transformers' sdpa function. Then a tiny random Llama
switched to it must give the logits it gave before.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybrid.generation import attention
from hybrid.generation.attention import blocked_attention, use_blocked_attention


class Layer:  # what transformers passes as ``module``
    is_causal = True
    num_key_value_groups = 3


def qkv(b=2, heads=9, kv=3, q_len=300, k_len=300, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, heads, q_len, dim, generator=g), torch.randn(b, kv, k_len, dim, generator=g),
            torch.randn(b, kv, k_len, dim, generator=g))


def fused(q, k, v, mask=None, causal=False):
    rep = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                         attn_mask=mask, is_causal=causal)
    return out.transpose(1, 2)


@pytest.mark.parametrize("q_len", [1, 7, 191, 192, 193, 450])  # around the block size
def test_a_causal_prefill_matches_the_fused_kernel(q_len, monkeypatch):
    monkeypatch.setattr(attention, "BLOCK", 192)
    q, k, v = qkv(q_len=q_len, k_len=q_len)
    out, weights = blocked_attention(Layer(), q, k, v, None)
    assert weights is None and out.shape == (2, q_len, 9, 16)
    assert torch.allclose(out, fused(q, k, v, causal=q_len > 1), atol=1e-5)


def test_a_prefill_after_shared_keys_follows_its_mask():
    q, k, v = qkv(q_len=300, k_len=300)
    q = q[:, :, 120:]  # the last 180 queries, seeing the 120 shared keys and their own causal part
    mask = torch.ones(180, 300, dtype=torch.bool).tril(120)[None, None].expand(2, 1, 180, 300)
    out, _ = blocked_attention(Layer(), q, k, v, mask)
    assert torch.allclose(out, fused(q, k, v, mask), atol=1e-5)
    # the mask matters: without it every query would see all 300 keys
    assert not torch.allclose(out, fused(q, k, v), atol=1e-3)


def test_a_decoding_step_over_a_left_padded_cache_follows_its_mask():
    q, k, v = qkv(q_len=1, k_len=64)
    mask = torch.ones(2, 1, 1, 64, dtype=torch.bool)
    mask[0, ..., :20] = False  # row 0's padding
    mask[..., 50:] = False     # the static cache's empty slots
    out, _ = blocked_attention(Layer(), q, k, v, mask)
    assert torch.allclose(out, fused(q, k, v, mask), atol=1e-5)


def test_what_it_does_not_handle_goes_to_sdpa(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(attention, "_sdpa", lambda *a, **kw: calls.append("sdpa") or ("sdpa", None))
    q, k, v = qkv(q_len=8, k_len=8)
    padded = torch.ones(2, 1, 8, 8, dtype=torch.bool).tril()
    padded[1, :, 0] = False  # a padded prefill: row 1's first query sees nothing
    assert blocked_attention(Layer(), q, k, v, padded)[0] == "sdpa"
    assert blocked_attention(Layer(), q, k, v, torch.zeros(2, 1, 8, 8))[0] == "sdpa"  # an additive float mask
    assert blocked_attention(Layer(), q, k, v, None, dropout=0.1)[0] == "sdpa"
    assert blocked_attention(Layer(), q, k, v, None, sliding_window=4)[0] == "sdpa"
    assert calls == ["sdpa"] * 4
    # and what it handles never reaches sdpa
    assert blocked_attention(Layer(), q, k, v, None)[0].shape == (2, 8, 9, 16) and len(calls) == 4


def test_the_real_fallback_of_a_fully_masked_row_has_no_nan():
    q, k, v = qkv(q_len=8, k_len=8)
    padded = torch.ones(2, 1, 8, 8, dtype=torch.bool).tril()
    padded[1, :, :3] = False
    out, _ = blocked_attention(Layer(), q, k, v, padded)
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1, 3:]).all()


def test_a_model_switched_to_it_gives_the_same_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.arange(3, 60).view(1, -1)
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        use_blocked_attention(model)
        assert model.config._attn_implementation == attention.NAME
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-4)
