"""``hybrid ingest PATH|URL... --out docs.jsonl``: load, clean, deduplicate, write, summarize."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from hybrid.cli.options import config_option, set_option


@click.command("ingest", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, required=True, metavar="PATH|URL|sqlite:///DB...")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), envvar="HYBRID_INGEST_OUT",
              help="Where to write the documents (JSON lines, written atomically).")
@config_option
@set_option
@click.option("-i", "--include", multiple=True, metavar="GLOB", help="Only files matching this glob (repeatable).")
@click.option("-x", "--exclude", multiple=True, metavar="GLOB", help="Leave out files matching this glob (repeatable).")
@click.option("--pii/--no-pii", default=None, help="Scrub e-mails, phone and card numbers (counts are reported).")
@click.option("--near-dup", type=float, default=None, metavar="T",
              help="Near-duplicate Jaccard threshold in (0, 1]; 1 turns near-dup detection off.")
@click.option("--depth", type=int, default=None, help="Web: links to follow from each start URL.")
@click.option("--allow-private", is_flag=True, default=None,
              help="Web: allow private, loopback and link-local addresses.")
@click.option("--query", default=None, help="SQL query for sqlite:/// sources (one row = one document).")
@click.option("--text-column", default=None, help="Column (CSV/SQL) or field (JSONL) that holds the text.")
@click.option("--json-path", default=None, help="JSON path of the records in .json files, e.g. '$.items[*]'.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the full report (every skip and duplicate) as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
def cli(sources: tuple[str, ...], out: str, config_path: str | None, overrides: tuple[str, ...],
        include: tuple[str, ...], exclude: tuple[str, ...], pii: bool | None, near_dup: float | None,
        depth: int | None, allow_private: bool | None, query: str | None, text_column: str | None,
        json_path: str | None, report_path: str | None, quiet: bool) -> None:
    """Load documents from files, folders, web pages or a SQLite query; clean, deduplicate and
    write them as JSON lines, then print what was loaded, skipped (and why) and dropped as duplicate.

    \b
    Examples:
      hybrid ingest docs/ --out docs.jsonl
      hybrid ingest docs/ -i '**/*.pdf' -x 'drafts/**' --pii --out docs.jsonl
      hybrid ingest https://example.org/handbook/ --depth 1 --out web.jsonl
      hybrid ingest sqlite:///faq.db --query 'SELECT title, body FROM faq' --text-column body --out faq.jsonl
      hybrid ingest docs/ -c configs/ingest.yaml --set near_dup_threshold=0.8 --out docs.jsonl
    """
    from connectors import ingest
    from connectors.config import IngestConfig
    from core.config import load_config
    from core.errors import ConfigError, InputError
    from core.io import atomic_write_text

    cfg = load_config(IngestConfig, config_path, list(overrides))
    changes: dict[str, Any] = {}
    if include:
        changes["include"] = list(include)
    if exclude:
        changes["exclude"] = list(cfg.exclude) + list(exclude)
    if pii is not None:
        changes["pii_scrub"] = pii
    if near_dup is not None:
        changes["near_dup_threshold"] = near_dup
    if depth is not None:
        changes["web_depth"] = depth
    if allow_private:
        changes["web_allow_private"] = True
    if query is not None:
        changes["sql_query"] = query
    if text_column is not None:
        changes.update(sql_text_column=text_column, csv_text_column=text_column, jsonl_text_field=text_column)
    if json_path is not None:
        changes["json_path"] = json_path
    try:
        cfg = dataclasses.replace(cfg, **changes)
    except ValueError as e:
        raise ConfigError(f"command-line option: {e}") from None

    result = ingest(list(sources), cfg, progress=not quiet)
    result.write_jsonl(out)
    if report_path:
        atomic_write_text(report_path, json.dumps(result.report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if not quiet:
        click.echo(result.report.render())
        click.echo(f"\nwrote {len(result.documents)} documents to {out}")
    if not result.documents:
        raise InputError(f"no documents were loaded from {', '.join(sources)} (see the skips above)")
