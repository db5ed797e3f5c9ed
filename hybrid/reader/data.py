"""Question/context/answer rows for the reader: read (SQuAD v1/v2 JSON or JSONL), check, split.

The first step of ``hybrid.reader.train.train_reader``: ``load_qa`` -> ``split_rows`` -> (features,
``hybrid.reader.features``). The accepted formats are described in ``hybrid.reader.train``. A bad row
is a counted skip in the ``DataReport``, by ``file:line`` (JSONL) or ``file#id`` (SQuAD) with its reason.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from core.errors import InputError
from core.io import read_jsonl


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
