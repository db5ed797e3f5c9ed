"""Tokenized training windows and their batches: what the reader trains on.

The step between the rows (``hybrid.reader.data``) and the training loop (``hybrid.reader.train``):
``make_features`` windows each context with a stride and marks the answer's tokens,
``length_grouped_batches`` orders them into seeded batches of similar length, ``collate`` pads one batch
into tensors.
"""

from __future__ import annotations

import random
from typing import Sequence

from hybrid.reader.data import QARow


def make_features(tok, rows: Sequence[QARow], max_length: int, stride: int, *,
                  negatives: int | None = None, seed: int = 0) -> list[dict[str, list[int]]]:
    """Tokenized windows with start/end token targets ([CLS] = 0 when the window lacks the answer).

    ``negatives``: keep at most this many answerless windows per question (all windows holding the
    answer are kept). A 4,000-word paper makes ~20 windows per question, of which one holds the
    answer; training on all of them costs 20x and teaches mostly "no answer here". None keeps all."""
    enc = tok([r.question for r in rows], [r.context for r in rows], truncation="only_second",
              max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding=False)
    feats = []
    for f in range(len(enc["input_ids"])):
        row = rows[enc["overflow_to_sample_mapping"][f]]
        seq = enc.sequence_ids(f)
        offs = enc["offset_mapping"][f]
        sp = ep = 0
        if row.start is not None:
            cs, ce = row.start, row.start + len(row.answer)
            ctx = [i for i, s in enumerate(seq) if s == 1]
            if ctx and offs[ctx[0]][0] <= cs and offs[ctx[-1]][1] >= ce:
                sp = next(i for i in ctx if offs[i][1] > cs)
                ep = next(i for i in reversed(ctx) if offs[i][0] < ce)
        feat = {k: list(enc[k][f]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        feat["start_positions"], feat["end_positions"] = sp, ep
        feat["row"] = int(enc["overflow_to_sample_mapping"][f])
        feats.append(feat)
    if negatives is None:
        return feats
    rng = random.Random(seed)
    by_row: dict[int, list[dict]] = {}
    for f in feats:
        by_row.setdefault(f["row"], []).append(f)
    kept = []
    for group in by_row.values():
        pos = [f for f in group if f["start_positions"] or f["end_positions"]]
        neg = [f for f in group if not (f["start_positions"] or f["end_positions"])]
        rng.shuffle(neg)
        # a question whose answer no window holds (unanswerable) keeps at least one no-answer window
        kept += pos + neg[:negatives if pos else max(negatives, 1)]
    return kept


def collate(feats: list[dict], pad_id: int):
    import torch

    n = max(len(f["input_ids"]) for f in feats)
    out = {}
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        if k in feats[0]:
            pad = pad_id if k == "input_ids" else 0
            out[k] = torch.tensor([f[k] + [pad] * (n - len(f[k])) for f in feats])
    out["start_positions"] = torch.tensor([f["start_positions"] for f in feats])
    out["end_positions"] = torch.tensor([f["end_positions"] for f in feats])
    return out


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within pools of 50 batches, shuffle the
    batches. Padding then costs little, and the order is still random and seeded."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    pool = batch_size * 50
    batches = []
    for p in range(0, len(order), pool):
        part = sorted(order[p:p + pool], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    random.Random(seed + 1).shuffle(batches)
    return batches
