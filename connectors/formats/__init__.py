"""Turn the raw bytes of one source into text parts. One parser per format, registered by suffix.

A parser takes ``(data, name, cfg)`` and returns a :class:`Parsed`: the text parts (a PDF page, a CSV
row, a PPTX slide...) with their extra metadata, plus any sub-skips (a broken JSONL line). It raises
``SkipError(reason, message)`` when the whole source cannot be used. Parsers run inside a worker
process (see ``connectors.isolation``) so a hang or a memory blow-up costs one document, not the batch.

    >>> from connectors.config import IngestConfig
    >>> FORMATS.get(".txt")(b"hello", "a.txt", IngestConfig()).parts[0].text
    'hello'
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from connectors.config import IngestConfig
from connectors.encoding import decode_text
from core.errors import SkipError
from core.io import parse_jsonl as json_lines
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


# --- unstructured, made offline: connectors/formats/_unstructured.py -------------------------------

from connectors.formats._unstructured import _elements_text, _unstructured_offline  # noqa: E402,F401


# --- plain text, Markdown, HTML: connectors/formats/text.py -----------------------------------------

from connectors.formats.text import decode_html, html_to_parts, parse_html, parse_markdown, parse_text  # noqa: E402,F401


# --- office (DOCX, PPTX): connectors/formats/office.py -----------------------------------------------

from connectors.formats.office import _zip_check, parse_docx, parse_pptx  # noqa: E402,F401


# --- e-mail: connectors/formats/mail.py -------------------------------------------------------------

from connectors.formats.mail import parse_eml  # noqa: E402,F401


# --- PDF: connectors/formats/pdf.py -----------------------------------------------------------------

from connectors.formats.pdf import _PDF_EXTRACT_BIT, _parse_pdf_hires, _pdf_permissions, parse_pdf  # noqa: E402,F401


# --- tables and records (CSV, JSONL, JSON): connectors/formats/records.py ---------------------------

from connectors.formats.records import (  # noqa: E402,F401
    _get_field,
    _record,
    _row_text,
    _scalar_meta,
    json_path,
    parse_csv,
    parse_json,
    parse_jsonl,
)
