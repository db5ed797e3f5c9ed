"""Evaluation questions: the project's JSONL format and SQuAD-style JSON (v1 and v2).

JSONL rows::

    {"id": "q1", "question": "...", "answer": "ref" | ["ref1", "ref2"], "type": "retrieval",
     "tags": ["..."], "relevant_doc_ids": ["..."], "relevant_docs": ["file.md"], "relevant_chunks": [],
     "title": "article title", "filter": {"source": "policy.txt"}}

``relevant_docs`` / ``relevant_doc_ids`` let the eval report retrieval hit@k; ``filter`` scopes the
question's retrieval like ``hybrid search --filter``; ``title`` lets ``hybrid eval --titles`` pick rows.

For SQuAD-style input the contexts become the knowledge base: ``load_questions`` returns them as
``Document``s in ``QuestionSet.documents``. After ``select_titles`` the knowledge base is the contexts
of the selected questions' articles only.

    qs = load_questions("apps/legal/questions.jsonl")
    qs.questions[0].answers, qs.flagged   # rows with problems are flagged, not dropped silently
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.io import read_jsonl
from core.types import Document, stable_id


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
    title: str = ""  # article title (SQuAD) or the row's "title": what --titles selects on
    filter: dict[str, Any] | None = None  # metadata filter for this question's retrieval (hybrid search syntax)

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
            title=str(row.get("title") or ""),
            filter=_filter(row.get("filter", row.get("filters")), f"{path}:{n}"),
        ))
    return _check(questions, str(path))


def _filter(raw: Any, where: str) -> dict[str, Any] | None:
    """A row's ``filter``: a dict as ``KnowledgeBase.search`` takes it, or ``"source=a.txt"`` strings as
    ``hybrid search --filter`` takes them."""
    if raw in (None, "", {}, []):
        return None
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (str, list)):
        from hybrid.cli.search import parse_filters

        try:
            return parse_filters(tuple([raw] if isinstance(raw, str) else [str(x) for x in raw]))
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
    raise InputError(f"{where}: 'filter' must be an object like {{\"source\": \"a.txt\"}} or 'source=a.txt', "
                     f"got {raw!r}")


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
                    "article": title,
                }))
            for qa in para.get("qas") or []:
                answers = [str(a.get("text", "")).strip() for a in qa.get("answers") or []]
                answers = [a for a in answers if a]
                unans = bool(qa.get("is_impossible", False))
                questions.append(Question(
                    id=str(qa.get("id")), question=str(qa.get("question", "")), answers=answers,
                    type="unanswerable" if unans else "squad", relevant_doc_ids=[doc_id],
                    unanswerable=unans, tags=["unanswerable"] if unans else [], title=title,
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


def parse_titles(value: str | None) -> list[str]:
    """``a,b`` or ``@file`` (one title per line, or comma-separated) -> titles; None -> []."""
    if not value:
        return []
    if value.startswith("@"):
        p = Path(value[1:])
        if not p.is_file():
            raise InputError(f"titles file not found: {p}")
        value = p.read_text(encoding="utf-8").replace("\n", ",")
    return [t.strip() for t in value.split(",") if t.strip()]


def select_titles(qs: QuestionSet, include: list[str] | None = None, exclude: list[str] | None = None) -> QuestionSet:
    """Keep the questions whose title is in ``include`` (all when empty) and not in ``exclude``.

    For SQuAD input the knowledge base shrinks with them: it is the contexts of the selected questions'
    articles. An unknown title is an error that lists the known ones.
    """
    include, exclude = list(include or []), list(exclude or [])
    if not include and not exclude:
        return qs
    known = {q.title for q in qs.questions}
    if known == {""}:
        raise InputError(f"{qs.source}: its questions carry no title, so --titles/--exclude-titles cannot select")
    unknown = [t for t in include + exclude if t not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
        raise InputError(f"{qs.source}: unknown title {unknown[0]!r}; titles are: {sample}")
    keep = [q for q in qs.questions if (not include or q.title in include) and q.title not in exclude]
    if not keep:
        raise InputError(f"{qs.source}: no questions left after selecting titles")
    ids = {q.id for q in keep}
    titles = {q.title for q in keep}
    docs = [d for d in qs.documents if d.metadata.get("article", d.metadata.get("title")) in titles]
    return QuestionSet(questions=keep, documents=docs, source=qs.source,
                       flagged=[(i, f) for i, f in qs.flagged if i in ids])
