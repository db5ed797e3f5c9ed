"""Scale benchmark: Flat vs HNSW vs IVF-PQ on synthetic vectors at 100k and 1M chunks.

    nice -n 5 .venv/bin/python benchmarks/scale.py                       # 100k and 1M, writes results/scale.json
    .venv/bin/python benchmarks/scale.py --sizes 20000 --queries 200 --out /tmp/s.json   # quick look

For each size and index kind: build seconds (IVF training included), memory (the index's size as
FAISS stores it, and the process's resident growth while it is held), single-query latency
p50/p95, batched per-query latency, and recall@10 of the approximate indexes against the exact
Flat index on the same queries, at the knowledge base's default search setting and one higher.

Vectors (dim 384, unit length, inner product = cosine):

- ``gaussian``: isotropic noise, the hardest case for approximate search (every point is almost
  equally far from every other), so its recall is a floor;
- ``lowrank``: a 32-dimensional latent mapped into 384 dimensions plus 10% noise, closer to real
  sentence embeddings, whose variance sits in few directions.

The indexes come from the knowledge base's own ``indexes.vectors.VectorIndex`` with the default
``IndexConfig``, so the numbers describe what ``hybrid index`` builds (an ``IndexIDMap2`` around
the FAISS index). Without the ``indexes`` package it builds the same settings with FAISS directly.

IVF-PQ rows: ``ivfpq`` is PQ scores alone (``ivf_refine=none``, as before refinement existed);
``ivfpq-sq8`` and ``ivfpq-flat`` re-rank the PQ top ``k * ivf_k_factor`` with 8-bit or float32
stored vectors, swept over (nprobe, k_factor). They need the ``indexes`` package; pick them with
``--indexes``, e.g. ``--indexes flat,ivfpq,ivfpq-sq8,ivfpq-flat --sizes 1000000 --append``, which
keeps the other rows already in the file (each index entry records when it was measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._util import (  # noqa: E402
    RESULTS,
    RssSampler,
    current_rss_mb,
    latency_summary,
    machine_info,
    release_memory,
    write_json,
)

DIM = 384
LATENT = 32


def make_vectors(n: int, dim: int, rng: np.random.Generator, kind: str, basis: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors, generated in blocks so that 1M x 384 never needs a float64 copy."""
    out = np.empty((n, dim), dtype=np.float32)
    block = 100_000
    for s in range(0, n, block):
        e = min(n, s + block)
        x = rng.standard_normal((e - s, dim), dtype=np.float32)
        if kind == "lowrank":
            assert basis is not None
            z = rng.standard_normal((e - s, basis.shape[0]), dtype=np.float32)
            x = z @ basis + 0.1 * x
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


def kb_settings():
    """The knowledge base's own defaults (``indexes.config.IndexConfig``), or the same values inline."""
    try:
        from indexes.config import IndexConfig

        return IndexConfig()
    except ImportError:  # a checkout without the indexes package still runs the benchmark
        from types import SimpleNamespace

        return SimpleNamespace(hnsw_m=32, hnsw_ef_construction=80, hnsw_ef_search=64, ivf_nlist=1024, ivf_m=48,
                               ivf_nbits=8, ivf_nprobe=16, ivf_train_size=100_000)


KINDS = ("flat", "hnsw", "ivfpq", "ivfpq-sq8", "ivfpq-flat")
# refined IVF-PQ rows: (nprobe, k_factor) tried, the knowledge base's defaults first
REFINE_SWEEP = ((1, 1), (1, 2), (2, 2))


def refine_of(kind: str) -> str:
    """The ``ivf_refine`` a benchmark kind builds: ``ivfpq`` none, ``ivfpq-sq8`` sq8, ``ivfpq-flat`` flat."""
    return kind.split("-", 1)[1] if kind.startswith("ivfpq-") else "none"


def row_name(kind: str, cfg) -> str:
    """The key of a kind's rows in the results: IVF-PQ kinds built with ``ivf_fastscan`` say so."""
    if kind.startswith("ivfpq") and getattr(cfg, "ivf_fastscan", False):
        return kind.replace("ivfpq", "ivfpq-fastscan", 1)
    return kind


def index_specs(cfg, refine_sweep: list[tuple[int, int]] | None = None) -> dict[str, dict[str, Any]]:
    """Per kind: the stored settings, and the search settings to try (the default first);
    ``refine_sweep`` replaces the (nprobe, k_factor) pairs of the refined IVF-PQ rows."""
    ivf = {"nlist": cfg.ivf_nlist, "pq_m": cfg.ivf_m, "pq_bits": cfg.ivf_nbits, "train_size": cfg.ivf_train_size,
           **({"fastscan": True} if getattr(cfg, "ivf_fastscan", False) else {})}
    refined = {f"ivfpq-{r}": {"settings": {**ivf, "refine": r},
                              "sweep": refine_sweep or [(a * cfg.ivf_nprobe, b * getattr(cfg, "ivf_k_factor", 16))
                                                        for a, b in REFINE_SWEEP]}
               for r in ("sq8", "flat")}
    return {**refined,
        "flat": {"settings": {}, "sweep": [None]},
        "hnsw": {"settings": {"M": cfg.hnsw_m, "efConstruction": cfg.hnsw_ef_construction},
                 "sweep": [cfg.hnsw_ef_search, 2 * cfg.hnsw_ef_search]},
        "ivfpq": {"settings": {**ivf, "refine": "none"}, "sweep": [cfg.ivf_nprobe, 4 * cfg.ivf_nprobe]},
    }


class KBIndex:
    """The knowledge base's ``VectorIndex``, built exactly as ``hybrid index`` builds it."""

    factory = "indexes.vectors.VectorIndex"

    def __init__(self, kind: str, dim: int, cfg):
        import dataclasses

        from indexes.vectors import VectorIndex

        if kind.startswith("ivfpq"):
            cfg = dataclasses.replace(cfg, ivf_refine=refine_of(kind))
        self.kind, self.cfg = kind.split("-")[0], cfg
        self.vi = VectorIndex.new(self.kind, dim, cfg)

    def add(self, vecs: np.ndarray) -> None:
        self.vi.add(np.arange(len(vecs), dtype=np.int64), vecs)  # IVF-PQ trains on a sample first

    def set_search(self, value: int | tuple[int, int] | None) -> str:
        import dataclasses

        if isinstance(value, tuple):
            self.vi.cfg = dataclasses.replace(self.cfg, ivf_nprobe=value[0], ivf_k_factor=value[1])
            return f"nprobe={value[0]},k_factor={value[1]}"
        if self.kind == "hnsw":
            self.vi.cfg = dataclasses.replace(self.cfg, hnsw_ef_search=value)
            return f"efSearch={value}"
        if self.kind == "ivfpq":
            self.vi.cfg = dataclasses.replace(self.cfg, ivf_nprobe=value)
            return f"nprobe={value}"
        return "exact"

    def search(self, q: np.ndarray, k: int):
        return self.vi.search(q, k)

    @property
    def faiss_index(self):
        return self.vi.index


class RawIndex:
    """The same settings built with FAISS directly, for a checkout without ``indexes.vectors``."""

    factory = "faiss, IndexConfig's settings"

    def __init__(self, kind: str, dim: int, cfg):
        import faiss

        self.kind, self.cfg = kind, cfg
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = cfg.hnsw_ef_construction
        else:
            self.quantizer = faiss.IndexFlatIP(dim)  # kept referenced: the IVF index does not own it
            self.index = faiss.IndexIVFPQ(self.quantizer, dim, cfg.ivf_nlist, cfg.ivf_m, cfg.ivf_nbits,
                                          faiss.METRIC_INNER_PRODUCT)

    def add(self, vecs: np.ndarray) -> None:
        if not self.index.is_trained:
            n = len(vecs)
            take = np.random.default_rng(0).choice(n, self.cfg.ivf_train_size, replace=False) \
                if n > self.cfg.ivf_train_size else slice(None)
            self.index.train(np.ascontiguousarray(vecs[take]))
        self.index.add(vecs)

    def set_search(self, value: int | None) -> str:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = value
            return f"efSearch={value}"
        if self.kind == "ivfpq":
            self.index.nprobe = value
            return f"nprobe={value}"
        return "exact"

    def search(self, q: np.ndarray, k: int):
        return self.index.search(q, k)

    @property
    def faiss_index(self):
        return self.index


def make_index(kind: str, dim: int, cfg):
    try:
        return KBIndex(kind, dim, cfg)
    except ImportError:
        if kind not in ("flat", "hnsw", "ivfpq"):
            raise SystemExit(f"error: index {kind} needs the indexes package (indexes.vectors)") from None
        return RawIndex(kind, dim, cfg)


def time_singles(idx, sweep: list[Any], queries: np.ndarray, k: int, n_single: int) -> dict[Any, list[float]]:
    """Single-query latencies of each setting in ``sweep``, interleaved (A, B, C, A, B, C...) so a slow spell
    on the shared machine hits all alike; each times the same ``n_single`` queries, staggered so no query
    is searched twice in a row (its lists and vectors would still be in the CPU caches). One FAISS thread:
    a one-query search gains nothing from OpenMP, and waking a second thread can cost milliseconds."""
    import faiss

    faiss.omp_set_num_threads(1)
    for value in sweep:  # warm caches
        idx.set_search(value)
        idx.search(queries[:4], k)
    out: dict[Any, list[float]] = {value: [] for value in sweep}
    stagger = max(1, n_single // len(sweep))
    for i in range(n_single):
        for j, value in enumerate(sweep):
            q = queries[(i + j * stagger) % n_single]
            idx.set_search(value)
            t0 = time.perf_counter()
            idx.search(q[None, :], k)
            out[value].append(time.perf_counter() - t0)
    return out


def time_batched(idx, queries: np.ndarray, k: int, threads: int) -> tuple[dict[str, float], np.ndarray]:
    """All queries in one search call on ``threads`` FAISS threads, at the current search setting."""
    import faiss

    faiss.omp_set_num_threads(threads)
    idx.search(queries[:4], k)  # warm the thread pool
    t0 = time.perf_counter()
    _, ids = idx.search(queries, k)
    total = time.perf_counter() - t0
    return {"total_s": round(total, 4), "per_query_ms": round(total / len(queries) * 1000, 4),
            "queries_per_s": round(len(queries) / total, 1)}, ids


def index_file_mib(faiss_index) -> float:
    """Size of the index as FAISS writes it: what it needs in memory, without allocator noise."""
    import tempfile

    import faiss

    fd, path = tempfile.mkstemp(suffix=".faiss")
    os.close(fd)
    try:
        faiss.write_index(faiss_index, path)
        return os.path.getsize(path) / 2**20
    finally:
        os.unlink(path)


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = sum(len(set(a[:k].tolist()).intersection(e[:k].tolist())) for a, e in zip(approx, exact))
    return hits / (k * len(exact))


def query_vectors(args, rng: np.random.Generator, basis: np.ndarray | None) -> np.ndarray:
    """The query vectors: by default the next draws of the corpus's stream ``rng``; with ``--query-seed``
    a stream of their own (same latent basis, other points), a held-out set to choose search settings
    on, so that the reported run's queries were not the ones the settings were tuned with."""
    qrng = rng if args.query_seed is None else np.random.default_rng([args.seed, args.query_seed])
    return make_vectors(args.queries, DIM, qrng, args.data, basis)


def run_size(n: int, args, cfg, log: Callable[[str], None], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure every kind in ``args.indexes`` at ``n`` vectors; ``previous`` (this size's entry from an
    earlier run) fills in the kinds not measured now, marked ``kept_from_earlier_run``."""
    rng = np.random.default_rng(args.seed)
    basis = make_vectors(LATENT, DIM, rng, "gaussian") if args.data == "lowrank" else None
    t0 = time.perf_counter()
    data = make_vectors(n, DIM, rng, args.data, basis)
    queries = query_vectors(args, rng, basis)
    log(f"n={n}: generated {data.nbytes / 2**20:.0f} MiB of {args.data} vectors in {time.perf_counter() - t0:.1f}s")
    specs = index_specs(cfg, args.refine_sweep)
    result: dict[str, Any] = {"n": n, "dim": DIM, "data_mib": round(data.nbytes / 2**20, 1),
                              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "indexes": {}}
    exact_ids = None
    kept = (previous or {}).get("indexes", {})
    for kind in args.indexes:
        spec = specs[kind]
        release_memory()
        rss_before = current_rss_mb()
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            idx = make_index(kind, DIM, cfg)
            idx.add(data)
            build_s = time.perf_counter() - t0
        held_mb = current_rss_mb() - rss_before
        entry: dict[str, Any] = {
            "factory": idx.factory, "settings": spec["settings"],
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "build_s": round(build_s, 2),
            "index_mib": round(index_file_mib(idx.faiss_index), 1), "rss_growth_mib": round(held_mb, 1),
            "rss_peak_growth_during_build_mib": round(sampler.peak_delta_mb, 1), "search": [],
        }
        log(f"n={n} {row_name(kind, cfg)}: built in {build_s:.1f}s, index {entry['index_mib']:.0f} MiB, RSS +{held_mb:.0f} MiB")
        singles = time_singles(idx, spec["sweep"], queries, args.k, args.single)
        for value in spec["sweep"]:
            label = idx.set_search(value)
            batched, ids = time_batched(idx, queries, args.k, args.threads)
            single = latency_summary(singles[value])
            row: dict[str, Any] = {"search_setting": label, "single": single, "batched": batched}
            if kind == "flat":
                exact_ids = ids
            elif exact_ids is not None:
                row["recall_at_10"] = round(recall_at_k(ids, exact_ids, 10), 4)
            entry["search"].append(row)
            log(f"n={n} {row_name(kind, cfg)} {label}: single p95 {single['p95_ms']:.2f} ms, batched {batched['per_query_ms']:.3f} ms/q"
                + (f", recall@10 {row['recall_at_10']:.3f}" if "recall_at_10" in row else ""))
        entry["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["indexes"][row_name(kind, cfg)] = entry
        del idx
        release_memory()
    for kind, entry in kept.items():  # rows of this size measured by an earlier run and not re-measured now
        if kind not in result["indexes"]:
            result["indexes"][kind] = {"measured_at": previous.get("measured_at"),
                                       "loadavg_at_start": previous.get("loadavg_at_start"),
                                       **entry, "kept_from_earlier_run": True}
    del data
    release_memory()
    return result


def markdown_table(results: dict[str, Any]) -> str:
    lines = [f"Vectors: {results['data']} (dim {results['dim']}); {results['queries']} queries; "
             f"FAISS threads {results['faiss_threads']}; {results['machine']['note']}.", "",
             "| vectors | index | search setting | build s | index MiB | RSS growth MiB | single p50 ms "
             "| single p95 ms | batched ms/query | recall@10 vs Flat |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in results["sizes"]:
        for kind, e in size["indexes"].items():
            for row in e["search"]:
                rec = row.get("recall_at_10")
                lines.append(
                    f"| {size['n']:,} | {kind} | {row['search_setting']} | {e['build_s']:.1f} | {e['index_mib']:.0f} "
                    f"| {e['rss_growth_mib']:.0f} | {row['single']['p50_ms']:.2f} | {row['single']['p95_ms']:.2f} "
                    f"| {row['batched']['per_query_ms']:.3f} | {'1 (exact)' if rec is None else f'{rec:.3f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated corpus sizes")
    ap.add_argument("--indexes", default="flat,hnsw,ivfpq",
                    help=f"comma-separated subset of {','.join(KINDS)} (refined IVF-PQ: ivfpq-sq8, ivfpq-flat)")
    ap.add_argument("--queries", type=int, default=1000, help="query vectors (batched search and recall)")
    ap.add_argument("--single", type=int, default=200, help="queries timed one by one for p50/p95")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--data", choices=["gaussian", "lowrank"], default="gaussian")
    ap.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads for builds and batched search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--query-seed", type=int, default=None,
                    help="draw the queries from a separate stream with this seed (a held-out set for choosing "
                         "search settings; default: after the corpus, from --seed's stream)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default results/scale[-lowrank].json)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="IndexConfig override for every index built (repeatable), e.g. --set ivf_fastscan=true")
    ap.add_argument("--refine-sweep", default=None,
                    help="nprobe:k_factor pairs for the refined IVF-PQ rows, e.g. 16:16,32:16 "
                         "(default: the IndexConfig defaults, then k_factor x2, then both x2)")
    ap.add_argument("--append", action="store_true",
                    help="keep the sizes already in --out (same data kind); at a size measured again, keep the "
                         "index rows not in --indexes (marked kept_from_earlier_run)")
    args = ap.parse_args(argv)
    args.indexes = [s.strip() for s in args.indexes.split(",") if s.strip()]
    unknown = [i for i in args.indexes if i not in KINDS]
    if unknown:
        ap.error(f"unknown index kind(s) {unknown}; choose from {','.join(KINDS)}")
    if "flat" in args.indexes:  # recall needs the exact answers first
        args.indexes = ["flat"] + [i for i in args.indexes if i != "flat"]
    try:
        args.refine_sweep = [(int(a), int(b)) for a, b in (p.split(":") for p in args.refine_sweep.split(","))] \
            if args.refine_sweep else None
    except ValueError:
        ap.error(f"--refine-sweep must look like 16:16,32:16 (nprobe:k_factor), got {args.refine_sweep!r}")
    if args.refine_sweep and any(a < 1 or b < 1 for a, b in args.refine_sweep):
        ap.error(f"--refine-sweep values must be >= 1, got {args.refine_sweep}")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(s < 1000 for s in sizes):
        ap.error(f"sizes must be >= 1000, got {sizes}")
    if not 0 < args.single <= args.queries:
        ap.error(f"--single must be in [1, --queries={args.queries}], got {args.single}")
    out_path = args.out or RESULTS / ("scale.json" if args.data == "gaussian" else f"scale-{args.data}.json")

    import faiss

    faiss.omp_set_num_threads(args.threads)
    cfg = kb_settings()
    if args.set:
        try:
            from core.config import load_config
            from indexes.config import IndexConfig
        except ImportError:
            ap.error("--set needs the indexes package")
        try:
            cfg = load_config(IndexConfig, None, args.set)
        except Exception as e:  # noqa: BLE001 - ConfigError: one line naming the key
            ap.error(str(e))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out: dict[str, Any] = {
        "benchmark": "scale", "data": args.data, "dim": DIM, "k": args.k, "queries": args.queries,
        "single_queries_timed": args.single, "faiss_threads": args.threads, "machine": machine_info(),
        **({"query_seed": args.query_seed} if args.query_seed is not None else {}),
        "method": ("build_s = new index + add (IVF-PQ training included); index_mib = the index as "
                   "faiss.write_index stores it; rss_growth_mib = resident growth of the process while the "
                   "index is held; single = one search call per query on one FAISS thread, p50/p95 over the timed queries, "
                   "the index's search settings interleaved (staggered, so no query is searched twice in a row); "
                   "batched = all queries in one call, divided by their count; recall_at_10 = overlap of the "
                   "top 10 with the exact Flat top 10 for the same queries"),
        "command": "benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "sizes": [],
    }
    previous: dict[int, dict[str, Any]] = {}
    if args.append and out_path.is_file():
        old = json.loads(out_path.read_text())
        if old.get("data") != args.data:
            ap.error(f"--append: {out_path} holds {old.get('data')!r} vectors, not {args.data!r}")
        out["sizes"] = [sz for sz in old.get("sizes", []) if sz["n"] not in sizes]
        previous = {sz["n"]: sz for sz in old.get("sizes", []) if sz["n"] in sizes}
        if old.get("command"):
            out["earlier_commands"] = old.get("earlier_commands", []) + [old["command"]]
    t0 = time.perf_counter()
    for n in sizes:
        out["sizes"].append(run_size(n, args, cfg, log, previous.get(n)))
        out["sizes"].sort(key=lambda sz: sz["n"])
        out["total_s"] = round(time.perf_counter() - t0, 1)
        out["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(out_path, out)  # after each size, so a long 1M run keeps the 100k figures
    print(markdown_table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
