"""The evaluation runner end to end with fakes: scripted generator, hash embedder, in-memory KB."""

import json

import pytest

from core.errors import InputError, ModelError
from hybrid.eval.runner import EvalConfig, run_eval
from tests.core.conftest import DOCS, make_assistant, write_app
from indexes.embed import HashEmbedder

QUESTIONS = [
    {"id": "r1", "question": "What is the lease notice period?", "answer": "60 days", "type": "retrieval",
     "relevant_docs": ["lease.md"]},
    {"id": "s1", "question": "What does our house style say about topic 9?", "answer": "Short and plain.",
     "type": "style"},
    {"id": "u1", "question": "What is the parking fee on the moon base?", "answer": "", "tags": ["unanswerable"],
     "type": "retrieval"},
    {"id": "n1", "question": "Tell me about deposits", "type": "retrieval"},  # no reference: flagged
]


def reply(msgs, adapter):
    user = msgs[-1]["content"]
    if "boom" in user:
        raise ModelError("scripted failure")
    if adapter:
        return "Short and plain."
    if "60 days" in user and "notice period" in user:
        return "The notice period is 60 days [1]."
    return "I don't know."


def qfile(tmp_path, rows=QUESTIONS):
    p = tmp_path / "questions.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture
def bot(tmp_path):
    return make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)


CFG = EvalConfig(strategies=["few_shot", "rag", "tuned", "auto"], batch_size=2)


def test_every_strategy_answers_and_report_is_written(bot, tmp_path):
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    assert res.computed == 4 * 4 and res.cached == 0
    by = {(r["question_id"], r["strategy"]): r for r in res.rows}
    assert by[("r1", "rag")]["scores"]["f1"] > by[("r1", "few_shot")]["scores"]["f1"]
    assert by[("r1", "rag")]["citations"] and by[("r1", "rag")]["scores"]["groundedness"] > 0.5
    assert by[("s1", "tuned")]["scores"]["primary"] == 1.0
    assert by[("u1", "few_shot")]["scores"]["primary"] == 1.0  # "I don't know" on an unanswerable question
    assert by[("r1", "auto")]["routed_to"] in ("few_shot", "rag", "tuned", "tuned_rag", "extract")
    assert by[("r1", "tuned")]["scores"]["groundedness"] is None  # no context: not applicable, not NaN
    assert "no_reference" in by[("n1", "rag")]["flags"]
    s = res.summary
    assert s["flagged_questions"] == [["n1", "no_reference"]]
    assert s["strategies"]["tuned"]["groundedness"]["mean"] is None  # shown as "-", never as 0 or NaN
    assert s["strategies"]["rag"]["groundedness"]["mean"] > 0
    assert s["strategies"]["rag"]["n"] == 3  # the flagged question is kept in results, not scored
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 16
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "score_by_strategy.png").is_file()


def test_rerun_uses_the_cache(bot, tmp_path):
    run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    again = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    assert again.computed == 0 and again.cached == 16


def test_a_changed_app_setting_is_never_served_old_answers(tmp_path):
    from hybrid.app import load_app

    app = write_app(tmp_path / "app")
    emb = HashEmbedder(256)
    run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=make_assistant(app, emb, replies=reply),
             progress=False)
    bot = make_assistant(app, emb, replies=reply)
    bot.app = load_app(app, ["rag.k=2"])  # same KB, same generation settings, another prompt
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    assert res.cached == 0 and res.computed == 16
    # a router setting changes only auto's answers: the fixed strategies come from the cache
    bot2 = make_assistant(app, emb, replies=reply)
    bot2.app = load_app(app, ["rag.k=2", 'router.overrides={"rules": {"rag_high": 0.9}}'])
    again = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot2, progress=False)
    assert again.computed == 4 and again.cached == 12


def test_a_strategy_whose_method_changed_is_never_served_old_answers(bot, tmp_path, monkeypatch):
    from hybrid.strategies import STRATEGIES

    run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    monkeypatch.setattr(STRATEGIES.get("rag"), "method", 99, raising=False)
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    # rag's answers and auto's (which may route to rag) are recomputed; the others come from the cache
    assert res.computed == 8 and res.cached == 8


def test_changed_knowledge_base_recomputes_only_what_depends_on_it(tmp_path):
    app = write_app(tmp_path / "app")
    emb = HashEmbedder(256)
    run_eval(None, qfile(tmp_path), tmp_path / "out", CFG,
             assistant=make_assistant(app, emb, replies=reply), progress=False)
    more = DOCS + [("Parking permits cost 20 EUR a month.", {"source": "parking.md"})]
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG,
                   assistant=make_assistant(app, emb, docs=more, replies=reply), progress=False)
    # rag and auto depend on the KB version: recomputed; few_shot and tuned came from the cache
    assert res.computed == 8 and res.cached == 8


def test_a_failing_question_is_recorded_and_the_run_goes_on(bot, tmp_path):
    rows = QUESTIONS[:2] + [{"id": "b1", "question": "boom goes this one", "answer": "x"}]
    res = run_eval(None, qfile(tmp_path, rows), tmp_path / "out", EvalConfig(strategies=["few_shot"], batch_size=4),
                   assistant=bot, progress=False)
    by = {r["question_id"]: r for r in res.rows}
    assert "scripted failure" in by["b1"]["error"] and by["b1"]["scores"]["primary"] == 0.0
    assert by["r1"]["error"] is None and by["s1"]["error"] is None
    assert res.summary["strategies"]["few_shot"]["errors"] == 1


def test_an_interrupted_run_resumes_from_the_cache(tmp_path):
    app = write_app(tmp_path / "app")
    emb = HashEmbedder(256)
    calls = {"n": 0}

    def flaky(msgs, adapter):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        return reply(msgs, adapter)

    with pytest.raises(KeyboardInterrupt):
        run_eval(None, qfile(tmp_path), tmp_path / "out", CFG,
                 assistant=make_assistant(app, emb, replies=flaky), progress=False)
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG,
                   assistant=make_assistant(app, emb, replies=reply), progress=False)
    assert res.cached >= 4 and res.computed + res.cached == 16
    assert len(res.rows) == 16


def test_empty_question_file_is_a_clear_error(bot, tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text("")
    with pytest.raises(InputError, match="empty question file"):
        run_eval(None, p, tmp_path / "out", CFG, assistant=bot, progress=False)


def test_unknown_strategy_in_config():
    with pytest.raises(ValueError, match="unknown strategy 'magic'"):
        EvalConfig(strategies=["magic"])


def mixed_questions(n_each=6):
    """Two kinds of question, each answered right by exactly one strategy (rag or the adapter)."""
    rows = []
    for i in range(n_each):
        rows.append({"id": f"r{i}", "question": f"What is the lease notice period, case {i}?", "answer": "60 days",
                     "type": "retrieval"})
        rows.append({"id": f"s{i}", "question": f"What does our house style say about topic {i}?",
                     "answer": "Short and plain.", "type": "style"})
    return rows


def test_learned_router_is_scored_out_of_fold_on_the_runs_own_labels(bot, tmp_path):
    cfg = EvalConfig(strategies=["few_shot", "rag", "tuned", "auto"], batch_size=4, cv_folds=3)
    res = run_eval(None, qfile(tmp_path, mixed_questions()), tmp_path / "out", cfg, assistant=bot, progress=False)
    by = {(r["question_id"], r["strategy"]): r for r in res.rows}
    cv = [r for r in res.rows if r["strategy"] == "learned_cv"]
    assert len(cv) == 12
    for r in cv:  # the answer is the chosen fixed strategy's own answer, not a new generation
        assert r["answer"] == by[(r["question_id"], r["routed_to"])]["answer"]
        assert r["scores"] == by[(r["question_id"], r["routed_to"])]["scores"]
    s = res.summary
    fixed_best = max(s["strategies"][k]["primary"]["mean"] for k in ("few_shot", "rag", "tuned"))
    assert fixed_best <= 0.6  # each fixed strategy gets only its own kind right
    learned = s["routers"]["learned_cv"]
    assert learned["primary"] > fixed_best  # routing by kind beats any single strategy
    assert learned["vs_best_fixed"]["diff"] > 0 and learned["gap_to_oracle"]["diff"] < s["oracle"]["primary"] - fixed_best
    assert "auto" in s["routers"] and s["router"] is s["routers"]["auto"]
    assert any("learned router (cross-validated)" in line for line in s["verdict"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| learned_cv |" in md and "## Routers" in md


def test_learned_router_needs_enough_questions_and_says_why(bot, tmp_path):
    res = run_eval(None, qfile(tmp_path), tmp_path / "out", CFG, assistant=bot, progress=False)
    assert "needs at least 10 questions" in res.summary["skipped_strategies"]["learned_cv"]
    assert not [r for r in res.rows if r["strategy"] == "learned_cv"]
    one = run_eval(None, qfile(tmp_path, mixed_questions()), tmp_path / "out1",
                   EvalConfig(strategies=["rag"], batch_size=4), assistant=bot, progress=False)
    assert "two fixed strategies" in one.summary["skipped_strategies"]["learned_cv"]


def test_cv_folds_must_be_at_least_two():
    with pytest.raises(ValueError, match="cv_folds must be >= 2"):
        EvalConfig(cv_folds=1)


def test_a_saved_learned_router_is_marked_in_sample_on_its_own_training_questions(bot, tmp_path):
    import numpy as np

    from hybrid.routing.learned import features, train_learned

    rows = mixed_questions()
    seen = rows[:8]  # the router learns from 8 questions; the other 4 are new to it
    ctxs = bot.route_contexts([r["question"] for r in seen])
    labels = [{"rag": 1.0, "tuned": 0.0} if r["type"] == "retrieval" else {"rag": 0.0, "tuned": 1.0} for r in seen]
    router, _ = train_learned(np.stack([features(c) for c in ctxs]), labels, app_name=bot.app.name,
                              embedder=bot.embedder, cfg=bot.router_config(), queries=[r["question"] for r in seen])
    router.save(bot.app.router_model_path)
    cfg = EvalConfig(strategies=["rag", "tuned", "auto"], batch_size=4, router="learned", cv_folds=3)
    res = run_eval(None, qfile(tmp_path, rows), tmp_path / "out", cfg, assistant=bot, progress=False)
    auto = {r["question_id"]: r for r in res.rows if r["strategy"] == "auto"}
    assert sorted(q for q, r in auto.items() if r["router_in_sample"]) == sorted(r["id"] for r in seen)
    info = res.summary["routers"]["auto"]["in_sample"]
    assert info["n"] == 8 and info["n_unseen"] == 4
    assert any("in-sample" in line for line in res.summary["verdict"])
    # retraining the router changes auto's cache key: its answers are recomputed, the others are not
    router.model["b"] = [0.0, 0.0]
    router.save(bot.app.router_model_path)
    bot._routers.clear()
    again = run_eval(None, qfile(tmp_path, rows), tmp_path / "out", cfg, assistant=bot, progress=False)
    assert again.computed == 12 and again.cached == 24


def test_a_prompt_already_generated_in_the_run_is_not_generated_again(tmp_path):
    app = write_app(tmp_path / "app")
    emb = HashEmbedder(256)
    seen = []

    def counting(msgs, adapter):
        seen.append(msgs[-1]["content"])
        return reply(msgs, adapter)

    def calls(strategies, out):
        seen.clear()
        res = run_eval(None, qfile(tmp_path, mixed_questions()), tmp_path / out,
                       EvalConfig(strategies=strategies, batch_size=4, learned_cv=False),
                       assistant=make_assistant(app, emb, replies=counting), progress=False)
        return len(seen), res

    alone, _ = calls(["auto"], "a")
    fixed, _ = calls(["rag", "tuned"], "b")
    both, res = calls(["rag", "tuned", "auto"], "c")
    routed = [r for r in res.rows if r["strategy"] == "auto" and r["routed_to"] in ("rag", "tuned")]
    assert routed and both == fixed  # every auto answer reused its strategy's generation
    assert alone == len(routed)  # ... which auto on its own does generate
    by = {(r["question_id"], r["strategy"]): r for r in res.rows}
    assert all(r["answer"] == by[(r["question_id"], r["routed_to"])]["answer"] for r in routed)


def test_questions_sharing_their_text_keep_their_own_rows_across_cached_runs(bot, tmp_path):
    # the same question asked twice with different gold answers (PolicyQA does this): each row keeps
    # its own id and is scored against its own reference, on the first run and from the cache
    rows = [{"id": "a", "question": "What is the lease notice period?", "answer": "60 days"},
            {"id": "b", "question": "What is the lease notice period?", "answer": "two months in writing"},
            {"id": "c", "question": "What is a deposit?", "answer": "money"}]
    cfg = EvalConfig(strategies=["rag"], batch_size=2)
    for run in (1, 2):
        res = run_eval(None, qfile(tmp_path, rows), tmp_path / "out", cfg, assistant=bot, progress=False)
        assert (res.computed, res.cached) == ((3, 0) if run == 1 else (0, 3))
        by = {r["question_id"]: r for r in res.rows}
        assert sorted(by) == ["a", "b", "c"] and len(res.rows) == 3
        assert by["a"]["references"] == ["60 days"] and by["b"]["references"] == ["two months in writing"]
        assert by["a"]["scores"]["f1"] > by["b"]["scores"]["f1"]
