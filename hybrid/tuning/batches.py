"""Padding-free batching: pack examples into rows with per-example positions, or bucket by length.

Packing puts several examples into one row and restarts ``position_ids`` at 0 for each. Given
``position_ids`` and no 2D attention mask, ``transformers`` (>= 4.56: ``find_packed_sequence_indices``)
builds a block-diagonal causal mask for eager/SDPA/flex attention, and flash-attention uses the same
positions for its varlen kernel, so no example attends to another (``tests/tuning`` checks that a packed
forward equals separate forwards). Rows are at most ``max_length`` long, so attention stays cheap.

Targets are shifted here, per example: position ``i`` predicts token ``i+1`` of the same example, and the
last token of an example predicts nothing. That is what keeps the loss from crossing example borders::

    plan = plan_epoch(examples, max_length=512, batch_tokens=2048, seed=0, epoch=0)
    batch = collate(plan[0], pad_id=0)   # MicroBatch(input_ids, position_ids, targets, ...)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from hybrid.tuning.data import IGNORE_INDEX, Example


@dataclass
class MicroBatch:
    """Tensors for one forward pass. ``targets`` are already shifted (-100 = no loss)."""

    input_ids: Any  # (B, L) long
    position_ids: Any  # (B, L) long
    targets: Any  # (B, L) long
    attention_mask: Any | None  # (B, L) long when padded batching, None when packed
    n_tokens: int  # real (non-padding) tokens
    n_targets: int  # tokens that carry a loss
    n_padded: int  # B * L


def _shifted_targets(ex: Example) -> list[int]:
    ids, mask = ex.input_ids, ex.loss_mask
    return [ids[i + 1] if mask[i + 1] else IGNORE_INDEX for i in range(len(ids) - 1)] + [IGNORE_INDEX]


def pack_rows(examples: Sequence[Example], max_length: int, *, window: int = 512) -> list[list[Example]]:
    """First-fit-decreasing into rows of <= ``max_length`` tokens, within windows of the given order.

    Windows keep the caller's (shuffled) order coarse-grained random while packing tightly inside
    each window: rows end up ~98% full on chat-sized examples.
    """
    rows: list[list[Example]] = []
    for w in range(0, len(examples), window):
        chunk = sorted(examples[w:w + window], key=len, reverse=True)
        bins: list[list[Example]] = []
        room: list[int] = []
        for ex in chunk:
            n = min(len(ex), max_length)
            for i, r in enumerate(room):
                if n <= r:
                    bins[i].append(ex)
                    room[i] -= n
                    break
            else:
                bins.append([ex])
                room.append(max_length - n)
        rows.extend(bins)
    return rows


def plan_epoch(examples: Sequence[Example], *, max_length: int, batch_tokens: int, seed: int, epoch: int,
               packing: bool = True, shuffle: bool = True) -> list[list[list[Example]]]:
    """The micro-batches of one epoch, each a list of rows, each row a list of examples.

    Deterministic in (seed, epoch): resuming recomputes the same plan and skips what was done.
    Without packing, each row holds one example and rows of similar length share a micro-batch. Either
    way the micro-batch order is shuffled (seeded), so row length does not follow the schedule.
    """
    order = list(examples)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    if packing:
        rows = pack_rows(order, max_length)
        if shuffle:
            # Packing sorts each window longest-first, so without this the epoch would run all long rows
            # (e.g. RAFT) first and all short ones last, at the low end of the learning-rate schedule.
            # Rows, not micro-batches, are shuffled: the row sequence then does not depend on how many
            # rows a micro-batch holds, so grad_accum=2 x 2 rows trains exactly like 1 x 4 rows.
            random.Random(f"{seed}:{epoch}:rows").shuffle(rows)
        rows_per_batch = max(1, batch_tokens // max_length)
        batches = [rows[i:i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]
    else:
        # Length bucketing: sort windows by length so a micro-batch pads little, then shuffle batches.
        batches = []
        window = 64
        for w in range(0, len(order), window):
            chunk = sorted(order[w:w + window], key=len)
            cur: list[list[Example]] = []
            longest = 0
            for ex in chunk:
                n = min(len(ex), max_length)
                if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
                    batches.append(cur)
                    cur, longest = [], 0
                cur.append([ex])
                longest = max(longest, n)
            if cur:
                batches.append(cur)
        if shuffle:
            random.Random(f"{seed}:{epoch}:batches").shuffle(batches)
    return batches


def collate(rows: Sequence[Sequence[Example]], *, pad_id: int, packed: bool = True,
            pad_to_multiple: int = 8) -> MicroBatch:
    """Build tensors for one micro-batch. Padding (only at row ends) never carries a loss."""
    import torch

    width = max(sum(len(e) for e in row) for row in rows)
    width = -(-width // pad_to_multiple) * pad_to_multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    tgt = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    n_tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex)
            ids[r, at:at + n] = torch.tensor(ex.input_ids, dtype=torch.long)
            pos[r, at:at + n] = torch.arange(n)
            tgt[r, at:at + n] = torch.tensor(_shifted_targets(ex), dtype=torch.long)
            att[r, at:at + n] = 1
            at += n
        # Padding continues counting positions from 0 as its own pseudo-sequence, so under packing it
        # is its own attention block and never visible to the real examples before it.
        if at < width:
            pos[r, at:] = torch.arange(width - at)
        n_tokens += at
    n_targets = int((tgt != IGNORE_INDEX).sum())
    return MicroBatch(ids, pos, tgt, None if packed else att, n_tokens, n_targets, len(rows) * width)
