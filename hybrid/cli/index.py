"""``hybrid index build|sync|rebuild|stats|migrate``: build and maintain a knowledge base."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from core.registry import Registry
from hybrid.cli.options import config_option, set_option

kb_option = click.option("--kb", "kb_dir", required=True, type=click.Path(file_okay=False), envvar="HYBRID_KB",
                         help="Knowledge-base directory (env: HYBRID_KB).")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bars or ingest summary.")
sources_arg = click.argument("sources", nargs=-1, metavar="PATH|URL|docs.jsonl...")


def _is_docs_jsonl(path: Path) -> bool:
    """True for a file of ``Document.to_dict()`` rows (what ``hybrid ingest --out`` writes)."""
    from core.errors import InputError
    from core.io import read_jsonl

    if path.suffix != ".jsonl" or not path.is_file():
        return False
    rows = read_jsonl(path, errors="replace")
    try:
        _, row = next(rows)  # the first row decides
    except (StopIteration, InputError):
        return False
    finally:
        rows.close()
    return isinstance(row, dict) and {"id", "text"} <= set(row) and isinstance(row.get("metadata", {}), dict)


def split_sources(sources: tuple[str, ...]) -> tuple[list[Any], list[str]]:
    """(documents of the docs.jsonl files among ``sources``, read as they are; the other sources)."""
    from core.errors import InputError
    from core.io import read_jsonl
    from core.types import Document

    docs: list[Document] = []
    rest: list[str] = []
    for s in sources:
        p = Path(s)
        if _is_docs_jsonl(p):
            for n, row in read_jsonl(p):
                try:
                    docs.append(Document.from_dict(row))
                except (KeyError, TypeError, ValueError) as e:
                    raise InputError(f"{p}:{n}: not a document row ({e})") from None
        else:
            rest.append(s)
    return docs, rest


def load_sources(sources: tuple[str, ...], quiet: bool = False) -> list[Any]:
    """Documents from docs.jsonl files (read as they are) and any other path or URL (via connectors.ingest)."""
    from core.errors import InputError

    docs, rest = split_sources(sources)
    if rest:
        from connectors import ingest

        result = ingest(rest, progress=not quiet)
        if not quiet:
            click.echo(result.report.render(), err=True)
        docs.extend(result.documents)
    if not docs:
        raise InputError(f"no documents were loaded from {', '.join(sources)}")
    return docs


@contextlib.contextmanager
def writer_lock(kb_dir: str):
    """Hold the knowledge base's writer lock from before the (slow) ingest to the end of the write,
    so a second sync fails at once instead of after reading all its sources. A directory that does
    not exist yet has no lock to take (its create takes one)."""
    from core.errors import LockedError
    from indexes.store import WriteLock, lock_holder

    path = Path(kb_dir)
    if not path.is_dir():
        yield
        return
    try:
        lock = WriteLock(path).__enter__()
    except LockedError:
        pid = lock_holder(path)
        raise LockedError(f"another sync holds the lock on {kb_dir}" + (f" (pid {pid})" if pid else "")
                          + "; nothing was read or written, try again when it finishes") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _config(config_path: str | None, overrides: tuple[str, ...]):
    from core.config import load_config
    from indexes.config import IndexConfig

    return load_config(IndexConfig, config_path, list(overrides))


@click.group("index", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build and maintain a knowledge base (FAISS vectors + BM25 + SQLite metadata).

    \b
    Examples:
      hybrid index build --kb .cache/kb apps/legal/corpus/
      hybrid index build --kb .cache/kb docs.jsonl --set index=hnsw
      hybrid index sync --kb .cache/kb apps/legal/corpus/ --prune
      hybrid index stats --kb .cache/kb
      hybrid index rebuild --kb .cache/kb              # from the stored documents
      hybrid index migrate --from .cache/kb --to milvus://   # copy to Milvus, no re-embedding
    """


@dataclass(frozen=True)
class BuildJob:
    """What ``hybrid index build`` was asked, handed to the chosen engine."""

    kb_dir: str
    sources: tuple[str, ...]
    cfg: Any  # IndexConfig
    prune: bool
    quiet: bool
    ray_address: str = ""
    ray_timeout: float = 30.0
    ray_actors: int = 0


# engine name -> function(BuildJob) that builds and prints the one-line result; a new engine is one entry
ENGINES: Registry[Callable[[BuildJob], None]] = Registry("build engine")


@ENGINES.register("local")
def _build_local(job: BuildJob) -> None:
    """This process ingests, chunks and embeds (the connectors' parse pool still uses worker processes)."""
    from indexes.kb import KnowledgeBase
    from indexes.store import MANIFEST

    kb_dir = job.kb_dir
    exists = (Path(kb_dir) / MANIFEST).exists()
    # a new knowledge base has no lock to take yet (create takes it); leave a plain directory untouched
    with writer_lock(kb_dir) if exists else contextlib.nullcontext():
        # an existing knowledge base is opened (and its settings checked) before the slow ingest;
        # a new one is created only once there are documents, so a failed ingest leaves nothing behind
        kb = KnowledgeBase.open_or_create(kb_dir, job.cfg) if exists else None
        docs = load_sources(job.sources, job.quiet)
        # refuses settings that differ from an existing knowledge base's (only `rebuild` changes those)
        kb = kb or KnowledgeBase.open_or_create(kb_dir, job.cfg)
        _sync(kb, kb_dir, docs, job.prune, job.quiet)


@ENGINES.register("ray")
def _build_ray(job: BuildJob) -> None:
    """Ray Data parses, chunks and embeds (indexes.ray_build); this process writes, as ``local`` does."""
    from indexes import ray_build
    from indexes.kb import KnowledgeBase
    from indexes.store import MANIFEST

    ray_build.import_ray()  # a missing Ray is one line before any work
    options = ray_build.RayOptions(address=job.ray_address, connect_timeout_s=job.ray_timeout,
                                   actors=job.ray_actors, progress=not job.quiet)
    kb_dir = job.kb_dir
    exists = (Path(kb_dir) / MANIFEST).exists()
    with writer_lock(kb_dir) if exists else contextlib.nullcontext():
        kb = KnowledgeBase.open_or_create(kb_dir, job.cfg) if exists else None  # settings checked first
        docs, rest = split_sources(job.sources)
        stats = ray_build.RayStats()
        report, ingest_report = ray_build.build(
            kb or (lambda: KnowledgeBase.open_or_create(kb_dir, job.cfg)), rest, options,
            documents=docs, prune=job.prune, stats=stats)
        if kb is not None:
            kb.close()
    if ingest_report is not None and not job.quiet:
        click.echo(ingest_report.render(), err=True)
    if not job.quiet and stats.actor_chunks:
        speeds = ", ".join(f"{v:.0f}" for v in stats.per_actor_chunks_per_s().values())
        click.echo(f"ray: parse {stats.parse_s:.1f}s, chunk+embed {stats.embed_s:.1f}s on "
                   f"{len(stats.actor_chunks)} actors (chunks/s each while embedding: {speeds})", err=True)
    click.echo(f"{kb_dir}: {report}")


@cli.command("build")
@kb_option
@sources_arg
@config_option
@set_option
@click.option("--prune", is_flag=True, help="Delete stored documents that are not in SOURCES.")
@click.option("--engine", type=click.Choice(ENGINES.names()), default="local", show_default=True,
              envvar="HYBRID_ENGINE",
              help="local: this process; ray: parse, chunk and embed on Ray Data (pip install 'hybrid[ray]') "
                   "(env: HYBRID_ENGINE).")
@click.option("--ray-address", default="", envvar="HYBRID_RAY_ADDRESS", metavar="auto|ray://HOST:PORT|HOST:PORT",
              help="--engine ray: join this cluster; empty starts a local Ray (env: HYBRID_RAY_ADDRESS).")
@click.option("--ray-timeout", type=float, default=30.0, show_default=True,
              help="--engine ray: seconds to wait for the cluster before failing.")
@click.option("--ray-actors", type=int, default=0, show_default=True,
              help="--engine ray: embedding actors (one model load each); 0 = one per CPU of the cluster.")
@quiet_option
def build(kb_dir: str, sources: tuple[str, ...], config_path: str | None, overrides: tuple[str, ...],
          prune: bool, engine: str, ray_address: str, ray_timeout: float, ray_actors: int, quiet: bool) -> None:
    """Create the knowledge base if needed, then sync SOURCES into it.

    \b
    On Ray (docs/ingest.md, "Building on Ray"):
      hybrid index build --engine ray --kb .cache/kb docs/                     # a local Ray
      hybrid index build --engine ray --ray-address auto --kb .cache/kb docs/  # this node's cluster
    """
    cfg = _config(config_path, overrides)
    if not sources:
        raise click.UsageError("give at least one PATH, URL or docs.jsonl")
    if engine != "ray" and (ray_address or ray_actors):
        raise click.UsageError("--ray-address and --ray-actors need --engine ray")
    ENGINES.get(engine)(BuildJob(kb_dir, sources, cfg, prune, quiet, ray_address, ray_timeout, ray_actors))


def _sync(kb, kb_dir: str, docs, prune: bool, quiet: bool) -> None:
    with kb:
        report = kb.sync(docs, prune=prune, progress=not quiet)
        click.echo(f"{kb_dir}: {report}")


@cli.command("sync")
@kb_option
@sources_arg
@click.option("--prune", is_flag=True, help="Delete stored documents that are not in SOURCES.")
@quiet_option
def sync(kb_dir: str, sources: tuple[str, ...], prune: bool, quiet: bool) -> None:
    """Add new, re-embed changed and (with --prune) delete gone documents of an existing knowledge base."""
    from indexes.kb import KnowledgeBase

    if not sources:
        raise click.UsageError("give at least one PATH, URL or docs.jsonl")
    kb = KnowledgeBase.open(kb_dir)  # fail on a missing/corrupt KB before the (slow) ingest
    with writer_lock(kb_dir):  # and on another writer, too
        docs = load_sources(sources, quiet)
        _sync(kb, kb_dir, docs, prune, quiet)


@cli.command("rebuild")
@kb_option
@sources_arg
@config_option
@set_option
@quiet_option
def rebuild(kb_dir: str, sources: tuple[str, ...], config_path: str | None, overrides: tuple[str, ...],
            quiet: bool) -> None:
    """Build a fresh generation from SOURCES, or from the stored documents when none are given.

    Use it after a CorruptKnowledgeBaseError, or to change chunking, embedder or index kind
    (--set index=hnsw). Settings not given keep their stored values.
    """
    from core.config import load_config
    from indexes.config import IndexConfig
    from indexes.config import stored_config
    from indexes.kb import KnowledgeBase, _read_manifest

    base: dict[str, Any] = {}
    try:
        base = stored_config(_read_manifest(Path(kb_dir)).get("config"))  # an older manifest's keys filled
    except Exception:  # noqa: BLE001 - a corrupt manifest is why people rebuild: start from defaults
        base = {}
    cfg = load_config(IndexConfig, config_path, list(overrides), data=base)
    with writer_lock(kb_dir):
        docs = load_sources(sources, quiet) if sources else None
        kb, report = KnowledgeBase.rebuild(kb_dir, docs, cfg, progress=not quiet)
    with kb:
        click.echo(f"{kb_dir}: rebuilt: {report}")


@cli.command("stats")
@kb_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(kb_dir: str, as_json: bool) -> None:
    """Counts, settings and size of a knowledge base."""
    from indexes.kb import KnowledgeBase

    with KnowledgeBase.open(kb_dir, readonly=True) as kb:
        s = kb.stats()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    width = max(len(k) for k in s)
    for k, v in s.items():
        if isinstance(v, (list, dict)):
            v = ", ".join(v) if isinstance(v, list) else ", ".join(f"{a}={b}" for a, b in v.items())
        if k == "bytes":
            v = f"{v:,}"
        click.echo(f"{k:<{width}}  {v}")


# ``hybrid index migrate`` lives in its own module (indexes.migrate does the work)
from hybrid.cli.index_migrate import migrate as _migrate  # noqa: E402

cli.add_command(_migrate)
