"""``train_reader``: tune an extractive reader on question/context/answer rows.

::

    from hybrid.reader.train import train_reader
    result = train_reader(["policyqa-train.json"], "runs/reader", epochs=2)
    result.card["eval_after"], result.card["threshold"]      # {'em': .., 'f1': ..}, 0.05

Accepted data (several files may be mixed):

- SQuAD v1/v2 JSON: ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
  "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``; a question without answers (v2
  ``is_impossible``) is kept as a no-answer row whose target is the [CLS] token;
- JSONL rows ``{"question", "context", "answer"}`` with optional ``answer_start``, ``title``, ``id``,
  ``is_impossible``; without ``answer_start`` the answer is looked up in the context.

A bad row is a counted skip, reported by ``file:line`` (JSONL) or ``file#id`` (SQuAD) with its reason.
Contexts longer than ``max_length`` are windowed with ``stride`` (standard SQuAD preprocessing: a window
that does not hold the whole answer is trained to point at [CLS]).

The eval split is by title (or context when there is none), never by question, so no context is seen in
both splits. After training, a logistic calibration maps (best-span score - no-answer score) to
P(token F1 >= 0.5) on the eval split, and the abstain threshold is chosen there when the data has
unanswerable questions (maximising F1 on answerable + correct abstentions on unanswerable).

Checkpoints: after each epoch the model weights (safetensors) and a JSON state go to
``out/checkpoints/epoch-N/``. ``resume=True`` continues after the newest finished epoch with the same
learning-rate schedule; the optimizer's moment estimates are not saved (no pickle), so AdamW restarts
from zero moments at the resumed epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from core.errors import InputError
from core.hardware import bf16_fast
from core.io import atomic_write_bytes, atomic_write_text
from hybrid.reader.model import CARD, Reader, default_base, load_qa_model
# The steps, in the order train_reader runs them; re-exported here, where callers and tests import them.
from hybrid.reader.data import DataReport, QARow, load_qa, split_rows  # noqa: F401
from hybrid.reader.features import collate, length_grouped_batches, make_features
from hybrid.reader.calibrate import (  # noqa: F401
    F1_OK, MAX_ANSWER_TOKENS, calibrate, choose_threshold, evaluate, fit_calibration)

log = logging.getLogger(__name__)


# -- training ------------------------------------------------------------------------------------

@dataclass
class ReaderTrainResult:
    out: Path
    card: dict[str, Any]
    report: DataReport


def _hash_files(paths: Iterable[Path]) -> list[dict[str, str]]:
    out = []
    for p in paths:
        h = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        out.append({"path": str(Path(p).resolve()), "sha256": h})
    return out


def _latest_checkpoint(ckdir: Path) -> tuple[Path, dict] | None:
    best = None
    for d in sorted(ckdir.glob("epoch-*")) if ckdir.is_dir() else []:
        state = d / "state.json"
        if state.is_file() and (d / "model.safetensors").is_file():
            s = json.loads(state.read_text(encoding="utf-8"))
            if best is None or s["epoch"] > best[1]["epoch"]:
                best = (d, s)
    return best


def train_reader(data_paths: str | Path | Sequence[str | Path], out_dir: str | Path, base: str | Path | None = None,
                 epochs: int = 4, lr: float = 2e-4, batch_size: int = 16, max_length: int = 256, stride: int = 96,
                 seed: int = 0, eval_fraction: float = 0.1, progress: bool = True, resume: bool = False,
                 max_answer_tokens: int = MAX_ANSWER_TOKENS, negatives: int | None = 1,
                 bf16: bool | None = None) -> ReaderTrainResult:
    """Tune a reader and write it to ``out_dir`` (weights, config, tokenizer, ``reader_card.json``)."""
    t_start = time.perf_counter()
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise InputError(f"lr must be > 0, got {lr}")
    if max_length < 32:
        raise InputError(f"max_length must be >= 32, got {max_length}")
    if not 0 <= stride < max_length // 2:
        raise InputError(f"stride must be in [0, max_length/2), got {stride} with max_length {max_length}")
    paths = [Path(data_paths)] if isinstance(data_paths, (str, Path)) else [Path(p) for p in data_paths]
    rows, report = load_qa(paths)
    train_rows, eval_rows = split_rows(rows, eval_fraction, seed)
    data = _hash_files(paths)
    data_hash = hashlib.sha256("".join(d["sha256"] for d in data).encode()).hexdigest()[:16]
    base_path = Path(base).expanduser() if base else default_base()
    if not base_path.is_dir():
        raise InputError(f"base encoder not found: {base_path} is not a directory")

    import torch
    from safetensors.torch import load_file, save
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    out = Path(out_dir).expanduser()
    ckdir = out / "checkpoints"
    torch.manual_seed(seed)
    model, tok = load_qa_model(base_path, InputError, what="a base encoder")

    reader = Reader.from_model(model, tok, max_length=max_length, stride=stride)
    feats = make_features(tok, train_rows, max_length, stride, negatives=negatives, seed=seed)
    steps_per_epoch = math.ceil(len(feats) / batch_size)
    total = steps_per_epoch * epochs
    start_epoch, step, before = 0, 0, None
    if resume:
        found = _latest_checkpoint(ckdir)
        if found is not None:
            d, state = found
            if state.get("data_hash") != data_hash:
                raise InputError(f"checkpoint {d} was trained on other data (hash {state.get('data_hash')} != "
                                 f"{data_hash}); drop --resume or use another --out")
            model.load_state_dict(load_file(str(d / "model.safetensors")))
            start_epoch, step, before = int(state["epoch"]), int(state["step"]), state.get("eval_before")
            log.info("resuming after epoch %d (step %d) from %s", start_epoch, step, d)
    model.eval()
    if before is None:
        before = {k: v for k, v in evaluate(reader, eval_rows, max_answer_tokens).items()
                  if k in ("em", "f1")} if eval_rows else None

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * total), total)
    for _ in range(step):
        sched.step()  # the schedule resumes where it was; AdamW moments restart (see module docstring)
    pad_id = tok.pad_token_id or 0

    use_bf16 = bf16_fast() if bf16 is None else bf16

    def amp():
        # bf16 matmuls where the CPU multiplies bf16 natively (about 2x here); weights stay fp32
        return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    bar = tqdm(total=total, initial=step, desc="train reader", unit="step", disable=not progress)
    train_seconds, seen = 0.0, 0
    last_loss = None
    for epoch in range(start_epoch, epochs):
        model.train()
        batches = length_grouped_batches([len(f["input_ids"]) for f in feats], batch_size, seed + epoch)
        t = time.perf_counter()
        for idx in batches:
            batch = collate([feats[j] for j in idx], pad_id)
            with amp():
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            seen += len(batch["input_ids"])
            last_loss = float(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", epoch=epoch + 1)
        train_seconds += time.perf_counter() - t
        model.eval()
        d = ckdir / f"epoch-{epoch + 1}"
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(d / "model.safetensors",
                           save({k: v.detach().contiguous() for k, v in model.state_dict().items()}))
        atomic_write_text(d / "state.json", json.dumps(
            {"epoch": epoch + 1, "step": step, "data_hash": data_hash, "seed": seed, "loss": last_loss,
             "eval_before": before}, indent=2))
    bar.close()

    # calibration and threshold on the eval split, with the trained model
    model.eval()
    cal = calibrate(reader, eval_rows, report.unanswerable, max_answer_tokens)
    after, calib, threshold, threshold_from = cal.after, cal.calibration, cal.threshold, cal.threshold_from

    # the reader directory: weights, config and tokenizer first, the card last (it marks a complete dir)
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    tok.save_pretrained(str(staging))
    for f in staging.iterdir():
        os.replace(f, out / f.name)
    shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - t_start
    card = {
        "kind": "reader", "trained": True, "base": str(base_path), "data": data, "data_hash": data_hash,
        "rows": report.to_dict(), "train_questions": len(train_rows), "eval_questions": len(eval_rows),
        "train_features": len(feats), "eval_before": before, "eval_after": after,
        "calibration": calib, "threshold": round(float(threshold), 6), "threshold_from": threshold_from,
        "quote": cal.quote, "quote_from": cal.quote_from,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "stride": stride,
        "seed": seed, "eval_fraction": eval_fraction, "max_answer_tokens": max_answer_tokens, "steps": step,
        "final_loss": last_loss, "train_seconds": round(train_seconds, 2),
        "features_per_s": round(seen / train_seconds, 2) if train_seconds > 0 else None,
        "seconds": round(seconds, 2),
    }
    atomic_write_text(out / CARD, json.dumps(card, indent=2, ensure_ascii=False))
    from hybrid.reader.model import clear_cache

    clear_cache()  # a reader cached from this path before is stale now
    return ReaderTrainResult(out=out, card=card, report=report)