"""The fusion study of ``benchmarks/retrieval.py``: this project's dense and BM25 lists fused by weighted
RRF and by a convex combination of min-max normalized scores, parameters chosen on the dev split only
and reported on the test split."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hybrid.eval.retrieval import BeirDataset, evaluate_run


def fuse_rrf(dense: dict[str, float], sparse: dict[str, float], k: int, w: float) -> list[str]:
    """Weighted RRF over two doc-score maps (ranks from the scores): w for dense, 1 - w for BM25."""
    score: dict[str, float] = {}
    for weight, m in ((w, dense), (1 - w, sparse)):
        for r, d in enumerate(sorted(m, key=lambda d: -m[d]), 1):
            score[d] = score.get(d, 0.0) + weight / (k + r)
    return sorted(score, key=lambda d: -score[d])


def fuse_convex(dense: dict[str, float], sparse: dict[str, float], alpha: float) -> list[str]:
    """alpha * minmax(dense) + (1 - alpha) * minmax(bm25); a doc missing from a list gets that list's 0."""
    def norm(m: dict[str, float]) -> dict[str, float]:
        if not m:
            return {}
        lo, hi = min(m.values()), max(m.values())
        return {d: (s - lo) / (hi - lo) if hi > lo else 1.0 for d, s in m.items()}

    nd, ns = norm(dense), norm(sparse)
    score = {d: alpha * nd.get(d, 0.0) + (1 - alpha) * ns.get(d, 0.0) for d in set(nd) | set(ns)}
    return sorted(score, key=lambda d: (-score[d], d))


def fusion_study(kb: Any, ds: BeirDataset, dev: list[str], test: list[str], depth: int, k: int) -> dict[str, Any]:
    """Choose fusion parameters on dev queries only; report every candidate's dev score and the test score.
    ``kb`` is the benchmark's ``OurKB`` (its ``scored(mode, texts, depth)``)."""
    qids = dev + test
    texts = [ds.queries[q] for q in qids]
    dense = dict(zip(qids, kb.scored("dense", texts, depth)))
    sparse = dict(zip(qids, kb.scored("bm25", texts, depth)))

    def score(fuse: Callable[[str], list[str]], ids: list[str]) -> dict[str, float]:
        run = {q: fuse(q)[:k] for q in ids}
        m = evaluate_run(run, {q: ds.qrels[q] for q in ids}, ndcg_ks=(10,), recall_ks=(100,)).mean
        return {key: round(v, 4) for key, v in m.items()}

    candidates: dict[str, Callable[[str], list[str]]] = {}
    for rk in (10, 30, 60):
        for w in (0.3, 0.4, 0.5, 0.6, 0.7):
            candidates[f"rrf k={rk} w_dense={w}"] = (lambda q, rk=rk, w=w: fuse_rrf(dense[q], sparse[q], rk, w))
    for a in np.round(np.arange(0.1, 0.95, 0.1), 2):
        candidates[f"convex alpha_dense={a}"] = (lambda q, a=float(a): fuse_convex(dense[q], sparse[q], a))
    dev_scores = {name: score(f, dev) for name, f in candidates.items()}
    best: dict[str, Any] = {}
    for family in ("rrf", "convex"):
        name = max((n for n in dev_scores if n.startswith(family)), key=lambda n: dev_scores[n]["ndcg@10"])
        best[family] = {"chosen_on_dev": name, "dev": dev_scores[name], "test": score(candidates[name], test)}
    plain = "rrf k=60 w_dense=0.5"
    return {"depth_chunks": depth, "dev_queries": len(dev), "test_queries": len(test),
            "plain_rrf_k60_equal_weights": {"dev": dev_scores[plain], "test": score(candidates[plain], test)},
            "best": best, "dev_grid": dev_scores}
