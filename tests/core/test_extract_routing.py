"""The rules router's extract gate: extract's confidence is a scorer, ``rules.extract_min`` its threshold;
below it the rules decide among the other strategies. In the pipeline extract runs once per query."""

from __future__ import annotations

import numpy as np
import pytest

import hybrid.strategies.extract as extract_mod
from hybrid.routing.config import RouterConfig, RulesConfig
from hybrid.routing.rules import RulesRouter, extract_gate
from hybrid.routing.signals import RouteContext, Signals
from tests.core.conftest import make_assistant, write_app

LOOKUP = Signals(top=0.7, margin=0.2, example_sim=0.3, adapter_sim=0.2, qtype="lookup")  # rules pick rag


def ctx(conf, signals=LOOKUP, excluded=None):
    calls = []

    def confidence():
        calls.append(1)
        return conf

    rc = RouteContext(query="q", query_vec=np.zeros(8, dtype=np.float32), retrieve=lambda: [],
                      excluded=dict(excluded or {}), costs=RouterConfig().costs,
                      extract_confidence=confidence)
    rc._signals = Signals(**{k: v for k, v in signals.to_dict().items()})
    return rc, calls


def router(extract_min):
    return RulesRouter(RouterConfig(rules=RulesConfig(extract_min=extract_min)))


def test_gate_routes_to_extract_at_or_above_the_threshold():
    assert extract_gate(0.6, 0.6) and not extract_gate(0.59, 0.6)
    assert not extract_gate(None, 0.6) and not extract_gate(0.99, None)  # no signal, or gate off
    rc, calls = ctx(0.8)
    d = router(0.6).route("q", rc)
    assert d.strategy == "extract" and calls == [1]
    assert "extract confidence 0.80 >= extract_min 0.60" in d.reason and d.scores["extract"] == 0.8


def test_below_the_threshold_the_rules_choose_among_the_others():
    rc, calls = ctx(0.4)
    d = router(0.6).route("q", rc)
    assert d.strategy == "rag" and calls == [1]
    assert "extract not chosen: confidence 0.40 < extract_min 0.60" in d.reason
    # the same question with extract's threshold off, or no confidence at all: the rules' choice
    assert router(None).route("q", ctx(0.99)[0]).strategy == "rag"
    assert router(0.6).route("q", ctx(None)[0]).strategy == "rag"


def test_extract_is_never_the_cheap_fallback_and_is_not_asked_when_excluded():
    weak = Signals(top=0.1, margin=0.0, example_sim=0.1, adapter_sim=0.1, qtype="other")
    rc, _ = ctx(0.1, weak, excluded={"few_shot": "no examples"})
    assert router(0.6).route("q", rc).strategy != "extract"  # below min_score the cheapest is not extract
    rc, calls = ctx(0.9, excluded={"extract": "no knowledge base"})
    assert router(0.6).route("q", rc).strategy == "rag" and calls == []
    rc, _ = ctx(0.1, excluded={s: "x" for s in ("few_shot", "rag", "tuned", "tuned_rag")})
    d = router(0.6).route("q", rc)
    assert d.strategy == "extract" and "only strategy" in d.reason


def test_learned_features_do_not_change_with_the_extract_signal():
    a = Signals(top=0.5).vector()
    b = Signals(top=0.5, extract=0.9).vector()
    assert np.array_equal(a, b) and len(a) == len(Signals.NAMES)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = extract_mod.select_span

    def counting(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(extract_mod, "select_span", counting)
    return calls


@pytest.mark.parametrize("extract_min, expected", [(0.0, "extract"), (None, None)])  # None: the shipped default
def test_pipeline_runs_extract_once_per_query(tmp_path, embedder, counted, extract_min, expected):
    extra = "router:\n  overrides: {rules: {extract_min: %s}}\n" % ("null" if extract_min is None else extract_min)
    bot = make_assistant(write_app(tmp_path / "app", extra=extra), embedder)
    ans = bot.ask("What is the lease notice period?")
    if expected == "extract":
        assert ans.strategy == "extract" and ans.confidence is not None
        assert len(counted) == 1  # scored for routing, then reused as the answer: not run twice
        assert "60 days" in ans.text
    else:
        assert ans.strategy != "extract" and len(counted) == 0  # gate off: extract is never run
    counted.clear()
    bot.ask("What is the lease notice period?", strategy="rag")  # a fixed strategy never scores extract
    assert counted == []


def test_a_tuned_reader_is_gated_on_its_own_threshold():
    # the zero-shot score and a tuned reader's calibrated probability are different scales: a reader's
    # 0.35 passes extract_min_reader 0.3 while the zero-shot gate (0.5) would refuse the same number
    cfg = RouterConfig(rules=RulesConfig(extract_min=0.5, extract_min_reader=0.3))
    rc, calls = ctx(0.35)
    rc.extract_scorer = lambda: "reader"
    d = RulesRouter(cfg).route("q", rc)
    assert d.strategy == "extract" and "extract_min_reader 0.30" in d.reason and calls == [1]
    rc, _ = ctx(0.35)
    rc.extract_scorer = lambda: "zero_shot"
    d = RulesRouter(cfg).route("q", rc)
    assert d.strategy == "rag" and "confidence 0.35 < extract_min 0.50" in d.reason
    # the reader's gate off: extract is not even scored for a reader app
    rc, calls = ctx(0.99)
    rc.extract_scorer = lambda: "reader"
    d = RulesRouter(RouterConfig(rules=RulesConfig(extract_min=0.1))).route("q", rc)
    assert d.strategy == "rag" and calls == []
    with pytest.raises(ValueError, match="extract_min_reader must be in"):
        RulesConfig(extract_min_reader=1.5)


# a style question that quotes its own input: retrieval finds the quoted clause itself
REWRITE = Signals(top=0.7, margin=0.2, example_sim=0.5, adapter_sim=0.2, qtype="style", quoted_words=25)


def test_quoted_words_counts_the_longest_quoted_passage():
    from hybrid.routing.signals import quoted_words

    assert quoted_words('Convert to plain English: "The Tenant shall not keep any animal."') == 7
    assert quoted_words("Rewrite \u201cno failure or delay shall operate as a waiver\u201d simply") == 9
    assert quoted_words("Summarize 'a b c' and 'd e f g h'") == 5
    assert quoted_words("What is the tenant's deposit and the landlord's duty?") == 0  # apostrophes
    assert quoted_words("When is rent due?") == 0


def test_a_question_carrying_its_own_input_sets_retrieval_and_extract_aside():
    rc, calls = ctx(0.9, REWRITE)
    d = router(0.6).route("q", rc)
    assert d.strategy == "few_shot" and calls == []  # extract is not even scored
    assert "quotes its own input (25 words)" in d.reason and d.scores["rag"] == 0.0
    # the same signals with a short quote, or not a style question, or the rule off: as before
    short = Signals(**{**REWRITE.to_dict(), "quoted_words": 3})
    assert router(0.6).route("q", ctx(0.9, short)[0]).strategy == "extract"
    lookup = Signals(**{**REWRITE.to_dict(), "qtype": "lookup"})
    assert router(0.6).route("q", ctx(0.9, lookup)[0]).strategy == "extract"
    off = RulesRouter(RouterConfig(rules=RulesConfig(extract_min=0.6, own_input_words=None)))
    assert off.route("q", ctx(0.4, REWRITE)[0]).strategy == "rag"
    # extract still answers when it is the only strategy the app can run
    only = {n: "absent" for n in ("few_shot", "rag", "tuned", "tuned_rag")}
    assert router(0.6).route("q", ctx(0.9, REWRITE, excluded=only)[0]).strategy == "extract"


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_own_input_words_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="own_input_words"):
        RulesConfig(own_input_words=bad)
