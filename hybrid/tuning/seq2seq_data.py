"""Examples split for an encoder-decoder: the rendered prompt becomes the encoder input (with the
tokenizer's special tokens, exactly as inference encodes it), the last answer plus EOS the labels; and
the micro-batches built from them. Used by ``hybrid.tuning.seq2seq``, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from core.errors import InputError
from hybrid.tuning.batches import MicroBatch
from hybrid.tuning.data import IGNORE_INDEX, Example


@dataclass
class Pair(Example):
    """An ``Example`` split for an encoder-decoder: ``input_ids[:enc_len]`` feed the encoder, the rest
    are the labels (``loss_mask`` marks them), so length planning and target counts work unchanged."""

    enc_len: int = 0

    @property
    def encoder_ids(self) -> list[int]:
        return self.input_ids[:self.enc_len]

    @property
    def label_ids(self) -> list[int]:
        return self.input_ids[self.enc_len:]


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prefix, suffix) ids that ``hybrid.chat.encode_rendered`` adds around a rendered prompt.

    Tokenizers with a chat template get none (the template writes its own markers); otherwise the
    tokenizer's usual special tokens, found by encoding one word with and without them (T5: suffix
    ``</s>``; BART: ``<s>`` ... ``</s>``).
    """
    if getattr(tokenizer, "chat_template", None):
        return [], []
    bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    return [], []


def to_pair(ex: Example, prefix: Sequence[int], suffix: Sequence[int], eos: int | None) -> Pair | None:
    """Split ``ex`` at its last answer span; None when no token before it is a prompt token."""
    mask = ex.loss_mask
    last = next((i for i in range(len(mask) - 1, -1, -1) if mask[i]), None)
    if last is None:
        return None
    first = last
    while first > 0 and mask[first - 1]:
        first -= 1
    if first == 0:
        return None
    enc = [*prefix, *ex.input_ids[:first], *suffix]
    labels = list(ex.input_ids[first:last + 1])
    if eos is not None and eos not in labels[-2:]:  # the answer must teach the decoder where to stop
        labels.append(eos)
    return Pair(enc + labels, [False] * len(enc) + [True] * len(labels), ex.source, ex.line, enc_len=len(enc))


def to_pairs(examples: Sequence[Example], tokenizer: Any, what: str = "training") -> list[Pair]:
    """Every example as a ``Pair``; examples without a prompt (plain-text rows) are one clear error."""
    prefix, suffix = special_tokens_around(tokenizer)
    pairs = [to_pair(ex, prefix, suffix, tokenizer.eos_token_id) for ex in examples]
    bad = [ex for ex, p in zip(examples, pairs) if p is None]
    if bad:
        lines = ", ".join(str(ex.line) for ex in bad[:5])
        raise InputError(f"{len(bad)} of {len(examples)} {what} rows have no prompt (plain-text rows, e.g. line(s) "
                         f"{lines}): an encoder-decoder model needs a prompt for its encoder and an answer for "
                         "its decoder; drop them or write them as question/answer rows")
    return [p for p in pairs if p is not None]


def collate_pairs(rows: Sequence[Sequence[Pair]], *, pad_id: int, pad_to_multiple: int = 8) -> MicroBatch:
    """One micro-batch: encoder ids and mask (right-padded), labels (padded with -100).

    ``targets`` hold the labels unshifted (the model derives the decoder input from them);
    ``position_ids`` are plain positions, kept for the ``MicroBatch`` shape (relative-position T5 and
    learned-position BART both compute their own).
    """
    import torch

    pairs = [row[0] for row in rows]  # never packed: one pair per row
    width = -(-max(p.enc_len for p in pairs) // pad_to_multiple) * pad_to_multiple
    tlen = max(len(p.label_ids) for p in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(pairs), width), dtype=torch.long)
    tgt = torch.full((len(pairs), tlen), IGNORE_INDEX, dtype=torch.long)
    for r, p in enumerate(pairs):
        ids[r, :p.enc_len] = torch.tensor(p.encoder_ids, dtype=torch.long)
        att[r, :p.enc_len] = 1
        tgt[r, :len(p.label_ids)] = torch.tensor(p.label_ids, dtype=torch.long)
    pos = torch.arange(width).expand(len(pairs), width)
    n_targets = int((tgt != IGNORE_INDEX).sum())
    return MicroBatch(ids, pos, tgt, att, sum(len(p) for p in pairs), n_targets, len(pairs) * (width + tlen))
