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
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from core.errors import InputError
from hybrid.eval.metrics import exact_match, mean, token_f1
from core.io import atomic_write_bytes, atomic_write_text, read_jsonl
from hybrid.reader.model import CARD, DEFAULT_THRESHOLD, Reader, default_base, load_qa_model, sigmoid
from core.hardware import bf16_fast

log = logging.getLogger(__name__)

MAX_ANSWER_TOKENS = 30
F1_OK = 0.5  # a span with token F1 at least this is "right" for the calibration


@dataclass
class QARow:
    """One question about one context. ``start`` None = unanswerable (the target is [CLS])."""

    id: str
    question: str
    context: str
    answer: str
    start: int | None
    title: str
    where: str  # file:line or file#id, for reports


@dataclass
class DataReport:
    """What was read: rows kept, unanswerable rows kept, skips by reason (with where they were)."""

    kept: int = 0
    unanswerable: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped.setdefault(reason, []).append(where)

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        return {"kept": self.kept, "unanswerable": self.unanswerable, "skipped": self.n_skipped,
                "skipped_by_reason": {r: len(w) for r, w in sorted(self.skipped.items())},
                "skipped_examples": {r: w[:examples] for r, w in sorted(self.skipped.items())}}


# -- reading data --------------------------------------------------------------------------------

def _check(row_id: str, question: Any, context: Any, answer: Any, start: Any, impossible: bool, title: str,
           where: str, report: DataReport) -> QARow | None:
    question = question.strip() if isinstance(question, str) else ""
    context = context if isinstance(context, str) else ""
    if not question:
        report.skip("empty question", where)
        return None
    if not context.strip():
        report.skip("empty context", where)
        return None
    answer = answer if isinstance(answer, str) else ""
    if impossible or not answer.strip():
        if not impossible and not answer.strip():
            report.skip("no answer (and not marked is_impossible)", where)
            return None
        report.kept += 1
        report.unanswerable += 1
        return QARow(row_id, question, context, "", None, title, where)
    if start is not None and start != "":
        try:
            start = int(start)
        except (TypeError, ValueError):
            report.skip("answer_start is not a number", where)
            return None
        if context[start:start + len(answer)] != answer:
            report.skip("text at answer_start does not match the answer", where)
            return None
    else:
        start = context.find(answer)
        if start < 0:
            low = context.lower().find(answer.lower())
            if low < 0:
                report.skip("answer not found in context", where)
                return None
            start, answer = low, context[low:low + len(answer)]
    report.kept += 1
    return QARow(row_id, question, context, answer, start, title, where)


def _read_squad(path: Path, data: dict, report: DataReport) -> list[QARow]:
    rows = []
    if not isinstance(data.get("data"), list):
        raise InputError(f"{path}: a SQuAD file needs a 'data' list, got {type(data.get('data')).__name__}")
    for ai, article in enumerate(data["data"]):
        title = str((article or {}).get("title") or f"article-{ai}")
        for pi, para in enumerate((article or {}).get("paragraphs") or []):
            context = (para or {}).get("context")
            for qi, qa in enumerate((para or {}).get("qas") or []):
                qid = str(qa.get("id") or f"{ai}.{pi}.{qi}")
                answers = [a for a in (qa.get("answers") or []) if isinstance(a, dict) and a.get("text")]
                impossible = bool(qa.get("is_impossible")) or not answers
                first = answers[0] if answers else {}
                row = _check(qid, qa.get("question"), context, first.get("text", ""), first.get("answer_start"),
                             impossible, title, f"{path.name}#{qid}", report)
                if row is not None:
                    rows.append(row)
    return rows


def _read_jsonl(path: Path, report: DataReport) -> list[QARow]:
    rows = []
    for line, obj in read_jsonl(path):
        where = f"{path.name}:{line}"
        if not isinstance(obj, dict):
            report.skip("not a JSON object", where)
            continue
        answer, start = obj.get("answer"), obj.get("answer_start")
        if isinstance(answer, list):  # the question format: "answer": ["span", ...] (first one trains)
            answer = answer[0] if answer else None
        if isinstance(answer, dict):  # {"text", "answer_start"}
            answer, start = answer.get("text"), answer.get("answer_start", start)
        elif isinstance(obj.get("answers"), list) and obj["answers"] and answer is None:
            first = obj["answers"][0]
            answer, start = (first.get("text"), first.get("answer_start", start)) if isinstance(first, dict) \
                else (first, start)
        context = obj.get("context")
        title = str(obj.get("title") or "")
        row = _check(str(obj.get("id") or line), obj.get("question"), context, answer, start,
                     bool(obj.get("is_impossible") or obj.get("unanswerable")), title, where, report)
        if row is not None:
            rows.append(row)
    return rows


def load_qa(paths: Sequence[str | Path]) -> tuple[list[QARow], DataReport]:
    """Rows from SQuAD JSON and/or JSONL files, and the report of what was kept and skipped."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise InputError("no training data: pass at least one --data FILE")
    report = DataReport()
    rows: list[QARow] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError(f"data file not found: {p}")
        text = p.read_text(encoding="utf-8")
        if not text.strip():
            raise InputError(f"{p}: the file is empty (no question/answer rows)")
        data = None
        if text.lstrip().startswith("{") and p.suffix.lower() != ".jsonl":
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = None  # a JSONL file named .json
        before = len(rows)
        if isinstance(data, dict) and "data" in data:
            rows += _read_squad(p, data, report)
        else:
            rows += _read_jsonl(p, report)
        if len(rows) == before and not report.n_skipped:
            raise InputError(f"{p}: no question/answer rows found")
    if not rows:
        why = ", ".join(f"{r}: {len(w)}" for r, w in sorted(report.skipped.items()))
        raise InputError(f"no usable question/answer rows in {', '.join(map(str, paths))} (skipped {why})")
    return rows, report


def split_rows(rows: list[QARow], eval_fraction: float, seed: int) -> tuple[list[QARow], list[QARow]]:
    """Hold out whole titles (or contexts) for eval, never single questions of a shared context."""
    if not 0.0 <= eval_fraction < 1.0:
        raise InputError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    groups: dict[str, list[QARow]] = {}
    for r in rows:
        groups.setdefault(r.title or hashlib.sha256(r.context.encode()).hexdigest(), []).append(r)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    target = round(eval_fraction * len(rows))
    eval_keys: list[str] = []
    n = 0
    for k in keys:
        if n >= target or len(eval_keys) == len(keys) - 1:  # at least one group stays for training
            break
        if n + len(groups[k]) > max(1.5 * target, 1):  # a big title would overshoot: try the next one
            continue
        eval_keys.append(k)
        n += len(groups[k])
    ek = set(eval_keys)
    return [r for r in rows if (r.title or hashlib.sha256(r.context.encode()).hexdigest()) not in ek], \
        [r for k in eval_keys for r in groups[k]]


# -- features ------------------------------------------------------------------------------------

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


def _collate(feats: list[dict], pad_id: int):
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


# -- evaluation, calibration, threshold ----------------------------------------------------------

def evaluate(reader: Reader, rows: Sequence[QARow], max_answer_tokens: int = MAX_ANSWER_TOKENS,
             batch: int = 32) -> dict[str, Any]:
    """EM/F1 of the best span on answerable rows, plus per-row margins and F1s for calibration."""
    margins, f1s, ems, answerable = [], [], [], []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        spans = reader.predict_pairs([r.question for r in part], [r.context for r in part], max_answer_tokens)
        for r, sp in zip(part, spans):
            margins.append(sp.margin)
            answerable.append(r.start is not None)
            f1s.append(token_f1(sp.text, [r.answer]) if r.start is not None else 0.0)
            ems.append(exact_match(sp.text, [r.answer]) if r.start is not None else 0.0)
    ok = [i for i, a in enumerate(answerable) if a]
    return {"em": round(mean(ems[i] for i in ok), 4), "f1": round(mean(f1s[i] for i in ok), 4),
            "n": len(rows), "answerable": len(ok), "margins": margins, "f1s": f1s, "is_answerable": answerable}


def fit_calibration(x: Sequence[float], y: Sequence[float], l2: float = 1e-3) -> tuple[float, float] | None:
    """1-D logistic regression P(y=1) = sigmoid(a*x + b) by Newton's method; None with one class only."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or y.min() == y.max():
        return None
    X = np.stack([x, np.ones_like(x)], 1)
    w = np.zeros(2)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -60, 60)))
        grad = X.T @ (p - y) + l2 * np.array([w[0], 0.0])
        hess = X.T @ (X * (p * (1 - p))[:, None]) + l2 * np.eye(2) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


def choose_threshold(probs: Sequence[float], f1s: Sequence[float], answerable: Sequence[bool]) -> float:
    """The probability below which to abstain that maximises F1 on answerable rows plus correct
    abstentions on unanswerable ones; ties go to the lower threshold."""
    cands = sorted({0.0, *(round(float(p), 6) for p in probs)})
    best_t, best_u = 0.0, -1.0
    for t in cands:
        u = sum((f if p >= t else 0.0) if a else (1.0 if p < t else 0.0) for p, f, a in zip(probs, f1s, answerable))
        if u > best_u + 1e-12:
            best_t, best_u = t, u
    return best_t


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
            batch = _collate([feats[j] for j in idx], pad_id)
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
    calib = {"a": 1.0, "b": 0.0, "fitted": False}
    threshold, threshold_from = DEFAULT_THRESHOLD, "default (no unanswerable questions in the data)"
    after = None
    if eval_rows:
        ev = evaluate(reader, eval_rows, max_answer_tokens)
        after = {"em": ev["em"], "f1": ev["f1"]}
        ys = [1.0 if (a and f >= F1_OK) else 0.0 for f, a in zip(ev["f1s"], ev["is_answerable"])]
        fit = fit_calibration(ev["margins"], ys)
        if fit is not None and fit[0] > 0:
            calib = {"a": round(fit[0], 6), "b": round(fit[1], 6), "fitted": True}
        elif fit is not None:  # a higher margin must not mean a lower probability: keep the identity
            calib["why"] = f"fitted slope {fit[0]:.3f} <= 0 (the eval split is too small or the reader too weak)"
        if not all(ev["is_answerable"]) and any(ev["is_answerable"]):
            probs = [sigmoid(calib["a"] * m + calib["b"]) for m in ev["margins"]]
            threshold = choose_threshold(probs, ev["f1s"], ev["is_answerable"])
            threshold_from = (f"eval split: {sum(not a for a in ev['is_answerable'])} unanswerable and "
                              f"{sum(ev['is_answerable'])} answerable questions")
        elif report.unanswerable:
            threshold_from = "default (the eval split has no unanswerable questions)"
    elif report.unanswerable:
        threshold_from = "default (no eval split to choose it on)"

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
