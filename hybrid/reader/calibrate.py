"""How good a trained reader is, and when it should abstain: EM/F1 on the eval split, a logistic
calibration of its span margin, and the abstain threshold.

The last step of ``hybrid.reader.train.train_reader``, on the held-out split (``hybrid.reader.data``):
``evaluate`` scores the best span per question, ``fit_calibration`` maps (best-span score - no-answer
score) to P(token F1 >= ``F1_OK``), and ``choose_threshold`` picks the abstain probability when the
split has unanswerable questions. ``calibrate`` runs the three and says where the threshold came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from hybrid.eval.metrics import exact_match, mean, token_f1
from hybrid.reader.data import QARow
from hybrid.reader.model import DEFAULT_THRESHOLD, QUOTES, Reader, sigmoid
from hybrid.reader.span import sentence_bounds

MAX_ANSWER_TOKENS = 30
F1_OK = 0.5  # a span with token F1 at least this is "right" for the calibration


def evaluate(reader: Reader, rows: Sequence[QARow], max_answer_tokens: int = MAX_ANSWER_TOKENS,
             batch: int = 32) -> dict[str, Any]:
    """EM/F1 of the best span on answerable rows, plus per-row margins and F1s for calibration.

    ``f1_sentence`` (and ``sentence_f1s``) score the same spans widened to their whole sentences: which
    of the two to quote is chosen from them (``choose_quote``)."""
    margins, f1s, ems, answerable, sent_f1s = [], [], [], [], []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        spans = reader.predict_pairs([r.question for r in part], [r.context for r in part], max_answer_tokens)
        for r, sp in zip(part, spans):
            margins.append(sp.margin)
            answerable.append(r.start is not None)
            f1s.append(token_f1(sp.text, [r.answer]) if r.start is not None else 0.0)
            ems.append(exact_match(sp.text, [r.answer]) if r.start is not None else 0.0)
            s, e = sentence_bounds(r.context, sp.start, sp.end)
            sent_f1s.append(token_f1(r.context[s:e], [r.answer]) if r.start is not None else 0.0)
    ok = [i for i, a in enumerate(answerable) if a]
    return {"em": round(mean(ems[i] for i in ok), 4), "f1": round(mean(f1s[i] for i in ok), 4),
            "f1_sentence": round(mean(sent_f1s[i] for i in ok), 4),
            "n": len(rows), "answerable": len(ok), "margins": margins, "f1s": f1s, "sentence_f1s": sent_f1s,
            "is_answerable": answerable}


def choose_quote(ev: dict[str, Any]) -> tuple[str, str]:
    """("span" or "sentence", why): quote the reader's span, or the whole sentence it sits in, whichever
    scores the higher F1 on the eval split. Data whose gold answers are whole clauses (COVID-QA) gain
    from the sentence; short-answer data (names, numbers, PolicyQA's phrases) keep the span."""
    span, sent = ev["f1"], ev["f1_sentence"]
    quote = "sentence" if sent > span else "span"
    return quote, f"eval split: span F1 {span:.3f}, sentence F1 {sent:.3f}"


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


@dataclass
class Calibration:
    """What ``calibrate`` found: the eval split's EM/F1 after training (None without a split), the
    margin-to-probability map for the card, and the abstain threshold with where it came from."""

    after: dict[str, float] | None
    calibration: dict[str, Any] = field(default_factory=lambda: {"a": 1.0, "b": 0.0, "fitted": False})
    threshold: float = DEFAULT_THRESHOLD
    threshold_from: str = "default (no unanswerable questions in the data)"
    quote: str = QUOTES[0]
    quote_from: str = "default (no eval split to choose it on)"


def calibrate(reader: Reader, eval_rows: Sequence[QARow], unanswerable_rows: int,
              max_answer_tokens: int = MAX_ANSWER_TOKENS) -> Calibration:
    """Calibration and threshold on the eval split, with the trained model. ``unanswerable_rows`` is how
    many unanswerable questions the whole data set had (only for saying why the default was kept)."""
    out = Calibration(after=None)
    calib = out.calibration
    if eval_rows:
        ev = evaluate(reader, eval_rows, max_answer_tokens)
        out.after = {"em": ev["em"], "f1": ev["f1"], "f1_sentence": ev["f1_sentence"]}
        out.quote, out.quote_from = choose_quote(ev)
        # calibrate (and abstain) on what will be quoted
        f1s = ev["sentence_f1s"] if out.quote == "sentence" else ev["f1s"]
        ys = [1.0 if (a and f >= F1_OK) else 0.0 for f, a in zip(f1s, ev["is_answerable"])]
        fit = fit_calibration(ev["margins"], ys)
        if fit is not None and fit[0] > 0:
            calib = out.calibration = {"a": round(fit[0], 6), "b": round(fit[1], 6), "fitted": True}
        elif fit is not None:  # a higher margin must not mean a lower probability: keep the identity
            calib["why"] = f"fitted slope {fit[0]:.3f} <= 0 (the eval split is too small or the reader too weak)"
        if not all(ev["is_answerable"]) and any(ev["is_answerable"]):
            probs = [sigmoid(calib["a"] * m + calib["b"]) for m in ev["margins"]]
            out.threshold = choose_threshold(probs, f1s, ev["is_answerable"])
            out.threshold_from = (f"eval split: {sum(not a for a in ev['is_answerable'])} unanswerable and "
                                  f"{sum(ev['is_answerable'])} answerable questions")
        elif unanswerable_rows:
            out.threshold_from = "default (the eval split has no unanswerable questions)"
    elif unanswerable_rows:
        out.threshold_from = "default (no eval split to choose it on)"
    return out
