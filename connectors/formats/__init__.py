"""Turn the raw bytes of one source into text parts. One parser per format, registered by suffix.

A parser takes ``(data, name, cfg)`` and returns a :class:`Parsed`: the text parts (a PDF page, a CSV
row, a PPTX slide...) with their extra metadata, plus any sub-skips (a broken JSONL line). It raises
``SkipError(reason, message)`` when the whole source cannot be used. Parsers run inside a worker
process (see ``connectors.isolation``) so a hang or a memory blow-up costs one document, not the batch.

This module is the registry and the dispatch (``FORMATS``, ``MIME``, ``parse_bytes``, ``suffix_of``) and
the types a parser returns. The parsers live in one module per family, imported at the bottom so that
each registers itself on ``import connectors.formats``:

- ``text``: plain text, Markdown, HTML (``decode_html``, ``html_to_parts``)
- ``office``: DOCX, PPTX (through unstructured, after a zip-bomb check)
- ``mail``: e-mail (.eml)
- ``pdf``: PDF (PDFium; the hi-res path through unstructured)
- ``records``: CSV/TSV, JSON Lines, JSON (``json_path``)
- ``_unstructured``: unstructured made offline, shared by ``office`` and ``pdf``

Every parser is re-exported here, so ``from connectors.formats import parse_pdf`` keeps working. To add a
format, write a function in a family module and decorate it with ``@_register((".ext",), "mime/type")``;
a new family module also needs its import line at the bottom of this file.

    >>> from connectors.config import IngestConfig
    >>> FORMATS.get(".txt")(b"hello", "a.txt", IngestConfig()).parts[0].text
    'hello'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from connectors.config import IngestConfig
from core.errors import SkipError
from core.registry import Registry


@dataclass
class Part:
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    parts: list[Part] = field(default_factory=list)
    skips: list[tuple[str, str, str]] = field(default_factory=list)  # (where, reason, message)
    meta: dict[str, Any] = field(default_factory=dict)  # applies to every part (title, encoding...)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (code, message): loaded, but worth a look


Parser = Callable[[bytes, str, IngestConfig], Parsed]
FORMATS: Registry[Parser] = Registry("file format")
MIME: dict[str, str] = {}


def _register(suffixes: tuple[str, ...], mime: str) -> Callable[[Parser], Parser]:
    def deco(fn: Parser) -> Parser:
        for s in suffixes:
            FORMATS.add(s, fn)
            MIME[s] = mime
        return fn

    return deco


def suffix_of(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def parse_bytes(data: bytes, name: str, cfg: IngestConfig, kind: str | None = None) -> Parsed:
    """Dispatch on ``kind`` (a suffix like '.pdf') or the file name's suffix."""
    suffix = kind or suffix_of(name)
    if suffix not in FORMATS:
        raise SkipError("unsupported", f"unsupported file type {suffix or '(no extension)'!r}")
    if not data:
        raise SkipError("empty", "file is empty (0 bytes)")
    parsed = FORMATS.get(suffix)(data, name, cfg)
    if not any(p.text.strip() for p in parsed.parts) and not parsed.skips:
        raise SkipError("empty", "no text found (blank or whitespace only)")
    return parsed


# --- the parser families ---------------------------------------------------------------------------
# Imported after everything above is defined: each family module imports Part, Parsed and _register from
# here. The order below is the registration order (FORMATS.in_order(), MIME), as it was in one file.

from connectors.formats._unstructured import _unstructured_offline  # noqa: E402,F401 - benchmarks/ingest.py
from connectors.formats.text import (  # noqa: E402,F401
    decode_html,
    html_to_parts,
    parse_html,
    parse_markdown,
    parse_text,
)
from connectors.formats.office import parse_docx, parse_pptx  # noqa: E402,F401
from connectors.formats.mail import parse_eml  # noqa: E402,F401
from connectors.formats.pdf import parse_pdf  # noqa: E402,F401
from connectors.formats.records import json_path, parse_csv, parse_json, parse_jsonl  # noqa: E402,F401
