"""Rank fusion and diversification, as plain functions over (id, score) lists.

    fused = rrf([dense_ids, bm25_ids], k=60, weights=[1.0, 1.0])   # [(id, fused score)], best first
    picked = mmr(query_vec, cand_vecs, k=5, lam=0.7)                # indices into the candidates

Reciprocal rank fusion ignores raw scores, which live on incomparable scales (cosine in [-1, 1]
versus unbounded BM25); only ranks matter, so neither retriever can drown the other.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = 60,
        weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """Weighted reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1."""
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[Hashable, float] = {}
    first_seen: dict[Hashable, int] = {}
    for w, ranking in zip(weights, rankings):
        for r, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + w / (k + r)
            first_seen.setdefault(item, len(first_seen))
    # ties keep the order of first appearance, so results are deterministic
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))


def mmr(query: np.ndarray, candidates: np.ndarray, k: int, lam: float = 0.7,
        relevance: np.ndarray | None = None) -> list[int]:
    """Maximal marginal relevance: greedily pick candidates relevant to the query but unlike each other.

    ``relevance`` defaults to the cosine between query and candidates (vectors are L2-normalized).
    """
    n = len(candidates)
    if n == 0 or k <= 0:
        return []
    rel = candidates @ query if relevance is None else np.asarray(relevance, dtype=np.float32)
    sim = candidates @ candidates.T
    picked: list[int] = [int(np.argmax(rel))]
    best_sim = sim[picked[0]].copy()
    while len(picked) < min(k, n):
        score = lam * rel - (1 - lam) * best_sim
        score[picked] = -np.inf
        nxt = int(np.argmax(score))
        picked.append(nxt)
        best_sim = np.maximum(best_sim, sim[nxt])
    return picked
