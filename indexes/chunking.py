"""Token-aware chunking: documents -> chunks that fit the embedder, with stable ids and positions.

    chunks = chunk_documents(docs, IndexConfig(chunk_size=200, chunk_overlap=30), embedder)

Two modes:

- ``recursive``: LangChain's recursive splitter (paragraphs, then lines, sentences, words), with
  length measured in the embedder's own tokens, so a chunk never silently loses its tail to truncation.
- ``headings``: Markdown (``#`` headings) and HTML (``<h1>``..``<h6>``) are first cut into sections;
  each section is then split recursively and every chunk carries its section title, both in
  ``metadata["section"]`` and as the chunk's first line (so the title is embedded and searchable).
  Text without headings falls back to ``recursive``.

A chunk id is derived from its document id, its position and its text, so re-chunking an
unchanged document gives the same ids and an edited document keeps the ids of unedited chunks.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

from core.types import Chunk, Document, stable_id
from indexes.config import IndexConfig

_SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
_MD_HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]
_HTML_HEADINGS = [("h1", "h1"), ("h2", "h2"), ("h3", "h3"), ("h4", "h4")]
_MD_HEADING_RE = re.compile(r"^#{1,6}\s+\S", re.M)
_HTML_HEADING_RE = re.compile(r"<h[1-6][\s>]", re.I)


def token_counter(tokenizer_or_embedder: Any) -> Callable[[str], int]:
    """A ``len`` in tokens from an embedder (``count_tokens``), an HF tokenizer, or a callable."""
    obj = tokenizer_or_embedder
    if obj is None:
        return lambda s: len(s.split())
    tok = None
    if hasattr(obj, "path") and hasattr(obj, "tokenizer"):  # SentenceTransformerEmbedder
        tok = obj.tokenizer
    elif hasattr(obj, "count_tokens"):
        return obj.count_tokens
    elif hasattr(obj, "encode") and hasattr(obj, "vocab_size"):  # a transformers tokenizer
        tok = obj
    elif callable(obj):
        return obj
    if tok is None:
        raise TypeError(f"cannot count tokens with {type(obj).__name__}: pass an embedder, tokenizer or callable")
    return _HFCounter(tok)


class _HFCounter:
    """Token counts from a Hugging Face tokenizer, memoized (the splitter measures the same pieces
    again while merging) and with a batch method (the Rust tokenizer counts many texts in parallel)."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.cache: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        n = self.cache.get(s)
        if n is None:
            n = len(self.tok(s, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
            if len(self.cache) > 100_000:
                self.cache.clear()
            self.cache[s] = n
        return n

    def many(self, texts: list[str]) -> list[int]:
        if not texts:  # the tokenizer fails on an empty batch
            return []
        enc = self.tok(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(e) for e in enc]


def _splitter(cfg: IndexConfig, length: Callable[[str], int]):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap, length_function=length,
        separators=_SEPARATORS, keep_separator="end", strip_whitespace=True,
    )


def _sections(text: str, mime: str) -> list[tuple[str, str]]:
    """(section title path, section text) for Markdown or HTML; [] when there are no headings."""
    is_html = "html" in mime or (text.lstrip().startswith("<") and _HTML_HEADING_RE.search(text))
    if is_html and _HTML_HEADING_RE.search(text):
        from langchain_text_splitters import HTMLHeaderTextSplitter

        try:
            parts = HTMLHeaderTextSplitter(_HTML_HEADINGS).split_text(text)
        except Exception:  # noqa: BLE001 - malformed HTML: fall back to plain splitting
            return []
    elif _MD_HEADING_RE.search(text):
        from langchain_text_splitters import MarkdownHeaderTextSplitter

        parts = MarkdownHeaderTextSplitter(_MD_HEADINGS, strip_headers=True).split_text(text)
    else:
        return []
    out = []
    for p in parts:
        title = " > ".join(str(p.metadata[h]) for _, h in _MD_HEADINGS if h in p.metadata)
        body = p.page_content.strip()
        if body:
            out.append((title, body))
    return out


def chunk_text(text: str, cfg: IndexConfig, length: Callable[[str], int], mime: str = "",
               n_tokens: int | None = None) -> list[dict[str, Any]]:
    """Split one text; returns dicts with text, start (char offset in ``text``, -1 if not found), section.

    ``n_tokens`` (the text's length, when already known) lets a text that fits skip the splitter.
    """
    if cfg.chunk_mode == "recursive" and n_tokens is not None and n_tokens <= cfg.chunk_size:
        piece = text.strip()
        if len(piece) < max(cfg.min_chunk_chars, 1):
            return []
        return [{"text": piece, "start": text.find(piece[:80]), "section": ""}]
    splitter = _splitter(cfg, length)
    sections = _sections(text, mime) if cfg.chunk_mode == "headings" else []
    if not sections:
        sections = [("", text)]
    out: list[dict[str, Any]] = []
    cursor = 0
    for title, body in sections:
        prefix = f"{title.split(' > ')[-1]}\n" if title else ""
        # The title line costs tokens too: leave room for it so chunks still fit the model.
        if prefix:
            budget = max(8, cfg.chunk_size - length(prefix))
            sub = _splitter(IndexConfig(**{**_stored(cfg), "chunk_size": budget,
                                           "chunk_overlap": min(cfg.chunk_overlap, budget // 2)}), length)
        else:
            sub = splitter
        for piece in sub.split_text(body):
            piece = piece.strip()
            if len(piece) < cfg.min_chunk_chars:
                continue
            probe = piece.split("\n", 1)[0][:80]  # section splitters re-join lines, so match the first one
            start = text.find(probe, cursor)
            if start < 0:
                start = text.find(probe)
            else:
                cursor = start + 1
            out.append({"text": prefix + piece, "start": start, "section": title})
    return out


def _stored(cfg: IndexConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)


def chunk_document(doc: Document, cfg: IndexConfig, length: Callable[[str], int],
                   n_tokens: int | None = None) -> list[Chunk]:
    pieces = chunk_text(doc.text, cfg, length, str(doc.metadata.get("mime", "")), n_tokens)
    chunks = []
    for i, p in enumerate(pieces):
        meta = dict(doc.metadata)
        meta.update({"doc_id": doc.id, "chunk_index": i, "chunk_count": len(pieces), "start": p["start"]})
        if p["section"]:
            meta["section"] = p["section"]
        chunks.append(Chunk(id=stable_id(doc.id, str(i), p["text"]), doc_id=doc.id, text=p["text"], metadata=meta))
    return chunks


def chunk_documents(docs: Iterable[Document], cfg: IndexConfig, tokenizer_or_embedder: Any = None, *,
                    progress: bool = False) -> list[Chunk]:
    """Chunks of every document, in order. Empty documents give no chunks."""
    length = token_counter(tokenizer_or_embedder)
    docs = list(docs)
    # Count whole documents in one batch first: most short documents then need no splitting at all.
    sizes: list[int | None] = [None] * len(docs)
    if isinstance(length, _HFCounter) and docs:
        short = [i for i, d in enumerate(docs) if len(d.text) < cfg.chunk_size * 12]  # longer ones cannot fit
        for i, n in zip(short, length.many([docs[i].text for i in short])):
            sizes[i] = n
    elif docs:
        sizes = [length(d.text) if len(d.text) < cfg.chunk_size * 12 else None for d in docs]
    out: list[Chunk] = []
    items: Iterable[tuple[Document, int | None]] = zip(docs, sizes)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(docs), desc="chunk", unit="doc", disable=None, mininterval=0.5, leave=False)
    for d, n in items:
        out.extend(chunk_document(d, cfg, length, n))
    return out


