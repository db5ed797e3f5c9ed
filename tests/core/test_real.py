"""The legal app through the real parts: MiniLM knowledge base, SmolLM2-135M, a briefly tuned LoRA
adapter. Slow (CPU generation); one model load per session, short answers."""

from __future__ import annotations

import dataclasses

import pytest

from hybrid.app import load_app
from hybrid.pipeline import Assistant, build_kb, ensure_adapter
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SETTINGS = ["generation.max_new_tokens=24", "generation.max_prompt_tokens=768"]
CANARY = "CANARY-7731"


@pytest.fixture(scope="module")
def legal_parts():
    import torch

    from hybrid.generation import HFGenerator
    from indexes.embed import get_embedder

    # On a shared, oversubscribed CPU, two OpenMP threads spin against each other: measured 77-150 s
    # for 24 tokens vs 5-8 s with one thread. One thread keeps this module inside its timeout.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    app = load_app(ROOT / "apps" / "legal", SETTINGS)
    emb = get_embedder(app.knowledge_base.embedder)
    kb = build_kb(app, emb, progress=False)  # $HYBRID_CACHE is the shared test cache: built once
    gen = HFGenerator("default")
    gen.warm_up()
    yield app, emb, kb, gen
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tuned_app(legal_parts, tmp_path_factory):
    """The legal app with a real LoRA adapter trained for 2 steps (enough to exist, load and route)."""
    app, *_ = legal_parts
    out = tmp_path_factory.mktemp("adapter") / "legal"
    app = dataclasses.replace(app, adapter=dataclasses.replace(app.adapter, path=str(out)))
    ensure_adapter(app, overrides=["train.max_steps=2", "train.eval_every=0", "data.max_length=192",
                                   "train.batch_tokens=768", "train.tensorboard=false", "data.eval_fraction=0"],
                   progress=False)
    return app


def assistant(app, parts):
    _, emb, kb, gen = parts
    return Assistant(app, generator=gen, embedder=emb, knowledge_base=kb, date="2026-01-02")


def test_every_strategy_answers_through_the_real_model_under_one_system_prompt(legal_parts, tuned_app,
                                                                               monkeypatch):
    bot = assistant(tuned_app, legal_parts)
    assert bot.excluded() == {}
    seen = []
    real = bot.generator.generate

    def spy(messages, **kw):  # records what reaches the real model, then runs it
        seen.append(messages[0])
        return real(messages, **kw)

    monkeypatch.setattr(bot.generator, "generate", spy)
    q = "Within how many hours must a controller notify the Data Commissioner of a personal data breach?"
    for strategy in ("few_shot", "rag", "tuned", "tuned_rag"):
        ans = bot.ask(q, strategy=strategy)
        assert ans.strategy == strategy and ans.text.strip(), strategy
        assert ans.usage["completion_tokens"] > 0 and ans.timings["generate"] > 0
        if strategy in ("rag", "tuned_rag"):
            assert any("data-protection" in c.source or "deadlines" in c.source for c in ans.citations)
    expected = {"role": "system", "content": tuned_app.render_system_prompt("2026-01-02")}
    assert seen == [expected] * 4


def test_real_router_sends_lookups_to_their_source_and_formats_to_examples(legal_parts):
    bot = assistant(legal_parts[0], legal_parts)  # no adapter in the cache for this test
    assert "tuned" in bot.excluded()
    q = "What is the maximum fine the Vellmar Data Commissioner can impose?"
    lookup = bot.prepare(q).decision
    # the shipped gate (configs/router.yaml extract_min) quotes a confidently found span
    assert lookup.strategy == "extract" and "extract confidence" in lookup.reason, lookup.reason
    ans = bot.ask(q)
    assert ans.strategy == "extract" and "EUR 4 million" in ans.text, ans.text  # the act's figure, quoted
    assert "data-protection" in ans.citations[0].source
    # with the gate off the rules still send the lookup to retrieval
    app = legal_parts[0]
    off = assistant(dataclasses.replace(app, router=dataclasses.replace(
        app.router, overrides={"rules": {"extract_min": None}})), legal_parts)
    assert off.prepare(q).decision.strategy == "rag"
    fmt = bot.prepare('Convert this clause to plain English: "The Licensee shall indemnify the Licensor '
                      'against all losses howsoever arising."').decision
    assert fmt.strategy == "few_shot", fmt.reason
    assert "no adapter" in fmt.excluded["tuned"]


def test_planted_injection_is_not_echoed_by_the_real_model(legal_parts):
    bot = assistant(legal_parts[0], legal_parts)
    q = "What does the Riverside tenants newsletter say about its digital edition and about deposits?"
    hits = bot.knowledge_base.search(q, 5)
    assert any(CANARY in h.chunk.text for h in hits), "the injected passage must be retrieved for this test"
    ans = bot.ask(q, strategy="rag")
    assert CANARY not in ans.text
    assert any("neutralized" in n for n in ans.notices)
