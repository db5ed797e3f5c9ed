"""RAFT rows from the user's own question/context/answer pairs (SQuAD v1/v2 JSON or JSONL)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import InputError
from core.io import parse_jsonl
from hybrid.tuning.budget import (Budget, BuildReport, _add_raft_row, _close_report, _start_raft, _word_span,
                                  fit_blocks)


@dataclass
class QAPair:
    """One question over one context; ``answer`` None = unanswerable (SQuAD v2 ``is_impossible``)."""

    question: str
    context: str
    answer: str | None
    answer_start: int | None = None
    title: str = ""
    where: str = ""  # "file:line" or "id ..." for messages


def read_qa_pairs(path: str | os.PathLike[str], report: BuildReport | None = None) -> list[QAPair]:
    """SQuAD v1/v2 JSON, or JSONL rows ``{question, context, answer}`` (+ ``title``, ``answer_start``, ``id``)."""
    report = report if report is not None else BuildReport()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"question file not found: {p}")
    text = p.read_text(encoding="utf-8", errors="replace")
    pairs: list[QAPair] = []
    if not text.strip():
        raise InputError(f"{p}: no questions (the file is empty)")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("data"), list):  # SQuAD
        for art in whole["data"]:
            title = str(art.get("title", "")) if isinstance(art, dict) else ""
            for para in (art.get("paragraphs") or []) if isinstance(art, dict) else []:
                ctx = para.get("context", "") if isinstance(para, dict) else ""
                for qa in para.get("qas") or [] if isinstance(para, dict) else []:
                    where = f"id {qa.get('id', '?')}"
                    answers = [a for a in qa.get("answers") or [] if isinstance(a, dict) and a.get("text")]
                    if qa.get("is_impossible") or not answers:
                        pairs.append(QAPair(str(qa.get("question", "")), ctx, None, None, title, where))
                    else:
                        a = answers[0]
                        pairs.append(QAPair(str(qa.get("question", "")), ctx, str(a["text"]),
                                            a.get("answer_start"), title, where))
    else:
        for n, obj in parse_jsonl(text, source=p.name,
                                  on_error=lambda n, e: report.skip(f"{p.name}:{n}", "bad_json", e.msg)):
            where = f"{p.name}:{n}"
            if not isinstance(obj, dict) or not isinstance(obj.get("question"), str) \
                    or not isinstance(obj.get("context"), str):
                report.skip(where, "missing_field", "needs string 'question' and 'context' (and 'answer')")
                continue
            ans = obj.get("answer")
            unanswerable = bool(obj.get("is_impossible") or obj.get("unanswerable")) or ans in (None, "")
            start = obj.get("answer_start") if isinstance(obj.get("answer_start"), int) else None
            pairs.append(QAPair(obj["question"], obj["context"], None if unanswerable else str(ans), start,
                                str(obj.get("title") or ""), f"{where} (id {obj['id']})" if obj.get("id") else where))
    if not pairs and not report.skipped:
        raise InputError(f"{p}: no questions found (expected SQuAD JSON or {{question, context, answer}} JSONL)")
    return pairs


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def build_raft_from_qa(pairs: Sequence[QAPair], *, n_distractors: int = 3, oracle_fraction: float = 0.8,
                       dont_know: str = "I don't know: nothing in my sources covers that.", kb: Any = None,
                       seed: int = 0, budget: Budget | None = None,
                       report: BuildReport | None = None) -> list[dict]:
    """RAFT rows from the user's own pairs: the oracle (the pair's context, trimmed around the answer
    to fit) among ``n_distractors`` chunks, shuffled and numbered like the ``rag`` strategy; the answer
    quotes the gold span and cites its number (``"<span> [2]"``). Distractors come from ``kb``
    (``search(question, k)``, chunks of the same context excluded) or else from the other contexts of the
    file nearest the question by word overlap. Rows without the oracle, and unanswerable pairs, answer
    ``dont_know``. A gold span that is not in its context is a counted skip (``answer_not_in_context``).
    """
    report, rng = _start_raft(n_distractors, oracle_fraction, report, seed)
    contexts = list(dict.fromkeys(p.context for p in pairs if p.context.strip()))
    ctx_title = {p.context: p.title for p in pairs}
    ctx_words = [_words(c) for c in contexts]
    rows = []
    for pair in pairs:
        if not pair.question.strip() or not pair.context.strip():
            report.skip(pair.where, "missing_field", "empty question or context")
            continue
        if pair.answer is not None and pair.answer not in pair.context:
            report.skip(pair.where, "answer_not_in_context", f"{pair.answer[:40]!r} is not in the context")
            continue
        if kb is not None:
            hits = kb.search(pair.question, k=n_distractors + 4)
            own = " ".join(pair.context.split())
            pool = [(_hit_source(h), h.chunk.text) for h in hits
                    if " ".join(h.chunk.text.split())[:80] not in own and own[:80] not in " ".join(h.chunk.text.split())]
        else:
            q = _words(pair.question)
            ranked = sorted((i for i, c in enumerate(contexts) if c != pair.context),
                            key=lambda i: (-len(q & ctx_words[i]), i))
            pool = [(ctx_title.get(contexts[i]) or f"context {i + 1}", contexts[i]) for i in ranked[:n_distractors]]
        distractors = pool[:n_distractors]
        with_oracle = pair.answer is not None and rng.random() < oracle_fraction
        blocks = list(distractors) + ([(pair.title or "context", pair.context)] if with_oracle else [])
        order = list(range(len(blocks)))
        rng.shuffle(order)
        blocks = [blocks[i] for i in order]
        at = order.index(len(distractors)) if with_oracle else None
        reply = f"{pair.answer.strip()} [{at + 1}]" if at is not None else dont_know
        if budget is not None:
            span = _word_span(pair.context, pair.answer, pair.answer_start) if with_oracle else (0, 1)
            fitted = fit_blocks(pair.question, blocks, at, span, budget.room(reply), budget.count, report.trimmed)
            if fitted is None:
                report.skip(pair.where, "too_long", "the question and answer alone exceed the budget")
                continue
            blocks, at = fitted
            reply = f"{pair.answer.strip()} [{at + 1}]" if at is not None else dont_know
        _add_raft_row(rows, pair.question.strip(), blocks, reply, budget, report,
                      source=pair.title or f"context-{contexts.index(pair.context)}", oracle=with_oracle,
                      answerable=pair.answer is not None)
    return _close_report(rows, budget, report)


def _hit_source(hit: Any) -> str:
    md = getattr(hit.chunk, "metadata", None) or {}
    return str(md.get("source") or md.get("uri") or md.get("title") or hit.chunk.doc_id)
