"""``hybrid index migrate --from KB_DIR --to milvus://...``: copy a FAISS knowledge base to Milvus.

    hybrid index migrate --from .cache/kb --to milvus://milvus:19530/legal_kb --out .cache/kb-milvus
    hybrid index migrate --from .cache/kb --to milvus://     # Milvus Lite: .cache/kb-milvus/milvus.db

No text is embedded again: the vectors are read back from the FAISS index (``indexes.migrate``).
Registered on the ``hybrid index`` group with ``cli.add_command(migrate)``.
"""

from __future__ import annotations

from pathlib import Path

import click

from indexes.config import CONSISTENCY_LEVELS


@click.command("migrate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--from", "source", required=True, type=click.Path(file_okay=False), envvar="HYBRID_KB",
              help="The FAISS knowledge base to copy (env: HYBRID_KB).")
@click.option("--to", "target", required=True, envvar="HYBRID_MILVUS_TARGET",
              metavar="milvus://HOST[:PORT][/COLLECTION] | milvus://PATH.db[/COLLECTION] | http(s)://HOST:PORT",
              help="Where the vectors go: a Milvus server (port 19530 by default) or a Milvus Lite file; "
                   "milvus:// alone is milvus.db inside --out (env: HYBRID_MILVUS_TARGET).")
@click.option("-o", "--out", default=None, type=click.Path(file_okay=False),
              help="The new knowledge base's directory (must be new or empty)  [default: KB_DIR-milvus]")
@click.option("-c", "--collection", default="",
              help="Collection name (overrides one in --to; default: derived from --out).")
@click.option("--index", type=click.Choice(["flat", "hnsw"]), default=None,
              help="Milvus index type for the copy [default: the source's; needed for an IVF-PQ source].")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the Milvus server before a one-line error.")
@click.option("--consistency", type=click.Choice(CONSISTENCY_LEVELS), default="Strong", show_default=True,
              help="The new collection's consistency level (docs/milvus.md).")
@click.option("--lossy", is_flag=True,
              help="Accept vectors read back from 8-bit codes (an IVF-PQ source with ivf_refine sq8).")
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
def migrate(source: str, target: str, out: str | None, collection: str, index: str | None, timeout: float,
            consistency: str, lossy: bool, quiet: bool) -> None:
    """Copy the FAISS knowledge base KB_DIR into a new knowledge base whose vectors live in Milvus,
    without re-embedding: same chunks, ids, texts, metadata, BM25 and embedder."""
    from core.errors import HybridError
    from indexes.migrate import migrate as run
    from indexes.migrate import parse_target

    out_dir = Path(out) if out else Path(str(Path(source)).rstrip("/") + "-milvus")

    def progress(done: int, total: int) -> None:
        if not quiet:
            click.echo(f"\r{done:,}/{total:,} vectors copied", nl=done >= total, err=True)

    try:
        settings = parse_target(target, collection, out_dir, timeout, consistency)
        report = run(source, out_dir, settings, index=index, lossy=lossy, progress=progress)
    except HybridError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(report))
