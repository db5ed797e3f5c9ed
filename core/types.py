"""The contracts every package shares. Small, typed, no inheritance.

Ids are stable content-derived hashes, so re-ingesting an unchanged source does nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def stable_id(*parts: str, size: int = 16) -> str:
    """A short hex id derived from its parts (sha256), stable across runs and machines."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:size]


@dataclass
class Document:
    """One loaded source unit (a file, a PDF page, a CSV row, a web page).

    >>> d = Document.create("Hello", {"source": "a.txt", "uri": "file:///a.txt"})
    >>> d.id == Document.create("Hello", {"source": "a.txt", "uri": "file:///a.txt"}).id
    True

    metadata holds at least: source, uri, title, mime, page (where there is one),
    sha256 (of the raw bytes) and modified (ISO 8601).
    """

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, text: str, metadata: dict[str, Any]) -> "Document":
        key = f"{metadata.get('uri', metadata.get('source', ''))}#{metadata.get('page', '')}#{metadata.get('row', '')}"
        return cls(id=stable_id(key, text), text=text, metadata=dict(metadata))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        return cls(id=str(d["id"]), text=str(d["text"]), metadata=dict(d.get("metadata") or {}))


@dataclass
class Chunk:
    """A piece of a document, the unit that is embedded and retrieved."""

    id: str
    doc_id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    """A search result. Higher score always means more relevant."""

    chunk: Chunk
    score: float
    rank: int = 0
    scores: dict[str, float] = field(default_factory=dict)  # per-mode scores (dense, bm25)


@dataclass
class Citation:
    """A numbered reference from an answer back to a chunk."""

    n: int
    chunk_id: str
    source: str
    page: int | None = None
    snippet: str = ""
    score: float = 0.0


@dataclass
class Decision:
    """What a router chose, and why."""

    strategy: str
    scores: dict[str, float] = field(default_factory=dict)
    confidence: float = 1.0
    reason: str = ""
    excluded: dict[str, str] = field(default_factory=dict)  # strategy -> why it was not possible


@dataclass
class Answer:
    """The result of ``hybrid.pipeline.ask``: the text and how it was made."""

    text: str
    strategy: str
    decision: Decision | None = None
    citations: list[Citation] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens
    notices: list[str] = field(default_factory=list)
    confidence: float | None = None  # the strategy's own score in [0, 1] when it has one (extract)
