"""Source kinds, registered by name: ``files`` (a path), ``web`` (``http(s)://``), ``sql`` (``sqlite:///``).

    from connectors.sources import SOURCES, source_kind
    source_kind("https://example.org/")     # 'web'
    SOURCES.get("web").read(url, cfg)       # Raw (page bytes + metadata) or Skip items

A kind claims the URL prefixes it reads; the one kind without prefixes takes local paths. ``read``
yields ``Raw`` items that ``connectors`` parses in its worker pool, or, for a kind with
``rows=True``, finished ``(text, metadata)`` rows; either may yield ``Skip``\\ s. A new source kind
(another database, an object store) is one module plus one ``SOURCES.add`` here. The readers are
imported on first use, so importing ``connectors`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from connectors.config import IngestConfig
from core.errors import InputError
from core.registry import Registry


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source is recognised (``prefixes``, lowercase) and read (``read(source, cfg)``)."""

    prefixes: tuple[str, ...]
    read: Callable[[Any, IngestConfig], Iterator[Any]]
    rows: bool = False  # True: read yields (text, metadata) rows that need no parsing
    describe: str = ""  # how a user writes one, for error messages


SOURCES: Registry[SourceKind] = Registry("source kind")


def _read_files(source: Any, cfg: IngestConfig) -> Iterator[Any]:
    from connectors.files import walk

    return walk(source, cfg)


def _read_web(source: Any, cfg: IngestConfig) -> Iterator[Any]:
    from connectors.web import crawl

    return crawl(str(source), cfg)


def _read_sql(source: Any, cfg: IngestConfig) -> Iterator[Any]:
    from connectors.sql import rows

    return rows(str(source), cfg)


SOURCES.add("files", SourceKind((), _read_files, describe="a path"))
SOURCES.add("web", SourceKind(("http://", "https://"), _read_web, describe="an http(s):// URL"))
SOURCES.add("sql", SourceKind(("sqlite:///",), _read_sql, rows=True, describe="sqlite:///path.db"))


def source_kind(source: str | Path) -> str:
    """The name of the kind that reads ``source``; raises InputError for an unclaimed URL scheme or a
    missing path."""
    s = str(source)
    low = s.lower()
    path_kind = None
    for name in SOURCES:
        kind = SOURCES.get(name)
        if not kind.prefixes:
            path_kind = path_kind or name
        elif low.startswith(kind.prefixes):
            return name
    if "://" in s or path_kind is None:
        ways = ", ".join(f"{SOURCES.get(n).describe or n} ({n})" for n in SOURCES)
        raise InputError(f"unsupported source {s!r}: use one of {ways}")
    if not Path(s).expanduser().exists():
        raise InputError(f"no such file or directory: {s}")
    return path_kind
