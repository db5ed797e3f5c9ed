"""Evaluation questions: the project's JSONL format and SQuAD-style JSON (v1 and v2).

JSONL rows::

    {"id": "q1", "question": "...", "answer": "ref" | ["ref1", "ref2"], "type": "retrieval",
     "tags": ["..."], "relevant_doc_ids": ["..."], "relevant_docs": ["file.md"], "relevant_chunks": []}

For SQuAD-style input the contexts become the knowledge base: ``load_questions`` returns them as
``Document``s in ``QuestionSet.documents``.

    qs = load_questions("apps/legal/questions.jsonl")
    qs.questions[0].answers, qs.flagged   # rows with problems are flagged, not dropped silently
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid.errors import InputError
from hybrid.io import read_jsonl
from hybrid.types import Document, stable_id


@dataclass
class Question:
    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    type: str = "general"
    tags: list[str] = field(default_factory=list)
    relevant_doc_ids: list[str] = field(default_factory=list)
    relevant_docs: list[str] = field(default_factory=list)  # source names (file names) of the relevant docs
    relevant_chunks: list[str] = field(default_factory=list)
    unanswerable: bool = False
    flags: list[str] = field(default_factory=list)  # e.g. "no_reference"

    @property
    def has_reference(self) -> bool:
        return self.unanswerable or any(a.strip() for a in self.answers)


@dataclass
class QuestionSet:
    questions: list[Question]
    documents: list[Document] = field(default_factory=list)  # SQuAD contexts, when the input carried them
    source: str = ""
    flagged: list[tuple[str, str]] = field(default_factory=list)  # (question id, flag)


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [str(x) for x in v if x is not None]
    return [str(v)]


def _check(questions: list[Question], path: str) -> QuestionSet:
    if not questions:
        raise InputError(f"{path}: no questions found (empty question file)")
    seen: dict[str, int] = {}
    for q in questions:
        seen[q.id] = seen.get(q.id, 0) + 1
    dups = sorted(k for k, n in seen.items() if n > 1)
    if dups:
        raise InputError(f"{path}: duplicate question ids: {', '.join(dups[:5])}" + (" ..." if len(dups) > 5 else ""))
    flagged = []
    for q in questions:
        if not q.has_reference:
            q.flags.append("no_reference")
            flagged.append((q.id, "no_reference"))
    return QuestionSet(questions=questions, source=path, flagged=flagged)


def _load_jsonl(path: Path) -> QuestionSet:
    questions: list[Question] = []
    for n, row in read_jsonl(path):
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise InputError(f"{path}:{n}: each row needs a non-empty 'question'")
        answers = _as_list(row.get("answer", row.get("answers")))
        tags = _as_list(row.get("tags"))
        unans = bool(row.get("is_impossible") or row.get("unanswerable") or "unanswerable" in tags)
        if unans:
            answers = [a for a in answers if a.strip()]
        questions.append(Question(
            id=str(row.get("id", f"line{n}")),
            question=str(row["question"]),
            answers=answers,
            type=str(row.get("type") or "general"),
            tags=tags,
            relevant_doc_ids=_as_list(row.get("relevant_doc_ids")),
            relevant_docs=_as_list(row.get("relevant_docs")),
            relevant_chunks=_as_list(row.get("relevant_chunks")),
            unanswerable=unans,
        ))
    return _check(questions, str(path))


def _load_squad(path: Path, data: dict[str, Any]) -> QuestionSet:
    questions: list[Question] = []
    docs: list[Document] = []
    for ai, article in enumerate(data.get("data") or []):
        title = str(article.get("title") or f"article-{ai}")
        for pi, para in enumerate(article.get("paragraphs") or []):
            context = str(para.get("context") or "")
            doc_key = str(para.get("document_id", f"{ai}-{pi}"))
            doc_id = stable_id(path.name, doc_key, context[:200])
            if context.strip():
                docs.append(Document(id=doc_id, text=context, metadata={
                    "source": f"{path.name}#{doc_key}", "uri": f"{path.resolve().as_uri()}#{doc_key}",
                    "title": title if "title" in article else f"document {doc_key}", "mime": "text/plain",
                }))
            for qa in para.get("qas") or []:
                answers = [str(a.get("text", "")).strip() for a in qa.get("answers") or []]
                answers = [a for a in answers if a]
                unans = bool(qa.get("is_impossible", False))
                questions.append(Question(
                    id=str(qa.get("id")), question=str(qa.get("question", "")), answers=answers,
                    type="unanswerable" if unans else "squad", relevant_doc_ids=[doc_id],
                    unanswerable=unans, tags=["unanswerable"] if unans else [],
                ))
    qs = _check([q for q in questions if q.question.strip()], str(path))
    qs.documents = docs
    return qs


def load_questions(path: str | Path) -> QuestionSet:
    """Load a question file: ``.jsonl`` in the project's format, or SQuAD v1/v2 ``.json``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"question file not found: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: no questions found (empty question file)")
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{p}: invalid JSON ({e.msg})") from None
        if not isinstance(data, dict) or "data" not in data:
            raise InputError(f"{p}: not SQuAD-style JSON (expected a top-level 'data' list)")
        return _load_squad(p, data)
    return _load_jsonl(p)
