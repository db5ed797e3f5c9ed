"""Tables and records: CSV/TSV rows, JSON Lines and JSON records, one part each, with the other
columns or fields as metadata; ``json_path`` is the small JSONPath subset that selects JSON records."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from connectors.config import IngestConfig
from connectors.encoding import decode_text
from connectors.formats import Parsed, Part, _register
from core.errors import SkipError
from core.io import parse_jsonl as json_lines


def _row_text(row: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in row.items() if v not in (None, ""))


def _scalar_meta(row: dict[str, Any], drop: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == drop or k in ("id", "text"):
            continue
        out[str(k)] = v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, ensure_ascii=False)
    return out


@_register((".csv", ".tsv"), "text/csv")
def parse_csv(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """One part per row. ``csv_text_column`` is the text and the other columns become metadata;
    without it each row reads ``column: value`` per line. Title rows above the header are skipped."""
    text, enc = decode_text(data, strict_utf8=cfg.strict_utf8)
    delim = "\t" if name.lower().endswith(".tsv") else None
    if delim is None:
        try:
            delim = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            delim = ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    except csv.Error as e:
        raise SkipError("corrupt", f"malformed CSV: {e}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise SkipError("empty", "CSV has no rows")
    width = max(len(r) for r in rows)
    # The header is the first row that fills every column; rows above it are a caption.
    h = next((i for i, r in enumerate(rows) if sum(bool(c.strip()) for c in r) == width), 0)
    caption = " ".join(c.strip() for r in rows[:h] for c in r if c.strip())
    header = [c.strip() or f"column_{j + 1}" for j, c in enumerate(rows[h])]
    col = cfg.csv_text_column
    if col and col not in header:
        raise SkipError("bad_column", f"CSV has no column {col!r} (columns: {', '.join(header)})")
    parts = []
    for n, r in enumerate(rows[h + 1 :], start=1):
        rec = {header[j]: (r[j].strip() if j < len(r) else "") for j in range(len(header))}
        body = rec[col] if col else _row_text(rec)
        parts.append(Part(body, {"row": n, **(_scalar_meta(rec, col) if col else {})}))
    meta: dict[str, Any] = {"encoding": enc}
    if caption:
        meta["title"] = caption
    return Parsed(parts, meta=meta)


def _get_field(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _record(obj: Any, field_name: str) -> tuple[str | None, dict[str, Any]]:
    """(text, metadata) of one JSON record; text is None when the field is missing."""
    if isinstance(obj, str):
        return obj, {}
    if isinstance(obj, dict):
        value = _get_field(obj, field_name)
        if value is None:
            return None, {}
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text, _scalar_meta(obj, field_name.split(".")[0])
    return None, {}


@_register((".jsonl", ".ndjson"), "application/jsonl")
def parse_jsonl(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """One part per line; ``jsonl_text_field`` is the text, other fields metadata. A broken line is a
    counted sub-skip (the other lines still load)."""
    text, _ = decode_text(data, strict_utf8=cfg.strict_utf8)
    out = Parsed()

    def bad_line(n: int, e: ValueError) -> None:
        out.skips.append((f"line {n}", "corrupt", f"invalid JSON: {e.msg} at column {e.colno}"))

    for n, obj in json_lines(text, source=name, on_error=bad_line):
        body, meta = _record(obj, cfg.jsonl_text_field)
        if body is None:
            out.skips.append((f"line {n}", "no_text", f"no field {cfg.jsonl_text_field!r}"))
            continue
        out.parts.append(Part(body, {"row": n, **meta}))
    return out


_JP_TOKEN = re.compile(r"\.([A-Za-z_][\w\-]*)|\[(\d+|\*)\]|\['([^']*)'\]|\.\*")


def json_path(obj: Any, path: str) -> list[Any]:
    """A small JSONPath subset: ``$``, ``.key``, ``['key']``, ``[n]``, ``[*]`` and ``.*``.

    >>> json_path({"a": [{"b": 1}, {"b": 2}]}, "$.a[*].b")
    [1, 2]
    """
    if not path.startswith("$"):
        raise ValueError(f"JSON path must start with '$', got {path!r}")
    rest, nodes = path[1:], [obj]
    while rest:
        m = _JP_TOKEN.match(rest)
        if not m:
            raise ValueError(f"unsupported JSON path syntax at {rest!r} in {path!r}")
        key, idx, quoted = m.group(1), m.group(2), m.group(3)
        nxt: list[Any] = []
        for node in nodes:
            if key is not None or quoted is not None:
                k = key if key is not None else quoted
                if isinstance(node, dict) and k in node:
                    nxt.append(node[k])
            elif idx == "*" or m.group(0) == ".*":
                if isinstance(node, list):
                    nxt.extend(node)
                elif isinstance(node, dict):
                    nxt.extend(node.values())
            elif idx is not None and isinstance(node, list) and int(idx) < len(node):
                nxt.append(node[int(idx)])
        nodes, rest = nxt, rest[m.end() :]
    return nodes


@_register((".json",), "application/json")
def parse_json(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """``json_path`` selects records; each is a part (its ``json_text_field`` as text). Without a path,
    a top-level list of records is used when they carry the text field, else the whole file."""
    text, _ = decode_text(data, strict_utf8=cfg.strict_utf8)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SkipError("corrupt", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if cfg.json_path:
        try:
            records = json_path(obj, cfg.json_path)
        except ValueError as e:
            raise SkipError("bad_path", str(e)) from None
        if not records:
            raise SkipError("empty", f"JSON path {cfg.json_path!r} matched nothing")
    elif isinstance(obj, list) and obj and all(isinstance(o, dict) for o in obj) and any(
        _get_field(o, cfg.json_text_field) is not None for o in obj
    ):
        records = obj
    else:
        return Parsed([Part(json.dumps(obj, ensure_ascii=False, indent=1))])
    out = Parsed()
    for n, rec in enumerate(records, start=1):
        body, meta = _record(rec, cfg.json_text_field)
        if body is None:
            if isinstance(rec, (int, float, bool)):
                body, meta = str(rec), {}
            else:
                out.skips.append((f"record {n}", "no_text", f"no field {cfg.json_text_field!r}"))
                continue
        out.parts.append(Part(body, {"row": n, **meta}))
    return out
