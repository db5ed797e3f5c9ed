"""Connectors: sources in, clean ``Document``s out.

Two entry points::

    import connectors

    # one source, raw documents (parsed, not yet cleaned or deduplicated)
    for doc in connectors.load("docs/", include=["**/*.pdf"]):
        print(doc.metadata["source"], doc.metadata.get("page"), len(doc.text))
    rows = list(connectors.load("sqlite:///shop.db", query="SELECT title, body FROM faq"))

    # many sources, cleaned, deduplicated, with a report of what was skipped and why
    result = connectors.ingest(["docs/", "https://example.org/handbook/"], IngestConfig(web_depth=1))
    result.documents      # list[Document]
    print(result.report.render())

A source is a file or directory path, an ``http(s)://`` URL, or ``sqlite:///path/to.db`` (with a
query): the source kinds registered in ``connectors.sources.SOURCES``; file formats are registered by
suffix in ``connectors.formats.FORMATS``. One bad source is a logged, counted skip, never an aborted batch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from connectors.base import Raw, Skip
from connectors.config import IngestConfig
from connectors.report import DuplicateRecord, IngestReport, NoteRecord
from connectors.sources import SOURCES, source_kind
from core.errors import InputError, SkipError
from core.types import Document

__all__ = ["IngestConfig", "IngestReport", "IngestResult", "SOURCES", "load", "ingest", "source_kind", "clean_documents",
           "parsed_documents", "walk"]

log = logging.getLogger(__name__)

# load() keyword aliases that read better at a call site than the config field names.
_ALIASES = {"query": "sql_query", "text_column": "sql_text_column", "depth": "web_depth"}


def _cfg_with(cfg: IngestConfig | None, options: dict[str, Any]) -> IngestConfig:
    cfg = cfg or IngestConfig()
    if not options:
        return cfg
    names = {f.name for f in dataclasses.fields(IngestConfig)}
    changes = {}
    for k, v in options.items():
        key = _ALIASES.get(k, k)
        if key not in names:
            raise InputError(f"unknown option {k!r}; known: {', '.join(sorted(names | set(_ALIASES)))}")
        changes[key] = v
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as e:
        raise InputError(str(e)) from None


def _label(meta: dict[str, Any]) -> str:
    src = str(meta.get("source", "?"))
    if meta.get("page") is not None:
        return f"{src} p.{meta['page']}"
    if meta.get("row") is not None and "#row=" not in src:
        return f"{src} row {meta['row']}"
    return src


def parsed_documents(raw: Raw, outcome: Any, report: IngestReport) -> list[Document]:
    """The documents of one parsed file: ``outcome`` is what the parse pool returned for ``raw`` (its
    parts, or a ``SkipError``). Skips and notes go into ``report``, as counted, logged records; the
    documents carry ``raw``'s metadata under the parser's. Used by ``load`` and by the Ray engine's
    parse tasks (``indexes.ray_build``), so both turn a parse into the same documents and skips."""
    src = raw.meta.get("source", raw.name)
    if isinstance(outcome, SkipError):
        log.warning("skipped %s: %s (%s)", src, outcome.reason, outcome)
        report.skip(src, outcome.reason, str(outcome))
        return []
    for where, reason, message in outcome.skips:
        log.warning("skipped %s %s: %s (%s)", src, where, reason, message)
        report.skip(f"{src} {where}", reason, message)
    for code, message in outcome.notes:
        log.info("note on %s: %s (%s)", src, code, message)
        report.notes.append(NoteRecord(src, code, message))
    enc = outcome.meta.get("encoding")
    if enc and enc not in ("utf-8", "ascii"):
        report.notes.append(NoteRecord(src, "decoded", f"not UTF-8: decoded as {enc}"))
    docs = []
    for part in outcome.parts:
        meta = {**raw.meta, **outcome.meta, **part.meta}
        docs.append(Document.create(part.text, meta))
    return docs


def walk(source: str | Path, cfg: IngestConfig, report: IngestReport, bar: Any = None) -> Iterator[Document | Raw]:
    """One source's items in walk order, before any parsing: a row source's ``Document``s (counted as
    loaded), a file source's ``Raw`` files (counted as seen). Skips are logged and recorded in
    ``report``; ``bar`` advances per file skipped here and once per row source. ``load`` parses the
    raw files in the parse pool, ``indexes.ray_build`` in Ray tasks."""
    kind = SOURCES.get(source_kind(source))
    report.sources.append(str(source))
    if kind.rows:
        report.files_seen += 1
    for item in kind.read(source, cfg):
        if not kind.rows:
            report.files_seen += 1
        if isinstance(item, Skip):
            log.warning("skipped %s: %s (%s)", item.source, item.reason, item.message)
            report.skip(*item.as_tuple())
            if bar is not None and not kind.rows:
                bar.update(1)
            continue
        if kind.rows:
            text, meta = item
            report.loaded += 1
            yield Document.create(text, meta)
        else:
            yield item
    if kind.rows and bar is not None:
        bar.update(1)


def _load(source: str | Path, cfg: IngestConfig, report: IngestReport, bar: Any = None) -> Iterator[Document]:
    if SOURCES.get(source_kind(source)).rows:
        yield from walk(source, cfg, report, bar)  # nothing to parse
        return

    from connectors.isolation import shared_pool

    raws: dict[int, Raw] = {}
    counter = iter(range(1 << 62))

    def tasks() -> Iterator[tuple[int, bytes, str, str | None]]:
        for item in walk(source, cfg, report, bar):
            tid = next(counter)
            raws[tid] = item
            yield tid, item.data, item.name, item.kind

    # Results arrive in completion order; hold them so documents come out in walk order.
    waiting: dict[int, Any] = {}
    nxt = 0
    pool = shared_pool(cfg)
    for tid, outcome in pool.run(tasks(), cfg):
        waiting[tid] = outcome
        while nxt in waiting:
            raw = raws.pop(nxt)
            docs = parsed_documents(raw, waiting.pop(nxt), report)
            raw.data = b""  # the bytes are no longer needed; keep memory flat on big folders
            report.loaded += len(docs)
            if bar is not None:
                bar.update(1)
            yield from docs
            nxt += 1


def load(source: str | Path, *, cfg: IngestConfig | None = None, report: IngestReport | None = None,
         **options: Any) -> Iterator[Document]:
    """Documents of one source as parsed (not cleaned or deduplicated), in a stable order.

    ``options`` override ``cfg`` fields (``include=[...]``, ``query="SELECT ..."``, ``depth=1``...).
    Skips are logged and, when ``report`` is given, recorded in it.
    """
    cfg = _cfg_with(cfg, options)
    return _load(source, cfg, report if report is not None else IngestReport())


@dataclass
class IngestResult:
    """Cleaned, deduplicated documents and the report of how they were obtained.

        result = connectors.ingest(["docs/"])
        result.write_jsonl("docs.jsonl")
        print(result.report.render())
    """

    documents: list[Document] = field(default_factory=list)
    report: IngestReport = field(default_factory=IngestReport)

    def write_jsonl(self, path: str | Path) -> int:
        """Atomically write the documents as JSON lines (``Document.to_dict``); returns the count."""
        from core.io import write_jsonl

        return write_jsonl(path, (d.to_dict() for d in self.documents))


def clean_documents(docs: list[Document], cfg: IngestConfig, report: IngestReport) -> list[Document]:
    """Normalize, drop boilerplate and empties, scrub PII, then drop exact and near duplicates.

    Order is kept; the first of a group of duplicates is the one kept. Ids are recomputed from the
    cleaned text, so they stay stable for unchanged sources.
    """
    from connectors import clean

    texts = [clean.normalize_text(d.text) if cfg.normalize else d.text for d in docs]
    if cfg.strip_boilerplate:
        by_uri: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            if d.metadata.get("page") is not None:
                by_uri.setdefault(str(d.metadata.get("uri")), []).append(i)
        for idx in by_uri.values():
            idx.sort(key=lambda i: int(docs[i].metadata["page"]))
            pages, removed = clean.strip_repeated_lines([texts[i] for i in idx])
            if removed:
                report.boilerplate_lines += removed
                report.notes.append(NoteRecord(str(docs[idx[0]].metadata.get("source")), "boilerplate",
                                               f"{removed} repeated header/footer lines removed"))
                for i, page in zip(idx, pages):
                    texts[i] = page
    out_docs: list[Document] = []
    for d, text in zip(docs, texts):
        meta = dict(d.metadata)
        if cfg.pii_scrub:
            text, counts = clean.scrub_pii(text)
            found = {k: v for k, v in counts.items() if v}
            if found:
                meta["pii_scrubbed"] = found
                for k, v in found.items():
                    report.pii[k] = report.pii.get(k, 0) + v
        if len(text.strip()) < cfg.min_chars:
            report.skip(_label(meta), "empty", "no text left after cleaning")
            continue
        out_docs.append(Document.create(text, meta))
    if cfg.dedup:
        first: dict[str, Document] = {}
        unique = []
        for d in out_docs:
            h = clean.content_hash(d.text)
            if h in first:
                k = first[h]
                report.duplicates.append(DuplicateRecord(d.id, _label(d.metadata), k.id, _label(k.metadata), "exact"))
                continue
            first[h] = d
            unique.append(d)
        out_docs = unique
    if cfg.near_dup_threshold < 1.0:
        near = clean.near_duplicates([d.text for d in out_docs], cfg.near_dup_threshold, cfg.num_perm)
        drop = set()
        for nd in near:
            d, k = out_docs[nd.index], out_docs[nd.kept]
            report.duplicates.append(
                DuplicateRecord(d.id, _label(d.metadata), k.id, _label(k.metadata), "near", round(nd.similarity, 4)))
            drop.add(nd.index)
        out_docs = [d for i, d in enumerate(out_docs) if i not in drop]
    return out_docs


def ingest(sources: Iterable[str | Path], cfg: IngestConfig | None = None, *, progress: bool = False) -> IngestResult:
    """Load every source, clean and deduplicate, and report. Bad sources are skips, not errors;
    a source that does not exist or has an unknown scheme is an ``InputError`` before any work."""
    cfg = cfg or IngestConfig()
    sources = list(sources)
    if not sources:
        raise InputError("no sources given")
    for s in sources:
        source_kind(s)
    t0 = time.perf_counter()
    report = IngestReport()
    docs: list[Document] = []
    from tqdm.auto import tqdm

    # disable=None lets tqdm hide itself when stderr is not a terminal (CI logs, pipes).
    with tqdm(desc="ingest", unit="src", disable=None if progress else True, mininterval=0.5, leave=False) as bar:
        for s in sources:
            docs.extend(_load(s, cfg, report, bar))
    documents = clean_documents(docs, cfg, report)
    report.kept = len(documents)
    report.elapsed_s = time.perf_counter() - t0
    return IngestResult(documents, report)
