"""What one step computes: the summed completion-only token loss (the LM head only on positions with a
target), the token-weighted eval loss, the learning-rate schedule, and the train-loss readout."""

from __future__ import annotations

import math
from typing import Any, Sequence

from hybrid.tuning.batches import MicroBatch, collate, plan_epoch
from hybrid.tuning.config import TuneConfig
from hybrid.tuning.data import Example
from hybrid.tuning.device import Dist, _all_sum, autocast


# ------------------------------------------------------------------------------------------------
# the loss


def _loss_module(model: Any, method: str):
    """An ``nn.Module`` mapping a micro-batch to the summed token loss (what DDP wraps)."""
    import torch
    import torch.nn.functional as F

    from hybrid.tuning.methods import is_peft, uses_virtual_tokens

    class SummedLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            base = model.get_base_model() if is_peft(model) else model
            head = base.get_output_embeddings()
            body = getattr(base, getattr(base, "base_model_prefix", "model"), None)
            plain_head = isinstance(head, torch.nn.Linear) and body is not None and \
                not getattr(base.config, "final_logit_softcapping", None)
            # Fast path: run the decoder body, then the LM head only on positions with a target.
            # Virtual-token methods need peft's own forward (it prepends prompts / past key values).
            self.fast = plain_head and not uses_virtual_tokens(method)
            self._body, self._head = (body, head) if self.fast else (None, None)

        def forward(self, input_ids, position_ids, targets, attention_mask=None):
            sel = targets != -100
            if self.fast:
                hidden = self._body(input_ids=input_ids, position_ids=position_ids,
                                    attention_mask=attention_mask, use_cache=False).last_hidden_state
                logits = self._head(hidden[sel])
                return F.cross_entropy(logits.float(), targets[sel], reduction="sum")
            out = self.model(input_ids=input_ids, attention_mask=attention_mask
                             if attention_mask is not None else torch.ones_like(input_ids), use_cache=False)
            logits = out.logits[:, -input_ids.shape[1]:]  # prompt tuning prepends virtual positions
            return F.cross_entropy(logits[sel].float(), targets[sel], reduction="sum")

    return SummedLoss()


def _to(batch: MicroBatch, device: Any) -> dict[str, Any]:
    kw = {"input_ids": batch.input_ids.to(device), "position_ids": batch.position_ids.to(device),
          "targets": batch.targets.to(device)}
    kw["attention_mask"] = batch.attention_mask.to(device) if batch.attention_mask is not None else None
    return kw


def evaluate(loss_mod: Any, examples: Sequence[Example], cfg: TuneConfig, *, pad_id: int, bf16: bool,
             dist_: Dist | None = None, packed: bool = True) -> float | None:
    """Token-weighted mean loss over ``examples`` (sharded over ranks, summed back)."""
    import torch

    d = dist_ or Dist()
    if not examples:
        return None
    plan = plan_epoch(examples, max_length=cfg.pack_length() if packed else cfg.data.max_length,
                      batch_tokens=cfg.train.batch_tokens, seed=0, epoch=0, packing=packed, shuffle=False)
    was_training = loss_mod.training
    loss_mod.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(bf16, d.device):
        for i, rows in enumerate(plan):
            if i % d.world != d.rank:
                continue
            b = collate(rows, pad_id=pad_id, packed=packed)
            total += float(loss_mod(**_to(b, d.device)))
            count += b.n_targets
    if was_training:
        loss_mod.train()
    total, count = _all_sum([total, float(count)], d)
    return total / count if count else None


def last_epoch_loss(losses: Sequence[float], targets: Sequence[int], steps_per_epoch: int
                    ) -> tuple[float | None, int]:
    """(train loss, steps it covers): the token-weighted mean of the last epoch's worth of steps.

    One epoch of steps sees every training row once, whatever the batch order, so the number does
    not depend on which rows happened to come last (the last few steps alone would). ``targets`` are
    each step's loss-carrying tokens; without them (an older checkpoint) steps weigh the same.
    """
    n = min(len(losses), max(1, steps_per_epoch))
    if n == 0:
        return None, 0
    tail = list(losses[-n:])
    w = list(targets[-n:]) if len(targets) >= n else [1] * n
    total = sum(w)
    if total <= 0:
        return sum(tail) / n, n
    return sum(x * k for x, k in zip(tail, w)) / total, n


def lr_at(step: int, total: int, cfg: Any) -> float:
    """Linear warmup to ``lr``, then cosine / linear decay to ``lr * min_lr_ratio`` (or constant)."""
    warm = cfg.warmup_steps or int(round(cfg.warmup_ratio * total))
    if warm and step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant" or total <= warm:
        return cfg.lr
    frac = min(1.0, (step - warm) / max(1, total - warm))
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1 - frac
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay)
