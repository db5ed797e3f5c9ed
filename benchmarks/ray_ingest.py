"""Ray build benchmark: the single-process build against ``--engine ray`` on a local Ray, same corpus, one run.

    .venv/bin/pip install -e '.[ray]'
    flock /tmp/heavy.lock .venv/bin/python benchmarks/ray_ingest.py   # writes benchmarks/results/ray-ingest.json

The corpus is the Covid-QA articles (``../shared/data/covidqa``, one ``.txt`` file per article, the
first ``--articles``) plus the shared sample documents (``../shared/data/docs``: PDFs, Office files,
HTML and the broken files of ``edge/``, so parsing and skips are part of the run). Both builds use
the real MiniLM embedder and the default ``IndexConfig``.

Each build runs in its own child process, one after the other: ``local`` is what ``hybrid index
build`` does (connectors.ingest, then KnowledgeBase.sync); ``ray`` is ``indexes.ray_build.build``
on a local Ray started in that child (its start-up is counted: it is part of what a user waits
for). Both report their phases, the embedder's own throughput (chunks per second inside
``embed()``: for ``local`` one process with all cores, for ``ray`` each actor with one core), and a
hash of the sorted chunk ids, which must be equal.

The expected speed-up per added node is a model, not a measurement (there is one machine here):
the stages that run on the cluster (parse, chunk + embed) shrink with the actors, the driver's
stages (walk, clean and deduplicate, write) do not. See ``projection`` in the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._util import RESULTS, ROOT, machine_info, run_child, write_json  # noqa: E402

SHARED = Path(os.environ.get("HYBRID_SHARED", ROOT.parent / "shared"))
COVIDQA = SHARED / "data" / "covidqa" / "covidqa-squad2.json"
DOCS = SHARED / "data" / "docs"


def build_corpus(dest: Path, articles: int) -> dict[str, Any]:
    """Covid-QA articles as text files plus a copy of the sample documents; what it holds."""
    data = json.loads(COVIDQA.read_text())["data"]
    contexts = list(dict.fromkeys(p["context"] for a in data for p in a["paragraphs"]))[:articles]
    (dest / "covidqa").mkdir(parents=True)
    for i, text in enumerate(contexts):
        (dest / "covidqa" / f"article-{i:03d}.txt").write_text(text, encoding="utf-8")
    shutil.copytree(DOCS, dest / "docs")
    return {"covidqa_articles": len(contexts), "covidqa_chars": sum(map(len, contexts)),
            "sample_files": sum(1 for p in DOCS.rglob("*") if p.is_file())}


class TimedEmbedder:
    """The real embedder with the seconds spent inside ``embed()`` counted (the local build's own rate)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.seconds = 0.0
        self.texts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, texts: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = self.inner.embed(texts, **kw)
        self.seconds += time.perf_counter() - t0
        self.texts += len(texts)
        return out


def _ids_digest(kb_dir: Path) -> tuple[int, str]:
    from indexes.kb import KnowledgeBase

    with KnowledgeBase.open(kb_dir, readonly=True) as kb:
        ids = sorted(r[0] for r in kb._state.db.execute("SELECT chunk_id FROM chunks"))
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def child_local(corpus: Path, kb_dir: Path) -> dict[str, Any]:
    """What `hybrid index build` does, in phases."""
    import connectors
    from indexes.config import IndexConfig
    from indexes.embed import get_embedder
    from indexes.kb import KnowledgeBase

    t0 = time.perf_counter()
    result = connectors.ingest([str(corpus)])
    t_ingest = time.perf_counter() - t0
    cfg = IndexConfig()
    emb = TimedEmbedder(get_embedder(cfg.embedder, bf16=cfg.bf16))
    t1 = time.perf_counter()
    emb.warm_up()
    t_load = time.perf_counter() - t1
    with KnowledgeBase.open_or_create(kb_dir, cfg, embedder=emb) as kb:
        t2 = time.perf_counter()
        report = kb.sync(result.documents)
        t_sync = time.perf_counter() - t2
    total = time.perf_counter() - t0
    n, digest = _ids_digest(kb_dir)
    return {"total_s": round(total, 2), "ingest_s": round(t_ingest, 2), "model_load_s": round(t_load, 2),
            "chunk_embed_write_s": round(t_sync, 2), "embed_s": round(emb.seconds, 2),
            "embed_chunks_per_s": round(emb.texts / emb.seconds, 1) if emb.seconds else None,
            "chunks": n, "chunk_ids_sha256": digest, "documents": report.added,
            "skips": result.report.skip_counts(), "duplicates": len(result.report.duplicates),
            "torch_threads": _torch_threads()}


def child_ray(corpus: Path, kb_dir: Path, actors: int) -> dict[str, Any]:
    """`hybrid index build --engine ray` on a local Ray started here (start-up included)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from indexes import ray_build
    from indexes.config import IndexConfig
    from indexes.kb import KnowledgeBase

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING", log_to_driver=False)
    t_init = time.perf_counter() - t0
    stats = ray_build.RayStats()
    cfg = IndexConfig()
    t1 = time.perf_counter()
    report, ingest_report = ray_build.build(lambda: KnowledgeBase.open_or_create(kb_dir, cfg), [str(corpus)],
                                            ray_build.RayOptions(actors=actors), stats=stats)
    t_build = time.perf_counter() - t1
    cpus = int(ray.cluster_resources().get("CPU", 0))
    ray.shutdown()
    total = time.perf_counter() - t0
    n, digest = _ids_digest(kb_dir)
    per_actor = stats.per_actor_chunks_per_s()
    return {"total_s": round(total, 2), "ray_start_s": round(t_init, 2),
            "walk_parse_s": round(stats.parse_s, 2), "clean_dedup_s": round(stats.clean_s, 2),
            "chunk_embed_s": round(stats.embed_s, 2),
            "write_and_rest_s": round(t_build - stats.parse_s - stats.clean_s - stats.embed_s, 2),
            "actors": len(per_actor), "cluster_cpus": cpus,
            "per_actor_embed_chunks_per_s": {f"actor{i}": round(v, 1) for i, v in enumerate(per_actor.values())},
            "per_actor_chunks": list(stats.actor_chunks.values()),
            "chunks": n, "chunk_ids_sha256": digest, "documents": report.added,
            "skips": ingest_report.skip_counts(), "duplicates": len(ingest_report.duplicates)}


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # noqa: BLE001
        return None


def projection(local: dict[str, Any], dist: dict[str, Any], nodes: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict[str, Any]:
    """Expected build time of this corpus on N nodes like this one, from the measured figures.

    Per node: ``cluster_cpus`` actors at the measured per-actor rate embed the chunks; the parse
    stage scales the same way; the driver's part (Ray start-up, walk, clean, write) stays. An
    optimistic model: no network cost, the files read once by the driver, one actor per core."""
    rates = list(dist["per_actor_embed_chunks_per_s"].values())
    per_actor = sum(rates) / len(rates)
    per_node = per_actor * dist["cluster_cpus"]
    chunks = dist["chunks"]
    # what the embed stage cost beyond the model's own time (actor start-up, model loads, chunking, transfer)
    embed_overhead = max(0.0, dist["chunk_embed_s"] - chunks / per_node)
    serial = dist["total_s"] - dist["chunk_embed_s"] - dist["walk_parse_s"]
    rows = {}
    for n in nodes:
        t = serial + dist["walk_parse_s"] / n + embed_overhead + chunks / (per_node * n)
        rows[str(n)] = {"expected_total_s": round(t, 1), "speedup_vs_local": round(local["total_s"] / t, 2),
                        "embed_chunks_per_s": round(per_node * n, 1)}
    # For a corpus much bigger than this one the fixed costs fade: each added node adds per_node_chunks_per_s,
    # until the driver's own per-chunk work (clean/dedup and write, serial) is the bottleneck.
    driver_rate = chunks / max(dist["clean_dedup_s"] + dist["write_and_rest_s"], 1e-9)
    return {"per_actor_chunks_per_s": round(per_actor, 1), "actors_per_node": dist["cluster_cpus"],
            "per_node_chunks_per_s": round(per_node, 1),
            "local_one_process_chunks_per_s": local["embed_chunks_per_s"],
            "driver_serial_s": round(serial, 1), "embed_stage_fixed_overhead_s": round(embed_overhead, 1),
            "driver_clean_write_chunks_per_s": round(driver_rate, 1),
            "nodes_until_driver_bound": round(driver_rate / per_node, 1),
            "nodes": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--articles", type=int, default=40, help="Covid-QA articles in the corpus (of 98)")
    ap.add_argument("--actors", type=int, default=0, help="embedding actors (0 = one per CPU)")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray-ingest.json")
    ap.add_argument("--child", choices=("local", "ray"), help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--kb", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = child_local(args.corpus, args.kb) if args.child == "local" else child_ray(args.corpus, args.kb, args.actors)
        print("RESULT " + json.dumps(out))
        return
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="ray-ingest-") as tmp:
        corpus = Path(tmp) / "corpus"
        about = build_corpus(corpus, args.articles)
        runs: dict[str, Any] = {}
        for system in ("local", "ray"):
            load_before = [round(x, 2) for x in os.getloadavg()]
            cmd = [sys.executable, __file__, "--child", system, "--corpus", str(corpus), "--kb", str(Path(tmp) / f"kb-{system}"),
                   "--actors", str(args.actors)]
            code, out, err, rss, wall = run_child(cmd, timeout=1800)
            lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            if code != 0 or not lines:
                raise SystemExit(f"{system} build failed (exit {code}):\n{err[-3000:]}")
            runs[system] = {**json.loads(lines[-1][len("RESULT "):]), "child_wall_s": round(wall, 2),
                            "child_peak_rss_mb": round(rss, 1), "loadavg_before": load_before,
                            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
            print(system, json.dumps(runs[system]), flush=True)
    local, dist = runs["local"], runs["ray"]
    result = {
        "benchmark": "ray_ingest",
        "command": "flock /tmp/heavy.lock .venv/bin/python benchmarks/ray_ingest.py " + " ".join(sys.argv[1:]),
        "machine": info,
        "corpus": about,
        "config": "IndexConfig() defaults (MiniLM, chunk_size 200, overlap 30, flat), IngestConfig() defaults",
        "same_chunk_ids": local["chunk_ids_sha256"] == dist["chunk_ids_sha256"] and local["chunks"] == dist["chunks"],
        "local": local,
        "ray": dist,
        "ray_over_local": round(dist["total_s"] / local["total_s"], 2),
        "projection": projection(local, dist),
        "notes": [
            "local: one process, torch using all cores for the embedding; the connectors' parse pool uses worker processes",
            "ray: a local Ray started inside the timed child (ray_start_s); parse tasks and one embedding actor per CPU, "
            "each actor one torch thread and its own model load",
            "ray walk_parse_s covers the driver's walk and the parse tasks; clean_dedup_s runs on the driver",
            "projection is a model from this run's per-actor rate, not a multi-node measurement",
        ],
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("same_chunk_ids", "ray_over_local", "projection")}, indent=2))


if __name__ == "__main__":
    main()
