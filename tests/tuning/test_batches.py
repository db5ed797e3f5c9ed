"""Packing: no example sees another, targets never cross example borders, nothing lost or duplicated."""

from __future__ import annotations

import torch

from hybrid.tuning.batches import collate, pack_rows, plan_epoch
from hybrid.tuning.data import IGNORE_INDEX, Example


def _ex(n: int, start: int = 5, prompt: int = 2, source: str = "s") -> Example:
    return Example(list(range(start, start + n)), [False] * prompt + [True] * (n - prompt), source=source)


def test_pack_rows_fit_and_keep_every_example_once():
    exs = [_ex(n, start=i * 100) for i, n in enumerate([30, 50, 10, 64, 5, 33, 20, 60, 8, 1 + 1])]
    rows = pack_rows(exs, 64)
    assert all(sum(len(e) for e in row) <= 64 for row in rows)
    packed = sorted(id(e) for row in rows for e in row)
    assert packed == sorted(id(e) for e in exs)
    assert len(rows) < len(exs)  # it actually packs


def test_plan_is_deterministic_per_seed_and_epoch():
    exs = [_ex(5 + i % 17, start=i) for i in range(200)]
    a = plan_epoch(exs, max_length=64, batch_tokens=256, seed=3, epoch=1)
    b = plan_epoch(exs, max_length=64, batch_tokens=256, seed=3, epoch=1)
    c = plan_epoch(exs, max_length=64, batch_tokens=256, seed=3, epoch=2)
    flat = lambda p: [e.input_ids[0] for mb in p for row in mb for e in row]  # noqa: E731
    assert flat(a) == flat(b) and flat(a) != flat(c)
    assert sorted(flat(a)) == sorted(e.input_ids[0] for e in exs)


def test_shifted_targets_stay_inside_each_example():
    a, b = _ex(6, start=10, prompt=2), _ex(5, start=50, prompt=3)
    mb = collate([[a, b]], pad_id=0, pad_to_multiple=16)
    tgt = mb.targets[0].tolist()
    # a: positions 0..5 predict tokens 1..5; the prompt token at index 1 is not a target
    assert tgt[:6] == [IGNORE_INDEX, 12, 13, 14, 15, IGNORE_INDEX]
    # b starts at 6; its first answer token is index 3 -> predicted from position 2
    assert tgt[6:11] == [IGNORE_INDEX, IGNORE_INDEX, 53, 54, IGNORE_INDEX]
    assert tgt[11:] == [IGNORE_INDEX] * 5  # padding
    assert mb.position_ids[0].tolist()[:11] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    assert mb.n_tokens == 11 and mb.n_targets == 6 and mb.attention_mask is None


def test_packed_forward_equals_separate_forwards(tiny_model):
    """The block-diagonal mask from per-example positions: packed logits == one-by-one logits.

    ``use_cache=False`` as in training: with a KV cache transformers does not look for packed positions.
    """
    torch.manual_seed(0)
    exs = [Example(torch.randint(10, 40000, (n,)).tolist(), [True] * n) for n in (7, 12, 5)]
    mb = collate([exs], pad_id=0)
    tiny_model.eval()
    with torch.no_grad():
        packed = tiny_model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False).logits[0]
        at = 0
        for e in exs:
            alone = tiny_model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[at:at + len(e)], alone, rtol=1e-4, atol=1e-4)
            at += len(e)
        # and the check can fail: without the reset positions the second example sees the first
        leaky = tiny_model(input_ids=mb.input_ids, use_cache=False).logits[0]
        assert not torch.allclose(leaky[7:19], packed[7:19], atol=1e-3)


def test_padded_batching_buckets_by_length():
    exs = [_ex(n, start=i) for i, n in enumerate([10, 60, 12, 58, 11, 61, 9, 59])]
    plan = plan_epoch(exs, max_length=64, batch_tokens=128, seed=0, epoch=0, packing=False)
    for mb in plan:
        lens = [len(r[0]) for r in mb]
        assert max(lens) - min(lens) <= 4  # short rows never wait on long ones
        assert max(lens) * len(lens) <= 128
    mb = collate(plan[0], pad_id=0, packed=False)
    assert mb.attention_mask is not None and int(mb.attention_mask.sum()) == mb.n_tokens


def test_training_loss_of_a_packed_batch_equals_the_sum_of_separate_losses(tiny_model):
    from hybrid.tuning.trainer import _loss_module

    torch.manual_seed(1)
    exs = [Example(torch.randint(10, 40000, (n,)).tolist(), [False] * 3 + [True] * (n - 3)) for n in (9, 14, 6)]
    loss = _loss_module(tiny_model, "full").eval()

    def run(rows):
        mb = collate(rows, pad_id=0)
        with torch.no_grad():
            return float(loss(mb.input_ids, mb.position_ids, mb.targets, None))

    torch.testing.assert_close(run([exs]), sum(run([[e]]) for e in exs), rtol=1e-5, atol=1e-5)


def test_packed_batch_order_does_not_follow_row_length():
    """Packing sorts windows longest-first; the shuffled micro-batch order must not keep that sort."""
    exs = [_ex(60 if i % 2 else 30, start=i) for i in range(400)]  # long (RAFT-like) and short rows
    plan = plan_epoch(exs, max_length=64, batch_tokens=64, seed=0, epoch=0)
    longest = [max(len(e) for row in mb for e in row) for mb in plan]  # 200 long rows, 100 of two short
    half = len(longest) // 2
    first, last = longest[:half], longest[half:]
    # unshuffled, the first half would be all long rows and the second two thirds short ones
    assert sum(n < 60 for n in first) > 0.2 * len(first)
    assert sum(n >= 60 for n in last) > 0.5 * len(last)
    again = plan_epoch(exs, max_length=64, batch_tokens=64, seed=0, epoch=0)
    assert [[[e.input_ids[0] for e in r] for r in mb] for mb in plan] == \
        [[[e.input_ids[0] for e in r] for r in mb] for mb in again]  # deterministic: resume still works
    other = plan_epoch(exs, max_length=64, batch_tokens=64, seed=0, epoch=1)
    assert [mb[0][0].input_ids[0] for mb in other] != [mb[0][0].input_ids[0] for mb in plan]
