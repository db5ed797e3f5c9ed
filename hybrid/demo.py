"""``make demo``: build a knowledge base from the legal sample corpus and answer a few searches.

One small function per step, so later steps (tune, route, answer) can be added beside them::

    docs = ingest_corpus(LEGAL_CORPUS)
    kb = build_kb(docs, cache_root() / "kb")
    show_searches(kb, QUERIES)

Everything runs offline on the CPU; the second run reuses the knowledge base (nothing is re-embedded).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
LEGAL_CORPUS = ROOT / "apps" / "legal" / "corpus"

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("How much notice must a landlord give before raising the rent?", {}),
    ("What is the court fee to appeal a small claims decision?", {}),
    ("When does the limitation period start again after a part payment?", {}),
]


def cache_root() -> Path:
    """``.cache/demo`` in the project (``$HYBRID_DEMO_DIR`` to put it elsewhere)."""
    p = Path(os.environ.get("HYBRID_DEMO_DIR") or ROOT / ".cache" / "demo")
    p.mkdir(parents=True, exist_ok=True)
    return p


def say(text: str = "", *, bold: bool = False) -> None:
    if bold and sys.stdout.isatty():
        text = f"\033[1m{text}\033[0m"
    print(text, flush=True)


def ingest_corpus(corpus: Path = LEGAL_CORPUS) -> list:
    """Load and clean every file of the corpus with the connectors."""
    from connectors import ingest

    if not corpus.is_dir():
        raise SystemExit(f"error: the sample corpus is missing: {corpus}")
    say(f"1. Ingest  {corpus.relative_to(ROOT) if corpus.is_relative_to(ROOT) else corpus}", bold=True)
    t0 = time.perf_counter()
    result = ingest([corpus], progress=True)
    r = result.report
    skipped = len(getattr(r, "skips", []) or [])
    say(f"   {len(result.documents)} documents from {len({d.metadata.get('source') for d in result.documents})} files"
        f" ({skipped} skipped) in {time.perf_counter() - t0:.1f}s")
    return result.documents


def build_kb(docs: Sequence, path: Path):
    """Create (first run) or sync (later runs) the knowledge base; prints what was embedded."""
    from indexes.config import IndexConfig
    from indexes.kb import KnowledgeBase

    say(f"2. Index   {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", bold=True)
    kb = KnowledgeBase.create(path, IndexConfig(), exist_ok=True)
    report = kb.sync(docs, prune=True, progress=True)
    s = kb.stats()
    say(f"   {report}")
    say(f"   {s['documents']} documents, {s['chunks']} chunks, {s['dim']}-d {s['embedder'].split('/')[-1]} "
        f"vectors in FAISS {s['index']} + SQLite FTS5 BM25, {s['bytes'] / 1e6:.1f} MB")
    return kb


def show_searches(kb, queries: Sequence[tuple[str, dict[str, Any]]] = QUERIES, k: int = 3) -> None:
    """Hybrid (dense + BM25, fused by reciprocal rank) search for each query, top ``k`` with snippets."""
    from hybrid.cli.search import format_hit

    say("3. Search  (hybrid: dense + BM25, reciprocal rank fusion)", bold=True)
    t0 = time.perf_counter()
    kb.embedder.warm_up()  # load the model once up front, so the per-query times below are search times
    say(f"   embedder ready in {time.perf_counter() - t0:.1f}s")
    for query, filters in queries:
        t0 = time.perf_counter()
        hits = kb.search(query, k=k, filters=filters or None, mode="hybrid")
        ms = (time.perf_counter() - t0) * 1000
        say()
        say(f"   Q: {query}   ({ms:.0f} ms)", bold=True)
        for h in hits:
            say("   " + format_hit(h).replace("\n", "\n   "))


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.ERROR)  # skipped files are summarized, not logged one by one
    from hybrid.errors import HybridError

    t0 = time.perf_counter()
    try:
        docs = ingest_corpus()
        with build_kb(docs, cache_root() / "kb") as kb:
            show_searches(kb)
    except HybridError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    say()
    say(f"done in {time.perf_counter() - t0:.1f}s. Try: .venv/bin/hybrid search \"tenant deposit\" "
        f"--kb {cache_root().relative_to(ROOT) if cache_root().is_relative_to(ROOT) else cache_root()}/kb")


if __name__ == "__main__":
    main()
