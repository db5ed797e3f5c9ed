"""Eval shows whether retrieval found each question's source, questions can be scoped with a filter,
and "cost at equal quality" agrees with the paired tests."""

import json

import numpy as np
import pytest

from hybrid.eval.report import render_markdown, summarize
from hybrid.eval.retrieval import hit_rates, source_rank
from hybrid.eval.runner import EvalConfig, run_eval
from core.types import Chunk, Hit
from indexes.embed import HashEmbedder
from tests.core.conftest import DOCS, make_assistant, write_app


class FilteringRetriever:
    """The in-memory fake plus ``filters`` on ``source`` (what KnowledgeBase.search does), recording them."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def stats(self):
        return self.inner.stats()

    def search(self, query, k=5, *, filters=None, mode="hybrid"):
        self.calls.append(filters)
        hits = self.inner.search(query, len(self.inner.chunks), mode=mode)
        if filters:
            hits = [h for h in hits if h.chunk.metadata.get("source") == filters["source"]]
        return hits[:k]


def reply(msgs, adapter):
    return "The notice period is 60 days [1]." if "60 days" in msgs[-1]["content"] else "I don't know."


def qfile(tmp_path, rows):
    p = tmp_path / "q.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_retrieval_hits_per_question_and_in_the_report(tmp_path):
    b = make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)
    rows = [{"id": "r1", "question": "What is the lease notice period for residential tenants?", "answer": "60 days",
             "relevant_docs": ["lease.md"]},
            {"id": "r2", "question": "When are security deposits returned?", "answer": "14 days",
             "relevant_docs": ["docs/nowhere.md"]},
            {"id": "r3", "question": "What about warranty claims?", "answer": "30 days"}]  # no known source
    res = run_eval(None, qfile(tmp_path, rows), tmp_path / "out", EvalConfig(strategies=["rag"], learned_cv=False),
                   assistant=b, progress=False)
    by = {r["question_id"]: r for r in res.rows}
    assert by["r1"]["retrieval_hit"]["rank"] == 1 and by["r1"]["retrieval_hit"]["hit@k"]
    assert by["r2"]["retrieval_hit"] == {"rank": None, "hit@1": False, "hit@k": False, "k": 3}
    assert "retrieval_hit" not in by["r3"]
    r = res.summary["retrieval"]
    assert r["n"] == 2 and r["hit@1"] == 0.5 and r["hit@k"] == 0.5 and r["k"] == 3  # rag.k 4, capped by 3 chunks
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Retrieval hit@1 0.50 / hit@3 0.50 over 2 questions with known sources" in md


def test_source_rank_matches_basenames_and_doc_ids():
    hits = [Hit(chunk=Chunk(id="c1", doc_id="d1", text="", metadata={"source": "/x/a.txt"}), score=1.0),
            Hit(chunk=Chunk(id="c2", doc_id="d2", text="", metadata={"source": "data.json#7"}), score=0.5)]
    assert source_rank(hits, ["a.txt"]) == 1 and source_rank(hits, ["b.txt"]) is None
    assert source_rank(hits, relevant_doc_ids=["d2"]) == 2
    assert hit_rates([1, 2, None], 2) == {"n": 3, "k": 2, "hit@1": 1 / 3, "hit@k": 2 / 3}


def test_a_row_filter_scopes_retrieval_for_every_strategy(tmp_path):
    b = make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)
    fr = FilteringRetriever(b.knowledge_base)
    b._kb = fr  # the Assistant's KB slot, filled by make_assistant
    rows = [{"id": "f1", "question": "What is the lease notice period?", "answer": "60 days",
             "filter": {"source": "deposit.md"}},
            {"id": "f2", "question": "What is the lease notice period?", "answer": "60 days", "filter": "source=lease.md"}]
    res = run_eval(None, qfile(tmp_path, rows), tmp_path / "out", EvalConfig(strategies=["rag"], learned_cv=False),
                   assistant=b, progress=False)
    assert {"source": "deposit.md"} in fr.calls and {"source": "lease.md"} in fr.calls
    by = {r["question_id"]: r for r in res.rows}
    assert [c["source"] for c in by["f1"]["citations"]] in ([], ["deposit.md"])
    assert by["f2"]["answer"].startswith("The notice period is 60 days")
    # ask() takes the same filter
    ans = b.ask("What is the lease notice period?", strategy="rag", filters={"source": "warranty.md"})
    assert fr.calls[-1] == {"source": "warranty.md"} and all(c.source == "warranty.md" for c in ans.citations)


def _row(qid, strategy, primary, tokens, latency):
    return {"question_id": qid, "strategy": strategy, "type": "squad", "routed_to": None,
            "scores": {"primary": primary, "f1": primary, "em": 0.0, "rouge_l": primary, "bleu": 0.0,
                       "groundedness": None},
            "latency_s": latency, "prompt_tokens": tokens, "completion_tokens": 10, "contaminated": False,
            "unanswerable": False, "error": None}


def test_cost_at_equal_quality_uses_paired_tests_and_tokens():
    # per-question difficulty varies a lot (wide, overlapping per-strategy CIs), but tuned beats the
    # chain by 0.05 on every single question: the paired test separates them
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.8, size=40)
    rows = []
    for i, b in enumerate(base):
        rows += [_row(f"q{i}", "tuned", b + 0.05, 100, 3.0),  # slow: it ran while the machine was busy
                 _row(f"q{i}", "langchain", b, 600, 0.5),
                 _row(f"q{i}", "rag", b + 0.05 + (0.02 if i % 2 else -0.02), 700, 1.0),
                 _row(f"q{i}", "few_shot", b + 0.05 + (0.01 if i % 2 else -0.01), 300, 2.0)]
    s = summarize(rows)
    per = s["strategies"]
    assert per["langchain"]["primary"]["ci95"][1] >= per["tuned"]["primary"]["ci95"][0]  # the CIs overlap
    c = s["cost_at_equal_quality"]
    assert "langchain" not in c["statistically_tied"]
    assert set(c["statistically_tied"]) == {"tuned", "rag", "few_shot"}
    assert c["cheapest_tied"] == "tuned"  # fewest tokens, although its latency was the highest
    md = render_markdown(s, "t", [])
    assert "the paired test cannot separate" in md and "cheapest of them by tokens per answer is tuned" in md
