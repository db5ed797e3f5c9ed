"""``hybrid router fit-rules``: extract's threshold chosen offline on rows whose best threshold is known."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from hybrid.routing.fit import FitData, FitQuestion, fit_rules, questions_from_rows
from hybrid.routing.signals import Signals
from tests.core.test_cli import cli_app, run_ok  # noqa: F401  (fixture)

LOOKUP = Signals(top=0.7, margin=0.2, example_sim=0.3, adapter_sim=0.2, qtype="lookup")  # the rules pick rag


def dataset(name, n, boundary, seed, rag=0.5):
    """extract is right (1.0) exactly when its confidence >= boundary, else wrong (0.0); rag scores ``rag``."""
    rng = random.Random(seed)
    qs = []
    for i in range(n):
        c = round(rng.random(), 4)
        qs.append(FitQuestion(f"{name}{i}", f"question {i}",
                              {"extract": 1.0 if c >= boundary else 0.0, "rag": rag, "few_shot": 0.1}, c))
    return FitData(name, qs, [LOOKUP] * n)


def best_possible(data, t):
    got = [q.scores["extract"] if t is not None and q.confidence >= t else q.scores["rag"]
           for d in data for q in d.questions]
    return sum(got) / len(got)


def test_the_threshold_that_maximises_the_pooled_score_is_found():
    data = [dataset("a", 60, 0.6, 1)]
    r = fit_rules(data)
    confs = sorted(q.confidence for q in data[0].questions)
    below = max(c for c in confs if c < 0.6)
    above = min(c for c in confs if c >= 0.6)
    assert below < r["extract_min"] <= above  # every threshold in that gap routes perfectly
    assert r["pooled"]["routed"] == pytest.approx(best_possible(data, 0.6), abs=1e-4)
    assert r["pooled"]["current_setting"] == pytest.approx(0.5)  # the shipped default (off): rag everywhere
    d = r["datasets"][0]
    assert d["best_fixed"]["strategy"] == "rag" and d["diff"] > 0 and d["ci95"][0] > 0 and d["p"] < 0.05
    assert d["to_extract"] == sum(1 for c in confs if c >= 0.6)


def test_extract_stays_off_when_it_never_helps():
    data = [dataset("a", 30, 2.0, 2)]  # extract never right
    r = fit_rules(data)
    assert r["extract_min"] is None and r["pooled"]["routed"] == pytest.approx(0.5)


def test_no_dataset_is_sacrificed_for_the_pooled_score():
    # a (large): extract right from 0.3 up; b (small): extract right only from 0.8 up. The pooled optimum
    # (~0.3) would put b far below its best fixed strategy; the fit keeps b at or above it.
    a, b = dataset("a", 200, 0.3, 3, rag=0.8), dataset("b", 40, 0.8, 4, rag=0.6)
    r = fit_rules([a, b])
    by = {d["name"]: d for d in r["datasets"]}
    assert r["all_at_least_best_fixed"]
    assert by["b"]["routed"] >= by["b"]["best_fixed"]["mean"] and by["a"]["routed"] >= by["a"]["best_fixed"]["mean"]
    unconstrained = max(best_possible([a, b], t) for t in [None] + [q.confidence for d in (a, b) for q in d.questions])
    assert r["pooled"]["routed"] < unconstrained - 0.01  # the constraint did bind
    assert r["extract_min"] > 0.35  # above the pooled optimum (~0.3), as low as b allows


def test_rows_become_questions_and_the_cli_writes_commented_yaml(tmp_path, capsys, cli_app):  # noqa: F811
    rows = []
    rng = random.Random(5)
    for i in range(24):
        c = round(rng.random(), 3)
        q = f"What is the lease notice period in case {i}?"
        rows.append({"question_id": f"q{i}", "question": q, "strategy": "extract", "confidence": c,
                     "scores": {"primary": 1.0 if c >= 0.5 else 0.0}})
        for st, sc in (("rag", 0.4), ("few_shot", 0.4), ("tuned", 0.4)):
            rows.append({"question_id": f"q{i}", "question": q, "strategy": st, "scores": {"primary": sc}})
        rows.append({"question_id": f"q{i}", "question": q, "strategy": "auto", "scores": {"primary": 0.4}})
    rows.append({"question_id": "x", "question": "no conf", "strategy": "extract", "scores": {"primary": 1.0}})
    qs, skipped = questions_from_rows(rows)
    assert len(qs) == 24 and skipped == {"no extract answer with a confidence": 1}
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    router_yaml = tmp_path / "router.yaml"
    router_yaml.write_text("# my router\nrules:\n  rag_high: 0.50   # keep me\n  extract_min: null  # off\n")
    out = tmp_path / "fitted.yaml"
    text = run_ok(capsys, "router", "fit-rules", "--from", str(results), "--app", str(cli_app), "--out", str(out),
                  "--update", str(router_yaml))
    assert "fitted rules: extract_min 0." in text and "pooled mean score" in text and "95% CI" in text
    fitted = yaml.safe_load(out.read_text())
    t = fitted["rules"]["extract_min"]
    below = max(r["confidence"] for r in rows if r.get("confidence", 1) < 0.5)
    above = min(r["confidence"] for r in rows if r.get("confidence", 0) >= 0.5 and r["question_id"] != "x")
    assert below < t <= above
    assert str(results) in out.read_text() and out.read_text().startswith("# Rules-router thresholds fitted")
    updated = router_yaml.read_text()
    assert "# keep me" in updated and "# my router" in updated and "fitted by fit-rules" in updated
    assert yaml.safe_load(updated)["rules"]["extract_min"] == t


def test_each_scorer_gets_its_own_threshold():
    # zero-shot app: extract right from 0.7 up; reader app: right from 0.2 up (a calibrated probability
    # that runs lower). One shared threshold would lose on one of them; two fit both exactly.
    zs = dataset("zs", 80, 0.7, 6)
    rd = dataset("rd", 80, 0.2, 7)
    for q in rd.questions:
        q.scorer = "reader"
    r = fit_rules([zs, rd])
    assert r["fitted"] == ["zero_shot", "reader"]

    def gap(d, boundary):  # every threshold in it routes d perfectly
        confs = [q.confidence for q in d.questions]
        return max(c for c in confs if c < boundary), min(c for c in confs if c >= boundary)

    lo, hi = gap(zs, 0.7)
    assert lo < r["extract_min"] <= hi
    lo, hi = gap(rd, 0.2)
    assert lo < r["extract_min_reader"] <= hi
    # every question routed to its better answer: extract above its scorer's boundary, rag below
    ideal = (best_possible([zs], 0.7) * 80 + best_possible([rd], 0.2) * 80) / 160
    assert r["pooled"]["routed"] == pytest.approx(ideal, abs=1e-4)
    assert r["pooled"]["routed"] > max(best_possible([zs, rd], t) for t in (0.2, 0.7))  # one threshold: less
    by = {d["name"]: d for d in r["datasets"]}
    assert by["rd"]["scorers"] == ["reader"] and by["zs"]["scorers"] == ["zero_shot"]
    # a scorer no question used keeps its current value
    only = fit_rules([zs])
    assert only["fitted"] == ["zero_shot"] and only["extract_min_reader"] is None


def test_the_scorer_is_read_from_the_extract_rows_notice():
    base = {"question_id": "q", "question": "q?", "scores": {"primary": 0.5}}
    rows = [{**base, "strategy": "extract", "confidence": 0.3,
             "notices": ["tuned reader: span 1-9 of source [1], score 0.30"]},
            {**base, "strategy": "rag"},
            {**base, "question_id": "z", "strategy": "extract", "confidence": 0.3,
             "notices": ["zero-shot sentence selection: span 0-5 of source [1], score 0.30"]},
            {**base, "question_id": "z", "strategy": "rag"}]
    qs, _ = questions_from_rows(rows)
    assert {q.qid: q.scorer for q in qs} == {"q": "reader", "z": "zero_shot"}
