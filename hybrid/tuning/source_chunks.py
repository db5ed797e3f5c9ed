"""Source chunks for the training-set builders, and the template question each chunk answers.

``load_chunks`` reads a knowledge base (anything with ``documents()``), a ``docs.jsonl`` path, or a list
of ``Document``/``Chunk``/dict objects; documents are split into paragraph chunks. ``derive_question``
asks about one of a chunk's sentences by template (deterministic, no model).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.errors import InputError
from core.io import read_jsonl


@dataclass
class SourceChunk:
    """A passage and where it came from (``doc_id`` drives the train/eval split)."""

    text: str
    doc_id: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_HEADING_RE = re.compile(r"^\s*#{1,6}\s+(.+)$", re.M)


def _paragraph_chunks(text: str, max_words: int) -> list[str]:
    """Split on blank lines, then merge paragraphs up to ``max_words`` (sentences split long ones)."""
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for para in [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]:
        pieces = [para] if len(para.split()) <= max_words else _SENT_RE.split(para)
        for piece in pieces:
            w = len(piece.split())
            if cur and n + w > max_words:
                out.append("\n\n".join(cur))
                cur, n = [], 0
            cur.append(piece)
            n += w
    if cur:
        out.append("\n\n".join(cur))
    return out


def _from_obj(obj: Any, max_words: int) -> list[SourceChunk]:
    if isinstance(obj, SourceChunk):
        return [obj]
    if isinstance(obj, dict):
        text, meta = obj.get("text"), obj.get("metadata") or {}
        doc_id = obj.get("doc_id") or obj.get("id") or meta.get("source")
        is_chunk = "doc_id" in obj
    else:
        text, meta = getattr(obj, "text", None), getattr(obj, "metadata", {}) or {}
        doc_id = getattr(obj, "doc_id", None) or getattr(obj, "id", None)
        is_chunk = hasattr(obj, "doc_id")
    if not isinstance(text, str) or not text.strip():
        return []
    doc_id = str(doc_id or hashlib.sha256(text.encode()).hexdigest()[:16])
    title = str(meta.get("section") or meta.get("title") or "")
    if not title:
        m = _HEADING_RE.search(text)
        title = m.group(1).strip() if m else ""
    source = str(meta.get("source") or meta.get("uri") or doc_id)
    parts = [text] if is_chunk else _paragraph_chunks(text, max_words)
    return [SourceChunk(p, doc_id, title, source, dict(meta)) for p in parts]


def load_chunks(source: Any, *, max_words: int = 180) -> list[SourceChunk]:
    """Chunks from a KB (``documents()``), a ``docs.jsonl`` path, or an iterable of docs/chunks/dicts."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            from indexes.kb import KnowledgeBase

            kb = KnowledgeBase.open(p, readonly=True)
            try:
                items: Iterable[Any] = kb.documents()
            finally:
                kb.close()
        elif p.is_file():
            items = [obj for _, obj in read_jsonl(p)]
        else:
            raise InputError(f"document source not found: {p}")
    elif hasattr(source, "documents") and callable(source.documents):
        items = source.documents()
    else:
        items = source
    chunks = [c for obj in items for c in _from_obj(obj, max_words)]
    if not chunks:
        raise InputError("no text found to build training data from (empty documents?)")
    return chunks


def _sentences(text: str) -> list[str]:
    body = _HEADING_RE.sub("", text).strip()
    return [s.strip() for s in _SENT_RE.split(re.sub(r"\s+", " ", body)) if len(s.split()) >= 5]


def _h(*parts: Any) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def derive_question(chunk: SourceChunk, seed: int = 0) -> tuple[str, str] | None:
    """(question, answer sentence) from a chunk by template, or None when it has no usable sentence."""
    sents = _sentences(chunk.text)
    if not sents:
        return None
    sent = sents[_h(seed, chunk.doc_id, chunk.text[:64]) % len(sents)]
    words = sent.rstrip(".!?").split()
    about = chunk.title or chunk.source
    kind = _h(seed, "kind", sent) % 2
    if kind == 0 and len(words) >= 8:
        cut = max(4, len(words) // 2)
        q = f"According to {about}, how does this statement continue: \"{' '.join(words[:cut])} ...\"?"
    else:
        topic = " ".join(w.strip(",;:()\"'") for w in words[:6]).lower()
        q = f"What does {about} say about \"{topic}\"?"
    return q, sent
