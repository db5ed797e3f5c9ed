"""Plain text, Markdown and HTML: decoded here (never guessed by a library), HTML flattened with lxml.

``html_to_parts`` is shared: Markdown is rendered to HTML and flattened by it, and an e-mail's HTML
body goes through it too (see ``connectors.formats.mail``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from connectors.config import IngestConfig
from connectors.encoding import Decoded, decode, strip_controls, utf16_guess
from connectors.formats import Parsed, Part, _register
from core.errors import SkipError

# --- plain text ----------------------------------------------------------------------------------


def _decoded(d: Decoded) -> tuple[str, dict[str, Any], list[tuple[str, str]]]:
    """Text, metadata and notes of a decode. When stray control bytes were removed it is said twice:
    in the document's metadata (``control_chars_stripped``, it stays with the text) and as a report
    note (the user sees it)."""
    meta: dict[str, Any] = {"encoding": d.encoding}
    notes: list[tuple[str, str]] = []
    if d.control_stripped:
        meta["control_chars_stripped"] = d.control_stripped
        notes.append(("control_stripped", f"removed {d.control_stripped} stray control byte(s); the rest is text"))
    return d.text, meta, notes


@_register((".txt", ".text", ".log", ".rst"), "text/plain")
def parse_text(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    text, meta, notes = _decoded(decode(data, strict_utf8=cfg.strict_utf8))
    out = Parsed([Part(text)], meta=meta, notes=notes)
    head = text.lstrip()[:1]
    if head in ("{", "[") and len(text) < 5_000_000:
        # Valid as text, so it loads; but a JSON-shaped file that does not parse was probably cut
        # short, and the user should hear about it.
        try:
            json.loads(text)
        except ValueError:
            out.notes.append(("suspect", "looks like truncated or invalid JSON; loaded as plain text"))
    return out


@_register((".md", ".markdown"), "text/markdown")
def parse_markdown(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """Decoded by us (never guessed), rendered to HTML by python-markdown (what unstructured's
    partition_md does too), then flattened: headings, lists, tables and code blocks keep their lines."""
    text, meta, notes = _decoded(decode(data, strict_utf8=cfg.strict_utf8))
    if not text.strip():
        raise SkipError("empty", "no text found (blank or whitespace only)")
    import markdown

    html = markdown.markdown(text, extensions=["tables", "fenced_code"])
    _, body = html_to_parts(f"<html><body>{html}</body></html>")
    m = re.search(r"^\s*#\s+(.+)$", text, re.M)
    if m:
        meta["title"] = m.group(1).strip().strip("#").strip()
    return Parsed([Part(body)], meta=meta, notes=notes)


# --- HTML ------------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-]+)""", re.I)


def decode_html(data: bytes, cfg: IngestConfig) -> tuple[str, str]:
    """``(html, encoding)`` of a page; see :func:`_html_decoded`."""
    d = _html_decoded(data, cfg)
    return d.text, d.encoding


def _html_decoded(data: bytes, cfg: IngestConfig) -> Decoded:
    """A BOM or valid UTF-8 first (pages mislabelled as latin-1 are usually UTF-8, and ASCII reads
    the same either way), then the <meta> charset when it decodes cleanly, else detection. Stray
    control bytes are stripped within the same tolerance as plain text."""
    # UTF-16 without a BOM is valid UTF-8 when it is mostly ASCII, NULs and all: ask first.
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or utf16_guess(data):
        return decode(data, strict_utf8=cfg.strict_utf8)
    try:
        return strip_controls(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    m = _META_CHARSET.search(data[:4096])
    if m:
        enc = m.group(1).decode("ascii")
        try:
            return strip_controls(data.decode(enc), enc.lower())
        except (UnicodeDecodeError, LookupError):
            pass
    return decode(data, strict_utf8=cfg.strict_utf8)


_DROP = ("script", "style", "noscript", "template", "svg", "head", "nav", "header", "footer", "aside", "form")
_BLOCK = {
    "p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "table",
    "tr", "blockquote", "pre", "dl", "dt", "dd", "figure", "figcaption", "hr", "address", "details", "summary",
    "caption", "thead", "tbody", "tfoot", "body", "html",
}

_LINE = {"li", "tr", "dt", "dd"}  # one line each, no blank line between siblings


def html_to_parts(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page with lxml: scripts, navigation, headers and footers removed,
    block elements on their own lines, list items as '- ', table cells joined by ' | '.

    lxml's HTML parser never loads a DTD or an external entity, and ``no_network`` is set anyway.
    """
    from lxml import etree
    from lxml import html as lhtml

    parser = lhtml.HTMLParser(no_network=True, remove_comments=True, remove_pis=True)
    html = re.sub(r"^\s*<\?xml[^>]*\?>", "", html)  # lxml refuses str input with a declaration
    if not html.strip():
        raise SkipError("empty", "no text found (blank or whitespace only)")
    try:
        root = lhtml.document_fromstring(html, parser=parser)
    except (etree.ParserError, ValueError) as e:
        raise SkipError("corrupt", f"unparsable HTML: {e}") from None
    title = " ".join((root.findtext(".//title") or "").split())
    for el in root.xpath("|".join(f"//{t}" for t in _DROP)):
        el.drop_tree()
    out: list[str] = []

    def inline(t: str, pre: bool) -> str:
        if pre:
            return t
        return (" " if t[:1].isspace() else "") + " ".join(t.split()) + (" " if t[-1:].isspace() and t.strip() else "")

    def walk(el: Any, pre: bool, out: list[str]) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        pre = pre or tag == "pre"
        if tag in ("td", "th"):
            # A cell is one piece of a row, whatever blocks it contains; empty cells vanish.
            sub: list[str] = []
            if el.text:
                sub.append(inline(el.text, False))
            for child in el:
                walk(child, False, sub)
                if child.tail:
                    sub.append(inline(child.tail, False))
            cell = " ".join("".join(sub).split())
            if cell:
                prev = "".join(out[-4:]).rstrip(" \t")
                if prev and not prev.endswith("\n"):
                    out.append(" | ")
                out.append(cell)
            return
        if tag in _BLOCK:
            out.append("\n")
        if tag == "li":
            out.append("- ")
        elif tag == "br":
            out.append("\n")
        if el.text:
            out.append(inline(el.text, pre))
        for child in el:
            walk(child, pre, out)
            if child.tail:
                out.append(inline(child.tail, pre))
        if tag in _BLOCK and tag not in _LINE:
            out.append("\n")

    body = root.find("body")
    walk(body if body is not None else root, False, out)
    lines = [ln.strip() if not ln.startswith(" " * 4) else ln.rstrip() for ln in "".join(out).split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return title, text


@_register((".html", ".htm", ".xhtml"), "text/html")
def parse_html(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    html, meta, notes = _decoded(_html_decoded(data, cfg))
    if not html.strip():
        raise SkipError("empty", "no text found (blank or whitespace only)")
    title, text = html_to_parts(html)
    if title:
        meta["title"] = title
    return Parsed([Part(text)], meta=meta, notes=notes)
