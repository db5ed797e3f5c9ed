"""``hybrid search "query" --kb DIR``: ranked chunks with source, page, score and a snippet."""

from __future__ import annotations

import json
import re
from typing import Any

import click

_FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*(>=|<=|!=|=|>|<)\s*(.*)$")
_OPS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt", "!=": "ne"}


def _value(raw: str) -> Any:
    """Numbers become numbers (``page=3`` matches an integer page); everything else stays a string."""
    raw = raw.strip()
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_filters(items: tuple[str, ...]) -> dict[str, Any]:
    """``source=a.pdf``, ``source=a.pdf|b.pdf`` (any of), ``modified>=2024-01-01``, ``page<3``, ``mime!=text/csv``."""
    from core.errors import InputError

    out: dict[str, Any] = {}
    for item in items:
        m = _FILTER_RE.match(item)
        if not m:
            raise InputError(f"filter {item!r} must look like field=value, field=a|b, field>=value or field<value")
        name, op, raw = m.groups()
        if op == "=":
            vals = [_value(v) for v in raw.split("|")]
            cond: Any = vals[0] if len(vals) == 1 else {"in": vals}
            if name in out:
                raise InputError(f"filter field {name!r} given twice with '='; use {name}=a|b for any of several")
            out[name] = cond
        else:
            prev = out.setdefault(name, {})
            if not isinstance(prev, dict):
                raise InputError(f"filter field {name!r} combines '=' with a range")
            prev[_OPS[op]] = _value(raw)
    return out


def _snippet(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def format_hit(hit: Any) -> str:
    m = hit.chunk.metadata
    where = str(m.get("source") or m.get("uri") or hit.chunk.doc_id)
    if m.get("page") not in (None, ""):
        where += f" p.{m['page']}"
    if m.get("section"):
        where += f" § {m['section']}"
    parts = " ".join(f"{k}={v:.3f}" for k, v in hit.scores.items() if k != "rrf")
    return f"{hit.rank:>2}. {hit.score:.4f}  {where}" + (f"  [{parts}]" if parts else "") + f"\n    {_snippet(hit.chunk.text)}"


@click.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("query")
@click.option("--kb", "kb_dir", required=True, type=click.Path(file_okay=False), envvar="HYBRID_KB",
              help="Knowledge-base directory (env: HYBRID_KB).")
@click.option("-k", "k", type=int, default=5, show_default=True, help="How many chunks to return.")
@click.option("-m", "--mode", type=click.Choice(["hybrid", "dense", "bm25"]), default="hybrid", show_default=True)
@click.option("-f", "--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Metadata filter (repeatable): source=a.pdf, source=a.pdf|b.pdf, modified>=2024-01-01, page<3.")
@click.option("--mmr", is_flag=True, help="Diversify results with maximal marginal relevance.")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
def cli(query: str, kb_dir: str, k: int, mode: str, filters: tuple[str, ...], mmr: bool, as_json: bool) -> None:
    """Search a knowledge base; higher scores are more relevant.

    \b
    Examples:
      hybrid search "notice period for termination" --kb .cache/kb
      hybrid search "court fees" --kb .cache/kb -k 3 --mode bm25 --filter source=court-fee-schedule-2024.csv
      hybrid search "deadline" --kb .cache/kb --filter 'modified>=2024-01-01' --json
    """
    from indexes.kb import KnowledgeBase

    flt = parse_filters(filters) if filters else None
    with KnowledgeBase.open(kb_dir, readonly=True) as kb:
        hits = kb.search(query, k=k, filters=flt, mode=mode, mmr=mmr)
    if as_json:
        rows = [{"rank": h.rank, "score": h.score, "scores": h.scores, "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id,
                 "source": h.chunk.metadata.get("source"), "page": h.chunk.metadata.get("page"),
                 "text": h.chunk.text, "metadata": h.chunk.metadata} for h in hits]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    if not hits:
        click.echo("no results (the filters matched nothing)")
        return
    for h in hits:
        click.echo(format_hit(h))
