"""The pipeline with fakes: one system prompt everywhere, bad input, history, exclusions."""

from __future__ import annotations

import json

import pytest

from hybrid.app import load_app
from core.errors import InputError
from hybrid.pipeline import depends_on_history, retrieval_query
from tests.core.conftest import make_assistant, write_app

Q = "What is the lease notice period?"


def test_same_rendered_system_prompt_reaches_the_model_on_every_path(bot, app_dir):
    expected = load_app(app_dir).render_system_prompt("2026-01-02")
    assert expected == "You are Test Helper. Today is 2026-01-02. Answer briefly."
    answers = [bot.ask(Q, strategy=s) for s in ("auto", "few_shot", "rag", "tuned", "tuned_rag")]
    streamed = bot.stream("Draft a reminder that rent is due", strategy="few_shot")
    "".join(streamed)
    generated = sum(1 for a in answers if a.strategy != "extract")  # a quoted answer calls no model
    assert generated >= 4 and len(bot.generator.calls) == generated + 1
    for call in bot.generator.calls:
        systems = [m for m in call.messages if m["role"] == "system"]
        assert systems == [{"role": "system", "content": expected}]
        assert call.prompt.startswith(f"system: {expected}\n")


def test_tuning_data_gets_the_same_system_prompt(app_dir):
    # hybrid.tuning renders its examples through hybrid.chat.render_chat with this exact string
    from hybrid.chat import render_chat

    app = load_app(app_dir)
    prompt = render_chat(None, [{"role": "user", "content": "hi"}], app.render_system_prompt("2026-01-02"))
    assert prompt.startswith("system: You are Test Helper. Today is 2026-01-02.")


def test_answer_carries_decision_citations_timings_usage(bot):
    ans = bot.ask(Q)
    assert ans.decision is not None and ans.decision.strategy == ans.strategy
    assert ans.decision.reason.startswith(ans.strategy + ":")
    assert set(ans.decision.scores) == {"few_shot", "rag", "tuned", "tuned_rag", "extract"}
    assert {"embed", "route", "total"} <= set(ans.timings)
    gen = bot.ask(Q, strategy="rag")
    assert gen.citations and {"embed", "route", "generate", "total"} <= set(gen.timings)
    assert gen.usage["prompt_tokens"] > 0 and gen.usage["completion_tokens"] > 0
    quoted = bot.ask(Q, strategy="extract")  # no generation: no generate time, no tokens
    assert quoted.citations and "generate" not in quoted.timings
    assert quoted.usage.get("completion_tokens", 0) == 0


def test_prepare_names_what_it_returns(bot):
    import time

    before = time.perf_counter()
    p = bot.prepare(Q, strategy="rag")
    assert p.strategy.name == "rag" == p.decision.strategy and p.ctx.retrieval_query == Q
    assert p.prompt.messages and isinstance(p.notices, list)
    assert before <= p.started <= time.perf_counter()
    assert {"embed", "route", "prompt"} <= set(p.timings) and all(not k.startswith("_") for k in p.timings)


@pytest.mark.parametrize("query", ["", "   \n\t "])
def test_empty_query_is_a_clear_error(bot, query):
    with pytest.raises(InputError, match="query is empty"):
        bot.ask(query)
    assert not bot.generator.calls


def test_unknown_strategy_is_a_clear_error(bot):
    with pytest.raises(InputError, match="unknown strategy 'best'"):
        bot.ask(Q, strategy="best")


def test_query_longer_than_the_context_window_is_truncated_with_a_notice(app_dir, embedder):
    bot = make_assistant(app_dir, embedder, context_window=300)
    long_q = "Please explain the lease notice period " + "lease notice period for tenants " * 300
    for strategy in ("rag", "few_shot", "tuned"):
        ans = bot.ask(long_q, strategy=strategy)
        assert any("query truncated" in n for n in ans.notices), ans.notices
        call = bot.generator.calls[-1]
        assert bot.generator.count_tokens(call.messages) + 32 <= 300
        assert "Please explain the lease notice period" in call.messages[-1]["content"]


def test_missing_adapter_excludes_tuned_and_says_why(tmp_path, embedder):
    app_dir = write_app(tmp_path / "noadapter", adapter=False)
    bot = make_assistant(app_dir, embedder)
    ans = bot.ask("What does our house style say about topic 3?")
    assert ans.strategy not in ("tuned", "tuned_rag")
    assert "no adapter at" in ans.decision.excluded["tuned"]
    assert "tuned (no adapter at" in ans.decision.reason
    with pytest.raises(InputError, match="strategy 'tuned' is not available: no adapter at"):
        bot.ask(Q, strategy="tuned")


def test_empty_knowledge_base_excludes_rag(app_dir, embedder):
    bot = make_assistant(app_dir, embedder, docs=[])
    ans = bot.ask(Q)
    assert ans.strategy not in ("rag", "tuned_rag")
    assert "is empty" in ans.decision.excluded["rag"]
    with pytest.raises(InputError, match="strategy 'rag' is not available"):
        bot.ask(Q, strategy="rag")


def test_empty_example_bank_excludes_few_shot(tmp_path, embedder):
    app_dir = write_app(tmp_path / "noex", examples=[])
    bot = make_assistant(app_dir, embedder)
    ans = bot.ask("Draft a reminder that rent is due")
    assert ans.strategy != "few_shot" and "few_shot" in ans.decision.excluded


def test_history_is_bounded_and_in_the_prompt(bot):
    history = []
    for i in range(10):
        history += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    bot.ask("Tell me the lease notice period please", history, strategy="tuned")
    msgs = bot.generator.calls[-1].messages
    kept = msgs[1:-1]
    assert len(kept) == 2 * 4  # history_turns default 4
    assert kept[-1]["content"] == "answer 9" and kept[0]["content"] == "question 6"


def test_retrieval_query_rewritten_only_when_it_depends_on_history(bot):
    history = [{"role": "user", "content": "What is the lease notice period?"},
               {"role": "assistant", "content": "60 days."}]
    ans = bot.ask("And does it apply to commercial tenants?", history, strategy="rag")
    assert bot.knowledge_base.queries[-1] == "What is the lease notice period? And does it apply to commercial tenants?"
    assert any("rewritten" in n for n in ans.notices)
    bot.ask("When must security deposits be returned to tenants?", history, strategy="rag")
    assert bot.knowledge_base.queries[-1] == "When must security deposits be returned to tenants?"


def test_dependency_heuristic():
    assert depends_on_history("How much does it cost?")
    assert depends_on_history("what about returns")
    assert depends_on_history("and for kids?")
    assert not depends_on_history("What is the return window for shoes bought online?")
    assert retrieval_query("Is it refundable?", []) == "Is it refundable?"


def test_bad_history_is_a_clear_error(bot):
    with pytest.raises(InputError, match="history"):
        bot.ask(Q, [{"role": "system", "content": "x"}])


def test_streaming_yields_tokens_then_the_answer(bot):
    s = bot.stream(Q, strategy="tuned")
    pieces = list(s)
    assert len(pieces) > 1
    assert s.answer is not None and s.answer.text == "".join(pieces).strip()
    assert s.answer.decision.strategy == "tuned"


def test_components_load_once(app_dir, embedder, monkeypatch):
    bot = make_assistant(app_dir, embedder)
    loads = []
    from hybrid.strategies import examples as ex_mod

    real = ex_mod.ExampleBank.load
    monkeypatch.setattr(ex_mod.ExampleBank, "load", classmethod(lambda cls, *a, **k: loads.append(1) or real(*a, **k)))
    bot.warm_up()
    for _ in range(3):
        bot.ask(Q)
    assert loads == [1]


def test_answer_is_json_serialisable(bot):
    from hybrid.pipeline import answer_to_dict

    d = json.loads(json.dumps(answer_to_dict(bot.ask(Q))))
    assert d["decision"]["strategy"] == d["strategy"]


def test_closing_the_stream_stops_the_model_stream(bot, monkeypatch):
    closed = []
    real = bot.generator.stream

    def stream(*a, **kw):
        inner = real(*a, **kw)

        def wrapped():
            try:
                yield from inner
            finally:
                closed.append(True)
        return wrapped()

    monkeypatch.setattr(bot.generator, "stream", stream)
    tokens = iter(bot.stream("What does our house style say about topic 3?", strategy="tuned"))
    next(tokens)
    tokens.close()
    assert closed == [True]
