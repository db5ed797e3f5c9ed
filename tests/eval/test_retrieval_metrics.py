"""Retrieval metrics against values worked out by hand, and the BEIR loader on good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import InputError
from hybrid.eval.retrieval import (
    doc_ranking,
    evaluate_run,
    hits_to_ranking,
    load_beir,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    run_knowledge_base,
)
from core.types import Chunk, Hit
from tests.conftest import SHARED

RELS = {"a": 3, "c": 2, "e": 1, "z": 0}  # z is judged but not relevant


def test_ndcg_by_hand():
    # ranking a b c d, cut at 3:
    #   DCG  = 3/log2(2) + 0/log2(3) + 2/log2(4)            = 3 + 0 + 1         = 4
    #   IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4)            = 3 + 1.2618595 + .5 = 4.7618595
    assert ndcg_at_k(["a", "b", "c", "d"], RELS, 3) == pytest.approx(4 / 4.7618595, abs=1e-6)
    assert ndcg_at_k(["a", "b", "c", "d"], RELS, 3) == pytest.approx(0.840008, abs=1e-6)
    # the ideal order scores exactly 1, the reverse less, nothing relevant 0
    assert ndcg_at_k(["a", "c", "e"], RELS, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["e", "c", "a"], RELS, 10) < 1.0
    assert ndcg_at_k(["b", "d", "z"], RELS, 10) == 0.0
    # a single grade-1 document at rank 2 of a one-relevant query: 1/log2(3)
    assert ndcg_at_k(["x", "a"], {"a": 1}, 10) == pytest.approx(0.6309298, abs=1e-6)


def test_ndcg_counts_a_repeated_doc_once():
    # "a a c": the second "a" is dropped, so this equals the ideal "a c"
    assert ndcg_at_k(["a", "a", "c"], {"a": 3, "c": 2}, 10) == pytest.approx(1.0)


def test_recall_by_hand():
    assert recall_at_k(["a", "b"], RELS, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "c", "d"], RELS, 4) == pytest.approx(2 / 3)
    assert recall_at_k(["a", "b", "c", "d"], RELS, 1) == pytest.approx(1 / 3)
    assert recall_at_k(["z", "b"], RELS, 2) == 0.0  # grade 0 is not relevant


def test_mrr_by_hand():
    assert mrr_at_k(["b", "c", "a"], RELS) == pytest.approx(1 / 2)
    assert mrr_at_k(["b", "d", "z", "e"], RELS) == pytest.approx(1 / 4)
    assert mrr_at_k(["b", "d", "z", "e"], RELS, k=3) == 0.0
    assert mrr_at_k(["a"], RELS, k=1) == 1.0


@pytest.mark.parametrize("fn", [ndcg_at_k, recall_at_k])
@pytest.mark.parametrize("k", [0, -3])
def test_bad_k_is_an_error(fn, k):
    with pytest.raises(InputError, match=f"got {k}"):
        fn(["a"], RELS, k)


def test_evaluate_run_means_and_missing_queries():
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}, "q3": {"x": 0}}  # q3 has no relevant doc: left out
    run = {"q1": ["a", "b"]}  # q2 missing from the run: scores 0
    s = evaluate_run(run, qrels, ndcg_ks=(10,), recall_ks=(1,), mrr_k=10)
    assert s.n_queries == 2 and s.missing_queries == 1
    assert s.per_query["q1"] == {"ndcg@10": 1.0, "recall@1": 1.0, "mrr@10": 1.0}
    assert s.per_query["q2"] == {"ndcg@10": 0.0, "recall@1": 0.0, "mrr@10": 0.0}
    assert s.mean == {"ndcg@10": 0.5, "recall@1": 0.5, "mrr@10": 0.5}


def test_evaluate_run_without_relevant_judgments_is_an_error():
    with pytest.raises(InputError, match="no judged query"):
        evaluate_run({"q": ["a"]}, {"q": {"a": 0}})


def test_doc_ranking_takes_each_docs_best_chunk():
    pairs = [("d1", 0.2), ("d2", 0.9), ("d1", 0.95), ("d3", 0.9)]
    assert doc_ranking(pairs) == ["d1", "d2", "d3"]  # d2 and d3 tie: first seen first
    assert doc_ranking(pairs, k=2) == ["d1", "d2"]


def _hit(doc_id: str, score: float) -> Hit:
    return Hit(Chunk(id=f"{doc_id}-{score}", doc_id=doc_id, text=""), score)


def test_hits_to_ranking_and_run_knowledge_base():
    class TwoChunkKB:  # a stand-in with the KnowledgeBase search signature
        def __init__(self):
            self.calls = []

        def search_batch(self, queries, k, mode):
            self.calls.append((len(queries), k, mode))
            return [[_hit("d2", 0.9), _hit("d2", 0.8), _hit("d1", 0.5)] for _ in queries]

    assert hits_to_ranking([_hit("d1", 0.1), _hit("d2", 0.7), _hit("d1", 0.9)]) == ["d1", "d2"]
    kb = TwoChunkKB()
    run = run_knowledge_base(kb, {"q1": "x", "q2": "y", "q3": "z"}, k=1, chunk_k=3, mode="bm25", batch_size=2)
    assert run == {"q1": ["d2"], "q2": ["d2"], "q3": ["d2"]}
    assert kb.calls == [(2, 3, "bm25"), (1, 3, "bm25")]


# ---------------------------------------------------------------------------------------------- loader


def write_beir(root: Path, corpus, queries, qrels_rows, header=True) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(map(str, r)) for r in qrels_rows]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


CORPUS = [{"_id": "d1", "title": "Wings", "text": "lift on wings"},
          {"_id": "d2", "title": "", "text": "heat transfer in slabs"},
          {"_id": "d3", "title": "Shells", "text": "buckling of shells"}]
QUERIES = [{"_id": "1", "text": "wing lift"}, {"_id": "2", "text": "slab heat"}, {"_id": "3", "text": "no judgments"}]
QRELS = [("1", "d1", 2), ("2", "d2", 1), ("2", "d9", 1)]


def test_load_beir_small(tmp_path):
    ds = load_beir(write_beir(tmp_path / "tiny", CORPUS, QUERIES, QRELS))
    assert ds.name == "tiny" and len(ds.corpus) == 3
    assert ds.queries == {"1": "wing lift", "2": "slab heat"}  # query 3 has no judgment
    assert ds.qrels == {"1": {"d1": 2}, "2": {"d2": 1, "d9": 1}}
    assert ds.notes["queries_without_relevant"] == 1 and ds.notes["qrels_unknown_doc"] == 1
    docs = {d.id: d for d in ds.documents()}
    assert docs["d1"].text == "Wings\nlift on wings" and docs["d2"].text == "heat transfer in slabs"
    assert docs["d1"].metadata["beir_id"] == "d1"


def test_split_keeps_a_query_on_each_side(tmp_path):
    ds = load_beir(write_beir(tmp_path / "t", CORPUS, QUERIES, QRELS))
    for frac in (0.01, 0.5, 0.99):
        dev, test = ds.split_queries(frac)
        assert len(dev) == 1 and len(test) == 1 and set(dev + test) == {"1", "2"}
    with pytest.raises(InputError, match="dev_fraction must be in"):
        ds.split_queries(1.0)


def test_load_beir_without_header_and_with_limits(tmp_path):
    ds = load_beir(write_beir(tmp_path / "t", CORPUS, QUERIES, QRELS, header=False), limit_queries=1, limit_docs=1)
    assert list(ds.queries) == ["1"] and set(ds.corpus) == {"d1"}


def test_load_beir_real_cranfield():
    path = SHARED / "data" / "cranfield"
    if not path.is_dir():
        pytest.skip(f"shared data missing: {path}")
    ds = load_beir(path)
    assert len(ds.corpus) == 1400 and len(ds.queries) == 225
    dev, test = ds.split_queries(0.3)
    assert not set(dev) & set(test) and len(dev) + len(test) == 225
    assert 40 < len(dev) < 100  # a 30% hash split of 225
    assert ds.split_queries(0.3) == (dev, test)  # deterministic


@pytest.mark.parametrize("case, match", [
    ("missing_dir", "directory not found"),
    ("missing_qrels", "has no qrels file"),
    ("bad_json", r"corpus.jsonl:2: invalid JSON"),
    ("no_id", r"queries.jsonl:1: expected an object with an '_id'"),
    ("dup_doc", "duplicate document id 'd1'"),
    ("bad_columns", r"test.tsv:2: expected 3 tab-separated columns"),
    ("bad_score", r"relevance score must be a number, got 'high'"),
    ("no_relevant", "no query in queries.jsonl has a relevant judgment"),
    ("empty_corpus", "holds no documents"),
])
def test_load_beir_bad_input(tmp_path, case, match):
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS)
    if case == "missing_dir":
        root = tmp_path / "nope"
    elif case == "missing_qrels":
        (root / "qrels" / "test.tsv").unlink()
    elif case == "bad_json":
        (root / "corpus.jsonl").write_text(json.dumps(CORPUS[0]) + "\n{not json\n")
    elif case == "no_id":
        (root / "queries.jsonl").write_text(json.dumps({"text": "q"}) + "\n")
    elif case == "dup_doc":
        (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CORPUS + CORPUS[:1]))
    elif case == "bad_columns":
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\n")
    elif case == "bad_score":
        (root / "qrels" / "test.tsv").write_text("1\td1\thigh\n")
    elif case == "no_relevant":
        (root / "qrels" / "test.tsv").write_text("1\td1\t0\n")
    elif case == "empty_corpus":
        (root / "corpus.jsonl").write_text("\n")
    with pytest.raises(InputError, match=match):
        load_beir(root)


def test_load_beir_bad_limit(tmp_path):
    with pytest.raises(InputError, match="limit_queries must be > 0, got 0"):
        load_beir(write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS), limit_queries=0)
