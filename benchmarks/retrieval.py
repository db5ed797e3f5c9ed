"""Retrieval benchmark on any BEIR-format dataset: this project against LangChain, side by side, in one run.

    nice -n 5 .venv/bin/python benchmarks/retrieval.py --dataset ../shared/data/cranfield
    .venv/bin/python benchmarks/retrieval.py --dataset DIR --embedder hash --out /tmp/r.json   # smoke run
    flock /tmp/heavy.lock .venv/bin/python benchmarks/retrieval.py --dataset ../shared/data/cranfield \
        --backend milvus --out benchmarks/results/retrieval-cranfield-milvus.json   # + the Milvus backend

Systems, all with the same embedder (the bundled all-MiniLM-L6-v2) and the same document texts
(title + newline + text):

- ``hybrid-dense`` / ``hybrid-bm25`` / ``hybrid-hybrid``: this project's ``KnowledgeBase`` (FAISS
  flat + SQLite FTS5 BM25 + reciprocal rank fusion), one build serving all three modes;
- ``milvus-dense`` / ``milvus-hybrid`` (with ``--backend milvus``): the same ``KnowledgeBase`` with
  its vectors in Milvus Lite (``index.backend: milvus``, a ``.db`` file in the KB directory), built
  and timed in the same run, interleaved with the others. Its BM25 is the same SQLite FTS5 as
  ``hybrid-bm25``, so no ``milvus-bm25`` row;
- ``langchain-faiss``: LangChain's FAISS vector store over ``HuggingFaceEmbeddings``;
- ``langchain-bm25``: LangChain's ``BM25Retriever`` (rank_bm25);
- ``langchain-ensemble``: LangChain's ``EnsembleRetriever`` over those two (weighted RRF), with its
  default equal weights and with weights tuned on the dev split.

What is measured, and how:

- quality: nDCG@10, recall@100 and MRR@10 (``hybrid.eval.retrieval``), each document scored by its
  best chunk; on all judged queries and on the held-out test split;
- build seconds: from documents to a searchable index, model load excluded (reported apart);
- latency: the systems answer the same query one after another, in shuffled order, query by query
  (single) and batch by batch (batched, ``--batch-size`` queries per call, ms per query), so that
  load from other jobs on this shared machine falls on all systems alike;
- peak RSS: the growth of resident memory during each system's own phase (its model load, build
  and one pass of queries), sampled; shared libraries are imported first and freed memory is handed
  back to the OS between phases. ``--rss-children`` also rebuilds each system in a fresh process and
  reports that process's kernel high-water mark (``ru_maxrss`` via ``wait4``);
- bf16: whole-document dense retrieval with bf16 vectors versus fp32 vectors of the same model
  (quality of both, cosine between them, encode speed of both);
- fusion study: dense and BM25 lists of this project fused by weighted RRF and by a convex
  combination of min-max normalized scores, parameters chosen on the dev split only, reported on test.

``langchain-community`` is sunset: the anchors come from the optional ``bench`` extra
(``pip install -e '.[bench]'``) and are never runtime dependencies of this project.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._util import (  # noqa: E402
    RESULTS,
    RssSampler,
    latency_summary,
    machine_info,
    release_memory,
    run_child,
    self_peak_rss_mb,
    write_json,
)
from hybrid.eval.retrieval import BeirDataset, doc_ranking, evaluate_run, load_beir  # noqa: E402

from benchmarks._retrieval_fusion import fusion_study  # noqa: E402
from benchmarks._retrieval_langchain import LangChainStack, tune_ensemble_weights  # noqa: E402
from benchmarks._retrieval_report import LANGCHAIN, MILVUS_MODES, OURS, compare, markdown  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# this project


class OurKB:
    """This project's knowledge base over the dataset; ``search(mode, queries, k)`` -> doc id lists."""

    def __init__(self, ds: BeirDataset, embedder: Any, *, bf16: bool | None, workdir: Path, chunk_k_factor: int,
                 chunk_size: int = 256, chunk_overlap: int = 0, batch_size: int = 64, backend: str = "faiss"):
        from indexes.config import IndexConfig
        from indexes.embed import DEFAULT_EMBEDDER, HashEmbedder

        self.ds, self.embedder = ds, embedder
        spec = f"hash:{embedder.dim}" if isinstance(embedder, HashEmbedder) else DEFAULT_EMBEDDER
        self.cfg = IndexConfig(embedder=spec, bf16=bf16, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                               batch_size=batch_size, backend=backend)
        self.workdir = workdir
        self.kb = None
        self.chunk_k_factor = chunk_k_factor
        self.n_chunks = 0

    def build(self) -> float:
        from indexes.kb import KnowledgeBase

        path = self.workdir / f"kb-{self.cfg.backend}-{os.getpid()}-{time.time_ns()}"
        t0 = time.perf_counter()
        self.kb = KnowledgeBase.create(path, self.cfg, embedder=self.embedder)
        self.kb.sync(self.ds.documents())
        elapsed = time.perf_counter() - t0
        self.n_chunks = int(self.kb.stats()["chunks"])
        return elapsed

    def _fetch(self, k: int) -> int:
        # documents longer than one chunk can fill several slots: fetch more chunks than documents
        return min(k * self.chunk_k_factor, self.n_chunks)

    def search(self, mode: str, queries: Sequence[str], k: int) -> list[list[str]]:
        res = self.kb.search_batch(list(queries), k=self._fetch(k), mode=mode)
        return [doc_ranking(((h.chunk.doc_id, h.score) for h in hits), k) for hits in res]

    def search_one(self, mode: str, query: str, k: int) -> list[str]:
        hits = self.kb.search(query, k=self._fetch(k), mode=mode)
        return doc_ranking(((h.chunk.doc_id, h.score) for h in hits), k)

    def scored(self, mode: str, queries: Sequence[str], depth: int) -> list[dict[str, float]]:
        """Doc id -> best chunk score, for the fusion study."""
        res = self.kb.search_batch(list(queries), k=min(depth, self.n_chunks), mode=mode)
        out = []
        for hits in res:
            best: dict[str, float] = {}
            for h in hits:
                best[h.chunk.doc_id] = max(best.get(h.chunk.doc_id, -np.inf), float(h.score))
            out.append(best)
        return out

    def close(self) -> None:
        if self.kb is not None:
            self.kb.close()


# --------------------------------------------------------------------------------------------
# LangChain anchors


# --------------------------------------------------------------------------------------------
# measurement


def get_embedder(spec: str, bf16: bool | None):
    from indexes.embed import get_embedder as _get

    if spec.startswith("hash"):
        emb = _get(spec)
    else:
        emb = _get("default", bf16=bf16)
    emb.warm_up()
    return emb


def time_latency(searchers: dict[str, Callable[[list[str]], Any]], singles: dict[str, Callable[[str], Any]],
                 queries: list[str], batch_size: int, repeats: int, seed: int,
                 n_single: int | None = None) -> dict[str, dict[str, Any]]:
    """Interleaved timing: every query (and batch) is answered by every system in shuffled order."""
    rng = random.Random(seed)
    names = list(singles)
    single = {n: [] for n in names}
    batched = {n: [] for n in names}
    totals = {n: 0.0 for n in names}
    for q in queries[:3]:  # warm every path
        for n in names:
            singles[n](q)
    for q in queries[:n_single]:
        rng.shuffle(names)
        for n in names:
            t0 = time.perf_counter()
            singles[n](q)
            single[n].append(time.perf_counter() - t0)
    batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
    for _ in range(repeats):
        for b in batches:
            rng.shuffle(names)
            for n in names:
                t0 = time.perf_counter()
                searchers[n](b)
                dt = time.perf_counter() - t0
                batched[n].append(dt / len(b))
                totals[n] += dt
    out = {}
    for n in singles:
        out[n] = {"single": latency_summary(single[n]),
                  "batched": {**latency_summary(batched[n]), "batch_size": batch_size,
                              "queries_per_s": round(len(queries) * repeats / totals[n], 1)}}
    return out


# --------------------------------------------------------------------------------------------
# RSS children


def rss_child(args) -> int:
    """Build one system and answer every query once (single and batched); print the build time."""
    ds = load_beir(args.dataset, limit_queries=args.limit_queries, limit_docs=args.limit_docs)
    queries = list(ds.queries.values())
    system = args.rss_child
    work = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    try:
        if system == "hybrid":
            kb = OurKB(ds, get_embedder(args.embedder, None), bf16=None, workdir=work, chunk_k_factor=args.chunk_k_factor,
                       chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, batch_size=args.embed_batch_size)
            build = kb.build()
            for mode in ("dense", "bm25", "hybrid"):
                kb.search(mode, queries, args.k)
                for q in queries[:20]:
                    kb.search_one(mode, q, args.latency_k)
            kb.close()
        else:
            lc = LangChainStack(ds, args.embedder, args.k)
            build = {"langchain-faiss": lc.build_faiss, "langchain-bm25": lc.build_bm25,
                     "langchain-ensemble": lc.build_ensemble}[system]()
            lc.search(system, queries, args.k)
            for q in queries[:20]:
                lc.search_one(system, q, args.latency_k)
        print(json.dumps({"system": system, "build_s": build}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure_rss(args, systems: list[str]) -> dict[str, Any]:
    out = {}
    base = [sys.executable, str(Path(__file__).resolve()), "--dataset", str(args.dataset), "--embedder", args.embedder,
            "--k", str(args.k), "--latency-k", str(args.latency_k), "--chunk-k-factor", str(args.chunk_k_factor),
            "--chunk-size", str(args.chunk_size), "--chunk-overlap", str(args.chunk_overlap),
            "--embed-batch-size", str(args.embed_batch_size)]
    if args.limit_queries:
        base += ["--limit-queries", str(args.limit_queries)]
    if args.limit_docs:
        base += ["--limit-docs", str(args.limit_docs)]
    for system in systems:
        log(f"peak RSS: {system} in a fresh process")
        code, stdout, stderr, rss, wall = run_child(base + ["--rss-child", system], timeout=3600)
        if code != 0:
            tail = stderr.strip().splitlines()[-3:]
            out[system] = {"error": f"child exited {code}: {' | '.join(tail)}"}
            log(f"  failed: {out[system]['error']}")
            continue
        build = json.loads(stdout.strip().splitlines()[-1])["build_s"]
        out[system] = {"peak_rss_mib": round(rss, 1), "child_build_s": round(build, 3), "child_wall_s": round(wall, 1)}
        log(f"  {rss:.0f} MiB")
    return out


# --------------------------------------------------------------------------------------------
# main


def r4(m: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in m.items()}


def quality(run: dict[str, list[str]], ds: BeirDataset, test: list[str]) -> dict[str, Any]:
    all_m = evaluate_run(run, ds.qrels, ndcg_ks=(10,), recall_ks=(100,))
    test_m = evaluate_run({q: run[q] for q in test if q in run}, {q: ds.qrels[q] for q in test},
                          ndcg_ks=(10,), recall_ks=(100,))
    return {"all": r4(all_m.mean), "test_split": r4(test_m.mean)}


def preimport() -> None:
    """Import the libraries both sides share before any RSS phase, so neither is charged for them."""
    import faiss  # noqa: F401
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    try:
        import langchain_core.documents  # noqa: F401
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR-format directory")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default results/retrieval-<dataset>.json)")
    ap.add_argument("--limit-queries", type=int, default=None, help="first N judged queries only")
    ap.add_argument("--limit-docs", type=int, default=None, help="first N documents plus every judged one")
    ap.add_argument("--embedder", default="default", help="'default' (bundled MiniLM) or 'hash' (smoke tests)")
    ap.add_argument("--k", type=int, default=100, help="documents retrieved for quality metrics")
    ap.add_argument("--latency-k", type=int, default=10, help="documents retrieved per query when timing")
    # 512: one chunk for all but the longest Cranfield abstracts. MiniLM reads the first 256 tokens of a
    # chunk (as LangChain's wrapper does of each whole document) while BM25 indexes all of it; splitting
    # at 256 embeds more text and, measured on Cranfield, ranks worse (nDCG@10 dense 0.484 vs 0.505).
    ap.add_argument("--chunk-size", type=int, default=512, help="this project's chunk size in tokens")
    ap.add_argument("--chunk-overlap", type=int, default=0, help="tokens shared by neighbouring chunks")
    # 16: measured on this CPU, bf16 MiniLM encodes 400 Cranfield abstracts in 4.6 s at batch 16,
    # 4.8 s at 32, 6.1 s at 64 (the knowledge base's default) and 6.5 s at 128: less padding per batch.
    ap.add_argument("--embed-batch-size", type=int, default=16, help="this project's texts per embedding batch")
    ap.add_argument("--build-repeats", type=int, default=3,
                    help="builds per system, alternated with LangChain's; the median is reported")
    ap.add_argument("--chunk-k-factor", type=int, default=2, help="chunks fetched per wanted document")
    ap.add_argument("--batch-size", type=int, default=32, help="queries per batched call")
    ap.add_argument("--repeats", type=int, default=1, help="passes over the batches when timing")
    ap.add_argument("--latency-queries", type=int, default=100, help="queries timed one by one (single latency)")
    ap.add_argument("--dev-fraction", type=float, default=0.3, help="share of queries used to tune fusion")
    ap.add_argument("--rss-children", action="store_true",
                    help="also rebuild each system in a fresh child process for its absolute peak RSS (slow)")
    ap.add_argument("--no-bf16-check", action="store_true", help="skip the bf16 vs fp32 quality check")
    ap.add_argument("--backend", choices=("faiss", "milvus"), default="faiss",
                    help="milvus: also build this project's knowledge base on the Milvus backend (Milvus Lite) and "
                         "report it beside the FAISS backend and LangChain (milvus-dense, milvus-hybrid)")
    ap.add_argument("--skip-langchain", action="store_true",
                    help="this project only (when the bench extra is not installed); no comparison is written")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--faiss-threads", type=int, default=None,
                    help="set FAISS's OpenMP threads for every system (default: FAISS's own default, as shipped)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.k <= 0 or args.latency_k <= 0 or args.batch_size <= 0 or args.build_repeats < 1:
        ap.error(f"--k, --latency-k, --batch-size and --build-repeats must be > 0, got {args.k}, {args.latency_k}, "
                 f"{args.batch_size}, {args.build_repeats}")
    if args.faiss_threads is not None:
        import faiss

        faiss.omp_set_num_threads(args.faiss_threads)
    if args.rss_child:
        return rss_child(args)

    from core.errors import HybridError

    try:
        ds = load_beir(args.dataset, limit_queries=args.limit_queries, limit_docs=args.limit_docs)
    except HybridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_path = args.out or RESULTS / f"retrieval-{ds.name}.json"
    k = min(args.k, len(ds.corpus))
    dev, test = ds.split_queries(args.dev_fraction)
    qids = list(ds.queries)
    texts = [ds.queries[q] for q in qids]
    log(f"{ds.name}: {len(ds.corpus)} docs, {len(qids)} judged queries (dev {len(dev)}, test {len(test)})")
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "retrieval", "dataset": ds.name, "docs": len(ds.corpus), "queries": len(qids),
        "dev_queries": len(dev), "test_queries": len(test), "k": k, "latency_k": args.latency_k,
        "embedder": args.embedder, "machine": machine_info(), "dataset_notes": ds.notes,
        "faiss_threads": args.faiss_threads or "default (all cores)",
        "command": "benchmarks/retrieval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "method": {
            "quality": "nDCG@10 (linear gain, trec_eval), recall@100, MRR@10; a document scores by its best chunk; "
                       "'all' = every judged query, 'test_split' = queries not used to tune anything",
            "build_s": "documents -> searchable index, model load excluded; this project persists to disk "
                       "(SQLite + FAISS files, fsync'd); LangChain keeps everything in memory",
            "latency": "systems interleaved query by query in shuffled order, at latency_k results; single = one "
                       "call per query; batched = ms per query inside calls of batch_size queries "
                       "(KnowledgeBase.search_batch vs LangChain Runnable.batch)",
            "peak_rss": "peak_rss_growth_mib = highest RSS reached during the system's phase (its model load, build "
                        "and one query pass) minus the RSS when the phase began, sampled every 20 ms; shared "
                        "libraries are imported before any phase and freed memory is returned to the OS between "
                        "phases, so no system pays for another; the ensemble needs both FAISS and BM25, so its "
                        "figure is their sum plus its own query pass. With --rss-children each system is also "
                        "rebuilt in a fresh process and that process's ru_maxrss is reported",
        },
        "systems": {},
    }
    try:
        preimport()
        # ---- this project (bf16 where the CPU supports it)
        release_memory()
        with RssSampler() as rss_ours:
            t0 = time.perf_counter()
            emb = get_embedder(args.embedder, None)
            load_s = time.perf_counter() - t0
            kb = OurKB(ds, emb, bf16=None, workdir=work, chunk_k_factor=args.chunk_k_factor,
                       chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, batch_size=args.embed_batch_size)
            log(f"this project: building (embedder bf16={getattr(emb, 'bf16', False)})")
            build = kb.build()
            log(f"  built in {build:.1f}s, {kb.n_chunks} chunks")
            runs = {mode: dict(zip(qids, kb.search(mode, texts, k))) for mode in ("dense", "bm25", "hybrid")}
        for mode, run in runs.items():
            result["systems"][f"hybrid-{mode}"] = {
                "build_s": round(build, 3), "build_note": "one build serves all three modes", **quality(run, ds, test),
                "peak_rss_growth_mib": round(rss_ours.peak_delta_mb, 1),
                "peak_rss_note": "one knowledge base (and model) serving all three modes"}
        result["model_load_s"] = {"this_project": round(load_s, 2)}
        result["this_project"] = {"chunks": kb.n_chunks, "bf16": bool(getattr(emb, "bf16", False)),
                                  "chunk_size": kb.cfg.chunk_size, "chunk_overlap": kb.cfg.chunk_overlap,
                                  "embed_batch_size": kb.cfg.batch_size,
                                  "index": kb.cfg.index, "rrf_k": kb.cfg.rrf_k, "fusion_depth": kb.cfg.fusion_depth,
                                  "bm25": "SQLite FTS5, " + kb.cfg.bm25_tokenizer}

        # ---- the same knowledge base on the Milvus backend
        mkb = None
        if args.backend == "milvus":
            release_memory()
            mkb = run_milvus(ds, emb, args, result, qids, texts, test, k, work)

        # ---- LangChain
        lc = None
        if not args.skip_langchain:
            release_memory()
            lc = run_langchain(ds, args.embedder, result, qids, texts, dev, test, k)

        # ---- latency, interleaved
        log("latency: interleaved single and batched queries")
        lk = min(args.latency_k, len(ds.corpus))
        singles = {f"hybrid-{m}": (lambda q, m=m: kb.search_one(m, q, lk)) for m in ("dense", "bm25", "hybrid")}
        batches = {f"hybrid-{m}": (lambda b, m=m: kb.search(m, b, lk)) for m in ("dense", "bm25", "hybrid")}
        for m in MILVUS_MODES if mkb is not None else ():
            singles[f"milvus-{m}"] = lambda q, m=m: mkb.search_one(m, q, lk)
            batches[f"milvus-{m}"] = lambda b, m=m: mkb.search(m, b, lk)
        for name in LANGCHAIN if lc is not None else ():
            singles[name] = lambda q, n=name: lc.search_one(n, q, lk)
            batches[name] = lambda b, n=name: lc.search(n, b, lk)
        lat = time_latency(batches, singles, texts, args.batch_size, args.repeats, args.seed, args.latency_queries)
        for name, v in lat.items():
            result["systems"][name]["latency"] = v
        if lc is not None:
            result["systems"]["langchain-ensemble-tuned"]["latency"] = "same as langchain-ensemble (only weights differ)"

        # ---- fusion study on this project's own dense and BM25 lists
        log("fusion study (parameters chosen on dev only)")
        result["fusion_study"] = fusion_study(kb, ds, dev, test, depth=min(4 * k, kb.n_chunks), k=k)

        # ---- bf16 vs fp32
        if not args.no_bf16_check and not args.embedder.startswith("hash") and getattr(emb, "bf16", False):
            result["bf16_check"] = bf16_check(ds, emb, lc, args, k, qids, texts, test)
        # ---- build time again, alternating systems, so a slow moment on a shared machine hits both
        if lc is not None and args.build_repeats > 1:
            build_repeats(kb, lc, result, args.build_repeats, mkb)
        kb.close()
        if mkb is not None:
            mkb.close()
        del lc
        gc.collect()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # ---- optional: absolute peak RSS, each system in a fresh process
    if args.rss_children:
        lc_systems = [] if args.skip_langchain else list(LANGCHAIN)
        rss = measure_rss(args, ["hybrid", *lc_systems])
        for name in (*OURS, *lc_systems):
            src = rss.get("hybrid" if name in OURS else name, {})
            result["systems"][name]["peak_rss_fresh_process_mib"] = src.get("peak_rss_mib", src.get("error"))
    result["process_peak_rss_mib"] = round(self_peak_rss_mb(), 1)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    result["comparison"] = None if args.skip_langchain else compare(result)
    write_json(out_path, result)
    print(markdown(result))
    log(f"wrote {out_path}")
    return 0


def build_repeats(kb: "OurKB", lc: "LangChainStack", result: dict[str, Any], n: int,
                  mkb: "OurKB | None" = None) -> None:
    """Rebuild every index n-1 more times, alternating (ours, ours on Milvus, theirs, ours ...), and report
    the median build time of the n samples of each system; every sample is kept in the JSON."""
    samples = {"hybrid": [result["systems"]["hybrid-hybrid"]["build_s"]],
               "langchain-faiss": [lc.build_s["langchain-faiss"]], "langchain-bm25": [lc.build_s["langchain-bm25"]]}
    if mkb is not None:
        samples["milvus"] = [result["systems"]["milvus-hybrid"]["build_s"]]
    for i in range(n - 1):
        log(f"build repeat {i + 2}/{n}: this project{' (FAISS, then Milvus)' if mkb else ''}, then LangChain")
        old = kb.kb
        samples["hybrid"].append(kb.build())
        old.close()
        if mkb is not None:
            old = mkb.kb
            old.close()  # before the rebuild: one Milvus Lite server at a time, as in the first build
            samples["milvus"].append(mkb.build())
        samples["langchain-faiss"].append(lc.build_faiss())
        samples["langchain-bm25"].append(lc.build_bm25())
    med = {k: float(np.median(v)) for k, v in samples.items()}
    med["langchain-ensemble"] = med["langchain-faiss"] + med["langchain-bm25"]
    S = result["systems"]
    for name in S:
        key = "hybrid" if name.startswith("hybrid-") else "milvus" if name.startswith("milvus-") else (
            "langchain-ensemble" if name.startswith("langchain-ensemble") else name)
        if key in med:
            S[name]["build_s"] = round(med[key], 3)
            S[name]["build_samples_s"] = [round(x, 3) for x in samples.get(key, [])] or {
                "faiss": [round(x, 3) for x in samples["langchain-faiss"]],
                "bm25": [round(x, 3) for x in samples["langchain-bm25"]]}
    result["build_repeats"] = {"n": n, "order": "alternating: this project (FAISS backend"
                                                + (", then Milvus backend" if mkb is not None else "")
                                                + "), then LangChain FAISS and BM25",
                               "statistic": "median of the n builds"}
    log("  median builds: " + ", ".join(f"{k} {v:.1f}s" for k, v in med.items()))


def run_milvus(ds: BeirDataset, emb: Any, args: argparse.Namespace, result: dict[str, Any], qids: list[str],
               texts: list[str], test: list[str], k: int, work: Path) -> "OurKB":
    """This project's knowledge base with ``index.backend: milvus`` (Milvus Lite), the same settings and
    embedder object as the FAISS one: build, quality of dense and hybrid, the backend's facts."""
    from importlib.metadata import version

    with RssSampler() as rss:
        mkb = OurKB(ds, emb, bf16=None, workdir=work, chunk_k_factor=args.chunk_k_factor, chunk_size=args.chunk_size,
                    chunk_overlap=args.chunk_overlap, batch_size=args.embed_batch_size, backend="milvus")
        log("this project on Milvus Lite: building")
        build = mkb.build()
        log(f"  built in {build:.1f}s, {mkb.n_chunks} chunks")
        runs = {mode: dict(zip(qids, mkb.search(mode, texts, k))) for mode in MILVUS_MODES}
    for mode, run in runs.items():
        result["systems"][f"milvus-{mode}"] = {
            "build_s": round(build, 3), "build_note": "one build serves both modes (model load excluded)",
            **quality(run, ds, test), "peak_rss_growth_mib": round(rss.peak_delta_mb, 1),
            "peak_rss_note": "one knowledge base on Milvus Lite (its embedded server runs in this process); the "
                             "embedding model is the one already loaded for hybrid-*"}
    stats = mkb.kb.stats()
    result["milvus"] = {"server": "Milvus Lite (embedded, a .db file in the KB directory), not a Milvus server",
                        "versions": {m: version(m) for m in ("pymilvus", "milvus-lite")},
                        "index": stats["index"], "consistency": stats["milvus_consistency"],
                        "bm25": "the knowledge base's SQLite FTS5, as hybrid-bm25 (docs/milvus.md)"}
    return mkb


def run_langchain(ds: BeirDataset, embedder_spec: str, result: dict[str, Any], qids: list[str], texts: list[str],
                  dev: list[str], test: list[str], k: int) -> "LangChainStack":
    log("LangChain: building FAISS (HuggingFaceEmbeddings) and BM25")
    with RssSampler() as rss_faiss:
        lc = LangChainStack(ds, embedder_spec, k)
        lc.build_faiss()
        faiss_run = dict(zip(qids, lc.search("langchain-faiss", texts, k)))
    release_memory()
    with RssSampler() as rss_bm25:
        lc.build_bm25()
        bm25_run = dict(zip(qids, lc.search("langchain-bm25", texts, k)))
    release_memory()
    with RssSampler() as rss_ens:
        lc.build_ensemble()
        ens_run = dict(zip(qids, lc.search("langchain-ensemble", texts, k)))
    log(f"  built: FAISS {lc.build_s['langchain-faiss']:.1f}s, BM25 {lc.build_s['langchain-bm25']:.2f}s")
    growth = {"langchain-faiss": rss_faiss.peak_delta_mb, "langchain-bm25": rss_bm25.peak_delta_mb,
              "langchain-ensemble": rss_faiss.peak_delta_mb + rss_bm25.peak_delta_mb + rss_ens.peak_delta_mb}
    for name, run in (("langchain-faiss", faiss_run), ("langchain-bm25", bm25_run), ("langchain-ensemble", ens_run)):
        result["systems"][name] = {"build_s": round(lc.build_s[name], 3), **quality(run, ds, test),
                                   "peak_rss_growth_mib": round(growth[name], 1)}
    result["systems"]["langchain-faiss"]["peak_rss_note"] = "includes its own copy of the embedding model"
    result["systems"]["langchain-ensemble"]["build_note"] = "FAISS build + BM25 build"
    result["systems"]["langchain-ensemble"]["peak_rss_note"] = "FAISS phase + BM25 phase + its own query pass"
    weights, grid = tune_ensemble_weights(lc, ds, dev, k)
    run = dict(zip(qids, lc.search("langchain-ensemble", texts, k, retriever=lc.ensemble(weights))))
    result["systems"]["langchain-ensemble-tuned"] = {
        "build_s": round(lc.build_s["langchain-ensemble"], 3), "weights_bm25_dense": weights,
        "dev_grid_ndcg@10": grid, **quality(run, ds, test)}
    result["model_load_s"]["langchain"] = round(lc.model_load_s, 2)
    return lc


def bf16_check(ds: BeirDataset, emb_bf16, lc: "LangChainStack | None", args, k: int, qids, texts, test) -> dict[str, Any]:
    """Dense retrieval over whole documents with bf16 vectors versus fp32 vectors of the same model.

    The fp32 document vectors are the ones LangChain's FAISS store already computed (the same model
    through sentence-transformers in fp32), so the check costs one bf16 pass over the corpus; without
    LangChain they are computed by this project's embedder with bf16 off.
    """
    docs = ds.documents()
    doc_ids = [d.id for d in docs]
    doc_texts = [d.text for d in docs]
    emb32 = get_embedder(args.embedder, False)
    if lc is not None and lc.store is not None:
        source = "LangChain FAISS store (HuggingFaceEmbeddings, fp32)"
        pos = {d: i for i, d in enumerate(doc_ids)}
        n = lc.store.index.ntotal
        raw = lc.store.index.reconstruct_n(0, n)
        d32 = np.zeros_like(raw)
        for row, ds_id in lc.store.index_to_docstore_id.items():
            d32[pos[lc.store.docstore.search(ds_id).metadata["beir_id"]]] = raw[row]
        t32 = None
    else:
        source = "this project's embedder, bf16 off"
        t0 = time.perf_counter()
        d32 = emb32.embed(doc_texts)
        t32 = time.perf_counter() - t0
    log("bf16 check: embedding the corpus in bf16")
    t0 = time.perf_counter()
    d16 = emb_bf16.embed(doc_texts)
    t16 = time.perf_counter() - t0
    q32, q16 = emb32.embed(texts), emb_bf16.embed(texts)
    d32 /= np.linalg.norm(d32, axis=1, keepdims=True)
    out: dict[str, Any] = {"fp32_doc_vectors_from": source, "docs": len(docs), "queries": len(texts)}
    for label, dv, qv in (("fp32", d32, q32), ("bf16", d16, q16)):
        order = np.argsort(-(qv @ dv.T), axis=1)[:, :k]
        run = {q: [doc_ids[j] for j in row] for q, row in zip(qids, order)}
        out[f"dense_whole_docs_{label}"] = quality(run, ds, test)["all"]
    out["ndcg@10_change_bf16_minus_fp32"] = round(out["dense_whole_docs_bf16"]["ndcg@10"]
                                                  - out["dense_whole_docs_fp32"]["ndcg@10"], 4)
    cos_d = np.sum(d32 * d16, axis=1)
    cos_q = np.sum(q32 * q16, axis=1)
    out["cosine_bf16_vs_fp32"] = {"docs_mean": round(float(cos_d.mean()), 6), "docs_min": round(float(cos_d.min()), 6),
                                  "queries_mean": round(float(cos_q.mean()), 6),
                                  "queries_min": round(float(cos_q.min()), 6)}
    # encode speed, interleaved on the same 200 documents so that machine load falls on both alike
    sample = doc_texts[:200]
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(2):
        for label, e in (("fp32", emb32), ("bf16", emb_bf16)):
            t0 = time.perf_counter()
            e.embed(sample)
            times[label].append(time.perf_counter() - t0)
    out["encode_s_200_docs_best_of_2"] = {lab: round(min(v), 3) for lab, v in times.items()}
    out["encode_speedup_bf16"] = round(min(times["fp32"]) / min(times["bf16"]), 2)
    out["bf16_corpus_encode_s"] = round(t16, 2)
    if t32 is not None:
        out["fp32_corpus_encode_s"] = round(t32, 2)
    del emb32
    gc.collect()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
