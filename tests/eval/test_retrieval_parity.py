"""Our nDCG@k / recall@k / MRR@k against trec_eval itself (pytrec_eval), on hand-made and random runs.

The README's retrieval figures come from ``hybrid.eval.retrieval``, which says it follows trec_eval;
this checks it does. pytrec_eval takes a run as {doc id: score} and orders it by score (ties by doc id,
descending), so every run here gives strictly decreasing scores, which fixes the order we mean.
trec_eval's ``recip_rank`` has no cut-off: MRR@k is compared against ``recip_rank`` of the run cut
at k, which is what "MRR@k" means (the reciprocal rank of the first relevant document in the top k).
"""

from __future__ import annotations

import random

import pytest

from hybrid.eval.retrieval import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k

pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier is a dev extra: pip install -e '.[dev]'")

KS = (1, 3, 5, 10, 20)


def _scored(ranking: list[str]) -> dict[str, float]:
    return {d: float(len(ranking) - i) for i, d in enumerate(ranking)}


def trec(rels: dict[str, int], ranking: list[str], k: int) -> tuple[float, float, float]:
    """(ndcg_cut.k, recall.k, recip_rank of the top k) by trec_eval; a query with no run scores 0."""
    cut = pytrec_eval.RelevanceEvaluator({"q": rels}, {f"ndcg_cut.{k}", f"recall.{k}"}).evaluate({"q": _scored(ranking)})
    rr = pytrec_eval.RelevanceEvaluator({"q": rels}, {"recip_rank"}).evaluate({"q": _scored(ranking[:k])})
    c, r = cut.get("q", {}), rr.get("q", {})
    return c.get(f"ndcg_cut_{k}", 0.0), c.get(f"recall_{k}", 0.0), r.get("recip_rank", 0.0)


def ours(rels: dict[str, int], ranking: list[str], k: int) -> tuple[float, float, float]:
    return ndcg_at_k(ranking, rels, k), recall_at_k(ranking, rels, k), mrr_at_k(ranking, rels, k)


HAND = [
    # graded, a judged non-relevant doc (z) retrieved first
    ({"a": 3, "c": 2, "e": 1, "z": 0}, ["z", "a", "b", "c", "d"]),
    # the ideal order
    ({"a": 3, "c": 2, "e": 1}, ["a", "c", "e"]),
    # the reverse of it
    ({"a": 3, "c": 2, "e": 1}, ["e", "c", "a"]),
    # nothing relevant retrieved
    ({"a": 1}, ["x", "y", "z"]),
    # one relevant doc, found late (past small cut-offs)
    ({"a": 1}, [f"x{i}" for i in range(12)] + ["a"]),
    # a negative grade counts as not relevant, in the gain and in the ideal ranking
    ({"a": -1, "b": 2, "c": 1}, ["a", "c", "b"]),
    # more relevant docs than k: recall@1 is capped at 1/len(relevant)
    ({f"r{i}": 1 for i in range(25)}, [f"r{i}" for i in range(25)]),
    # an empty run
    ({"a": 2, "b": 1}, []),
]


@pytest.mark.parametrize("rels, ranking", HAND)
@pytest.mark.parametrize("k", KS)
def test_hand_made_runs_match_trec_eval(rels, ranking, k):
    assert ours(rels, ranking, k) == pytest.approx(trec(rels, ranking, k), abs=1e-9)


def test_random_runs_match_trec_eval():
    rng = random.Random(1234)
    checked = 0
    for _ in range(200):
        docs = [f"d{i}" for i in range(rng.randint(1, 40))]
        rels = {d: rng.choice([-1, 0, 0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, len(docs)))}
        if not any(g > 0 for g in rels.values()):
            continue  # trec_eval and we both leave such queries out of a run's mean
        ranking = rng.sample(docs + [f"unjudged{i}" for i in range(10)], rng.randint(0, len(docs)))
        for k in KS:
            assert ours(rels, ranking, k) == pytest.approx(trec(rels, ranking, k), abs=1e-9), (rels, ranking, k)
            checked += 1
    assert checked > 500


def test_run_means_match_trec_eval():
    """evaluate_run's per-query and mean figures (what the README reports) against trec_eval's."""
    rng = random.Random(7)
    qrels, run = {}, {}
    for q in range(30):
        docs = [f"d{i}" for i in range(50)]
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 2]) for d in rng.sample(docs, 12)}
        qrels[f"q{q}"][docs[q]] = 1 + q % 3  # every query has a relevant doc
        run[f"q{q}"] = rng.sample(docs, 40)
    scores = evaluate_run(run, qrels, ndcg_ks=(10,), recall_ks=(10, 100), mrr_k=10)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"})
    per = ev.evaluate({q: _scored(r) for q, r in run.items()})
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({q: _scored(r[:10]) for q, r in run.items()})
    for q in qrels:
        assert scores.per_query[q] == pytest.approx({"ndcg@10": per[q]["ndcg_cut_10"], "recall@10": per[q]["recall_10"],
                                                     "recall@100": per[q]["recall_100"],
                                                     "mrr@10": rr[q]["recip_rank"]}, abs=1e-9)
    n = len(qrels)
    assert scores.mean["ndcg@10"] == pytest.approx(sum(p["ndcg_cut_10"] for p in per.values()) / n, abs=1e-9)
    assert scores.mean["mrr@10"] == pytest.approx(sum(p["recip_rank"] for p in rr.values()) / n, abs=1e-9)
