"""Routers: the rules scorer and deciding, fixed, and the learned router (train, save, load, refuse)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ConfigError, InputError
from hybrid.routing import make_router
from hybrid.routing.config import RouterConfig, load_router_config
from hybrid.routing.learned import LearnedRouter, train_learned
from hybrid.routing.rules import RulesRouter, decide, score
from hybrid.routing.signals import RouteContext, Signals, question_type
from indexes.embed import HashEmbedder

COSTS = RouterConfig().costs


def ctx_with(signals: Signals, excluded=None, dim=16):
    rc = RouteContext(query="q", query_vec=np.zeros(dim, dtype=np.float32), retrieve=lambda: [],
                      excluded=dict(excluded or {}), costs=COSTS)
    rc._signals = signals
    return rc


def test_shipped_router_yaml_loads_and_overrides_apply():
    cfg = load_router_config()
    assert cfg.rules.rag_high == 0.5 and cfg.costs["tuned"] < cfg.costs["rag"]
    assert load_router_config(overrides={"rules": {"rag_high": 0.7}}).rules.rag_high == 0.7
    with pytest.raises(ConfigError, match="rag_low"):
        load_router_config(overrides={"rules": {"rag_low": 0.9}})


@pytest.mark.parametrize("signals, expected", [
    (Signals(top=0.7, margin=0.2, example_sim=0.3, adapter_sim=0.2, qtype="lookup"), "rag"),
    (Signals(top=0.1, margin=0.0, example_sim=0.85, adapter_sim=0.2, qtype="style"), "few_shot"),
    (Signals(top=0.1, margin=0.0, example_sim=0.3, adapter_sim=0.9, qtype="other"), "tuned"),
    (Signals(top=0.7, margin=0.1, example_sim=0.3, adapter_sim=0.9, qtype="lookup"), "tuned_rag"),
])
def test_rules_pick_the_strategy_the_signals_point_to(signals, expected):
    d = RulesRouter(load_router_config()).route("q", ctx_with(signals))
    assert d.strategy == expected, d
    assert d.reason.startswith(expected + ":") and "signals:" in d.reason
    assert 0.5 <= d.confidence <= 1.0


def test_rules_weak_signals_use_the_fallback():
    d = RulesRouter(load_router_config()).route("q", ctx_with(Signals()))
    assert d.strategy == "few_shot" and "fallback" in d.reason


def test_rules_never_pick_excluded_and_say_why():
    s = Signals(top=0.7, margin=0.2, example_sim=0.3, adapter_sim=0.9, qtype="lookup")
    d = RulesRouter().route("q", ctx_with(s, {"rag": "kb empty", "tuned_rag": "kb empty"}))
    assert d.strategy == "tuned" and "excluded: rag (kb empty)" in d.reason


def test_decide_is_cost_aware_among_near_ties():
    pick, why, _ = decide({"rag": 0.80, "tuned": 0.79, "few_shot": 0.2}, {}, COSTS,
                          epsilon=0.02, min_score=0.1, fallback="few_shot")
    assert pick == "tuned" and "cheapest" in why
    pick, _, _ = decide({"rag": 0.80, "tuned": 0.70}, {}, COSTS, epsilon=0.02, min_score=0.1, fallback="few_shot")
    assert pick == "rag"


def test_nothing_available_is_a_clear_error():
    with pytest.raises(InputError, match="no strategy can answer"):
        decide({"rag": 1.0}, {"rag": "no kb"}, COSTS, epsilon=0.0, min_score=0.0, fallback="rag")


def test_question_types():
    assert question_type("Draft a termination letter for my tenant") == "style"
    assert question_type("How do I return a jacket?") == "howto"
    assert question_type("What is the deposit cap?") == "lookup"
    assert question_type("tell me something") == "other"


def test_fixed_router_and_unknown_strategy():
    r = make_router("fixed:rag")
    assert r.route("q", ctx_with(Signals())).strategy == "rag"
    with pytest.raises(InputError, match="unknown strategy"):
        make_router("fixed:magic")
    with pytest.raises(InputError, match="not available: no adapter"):
        make_router("fixed:tuned").route("q", ctx_with(Signals(), {"tuned": "no adapter"}))


# -- learned --------------------------------------------------------------------------------------

def synthetic(n=60, dim=16, seed=0):
    """Queries whose embedding's first coordinate says whether retrieval (rag) or style (few_shot) wins."""
    rng = np.random.default_rng(seed)
    X, Y = [], []
    for i in range(n):
        v = rng.normal(size=dim).astype(np.float32)
        rag_wins = i % 2 == 0
        v[0] = 2.0 if rag_wins else -2.0
        v /= np.linalg.norm(v)
        sig = Signals(top=0.7 if rag_wins else 0.2, example_sim=0.3 if rag_wins else 0.8).vector()
        X.append(np.concatenate([v, sig]))
        Y.append({"rag": 0.9 if rag_wins else 0.2, "few_shot": 0.3 if rag_wins else 0.9, "tuned": 0.1})
    return np.array(X), Y


def learned_ctx(x, dim=16, excluded=None):
    rc = ctx_with(Signals(), excluded, dim)
    rc.query_vec = x[:dim].astype(np.float32)
    sig = Signals()
    sig.vector = lambda: x[dim:].astype(np.float32)  # the same signals the row was built from
    rc._signals = sig
    return rc


def test_learned_router_trains_predicts_and_round_trips(tmp_path):
    emb = HashEmbedder(16)
    X, Y = synthetic()
    router, report = train_learned(X, Y, app_name="legal", embedder=emb)
    assert report["rows"] == 60 and report["oof_best_agreement"] >= 0.9
    assert router.route("q", learned_ctx(X[0])).strategy == "rag"
    assert router.route("q", learned_ctx(X[1])).strategy == "few_shot"
    path = tmp_path / "router.json"
    router.save(path)
    data = json.loads(path.read_text())
    assert data["app"] == "legal" and data["embedder"]["name"] == emb.name
    again = LearnedRouter.load(path, app_name="legal", embedder=emb)
    for i in range(4):
        assert again.predict(X[i]) == pytest.approx(router.predict(X[i]))


def test_learned_router_refuses_a_model_for_another_app_or_embedder(tmp_path):
    router, _ = train_learned(*synthetic(), app_name="shopping", embedder=HashEmbedder(16))
    router.save(tmp_path / "router.json")
    with pytest.raises(ConfigError, match="trained for app 'shopping', not 'legal'"):
        LearnedRouter.load(tmp_path / "router.json", app_name="legal", embedder=HashEmbedder(16))
    with pytest.raises(ConfigError, match="embedder"):
        LearnedRouter.load(tmp_path / "router.json", app_name="shopping", embedder=HashEmbedder(32))


def test_learned_router_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        LearnedRouter.load(tmp_path / "missing.json", app_name="x")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a router model"):
        LearnedRouter.load(tmp_path / "bad.json", app_name="x")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a hybrid-learned-router"):
        LearnedRouter.load(tmp_path / "other.json", app_name="x")


def test_learned_router_is_cost_aware():
    X, Y = synthetic()
    # tuned scores as well as the winner everywhere, and it is the cheapest
    Y = [{**y, "tuned": max(y.values())} for y in Y]
    cfg = RouterConfig()
    cfg.learned.prefer = "cheapest"
    router, _ = train_learned(X, Y, app_name="a", embedder=HashEmbedder(16), cfg=cfg)
    d = router.route("q", learned_ctx(X[0]))
    assert d.strategy == "tuned" and "cheapest" in d.reason


def test_learned_router_keeps_the_best_fixed_strategy_in_a_near_tie():
    X, Y = synthetic()
    # tuned is as good as the winner everywhere (so best on average) but the most expensive
    Y = [{**y, "tuned": max(y.values())} for y in Y]
    cfg = RouterConfig()
    router, _ = train_learned(X, Y, app_name="a", embedder=HashEmbedder(16), cfg=cfg)
    assert router.best_fixed() == "tuned"
    ctx = learned_ctx(X[0])
    ctx.costs = {"few_shot": 1.0, "rag": 1.5, "tuned": 3.0, "tuned_rag": 3.5}
    d = router.route("q", ctx)  # rag and tuned predicted alike
    assert d.strategy == "tuned" and "best on average" in d.reason
    cfg.learned.prefer = "cheapest"
    assert router.route("q", ctx).strategy == "rag"


def test_learned_router_falls_back_below_the_confidence_floor():
    X, Y = synthetic()
    cfg = RouterConfig()
    cfg.learned.confidence_floor = 0.9
    router, _ = train_learned(X, Y, app_name="a", embedder=HashEmbedder(16), cfg=cfg)
    router.temperature = 5.0  # a flat softmax: the router is unsure about every query
    d = router.route("q", learned_ctx(X[0]))
    # default fallback: the strategy with the best mean score in the labels (few_shot: 0.6 vs rag 0.55)
    assert d.strategy == "few_shot" and "fallback best_fixed" in d.reason
    cfg.learned.fallback = "rules"
    d = router.route("q", learned_ctx(X[0]))
    assert "unsure" in d.reason and "fallback rules" in d.reason
    cfg.learned.fallback = "tuned"
    assert router.route("q", learned_ctx(X[0])).strategy == "tuned"


def test_router_config_rejects_unknown_fallback_and_prefer():
    from hybrid.routing.config import LearnedConfig

    with pytest.raises(ValueError, match="fallback must be 'best_fixed', 'rules'"):
        LearnedConfig(fallback="magic")
    with pytest.raises(ValueError, match="prefer must be"):
        LearnedConfig(prefer="fastest")


def test_learned_router_skips_excluded_strategies():
    X, Y = synthetic()
    router, _ = train_learned(X, Y, app_name="a", embedder=HashEmbedder(16))
    d = router.route("q", learned_ctx(X[0], excluded={"rag": "kb empty"}))
    assert d.strategy != "rag" and d.excluded["rag"] == "kb empty"
    assert "trained without it" in d.excluded["tuned_rag"]


def test_learned_confidence_is_calibrated_on_held_out_rows():
    X, Y = synthetic(n=120, seed=1)
    router, _ = train_learned(X[:80], Y[:80], app_name="a", embedder=HashEmbedder(16))
    conf, right = [], []
    for x, y in zip(X[80:], Y[80:]):
        d = router.route("q", learned_ctx(x))
        conf.append(d.confidence)
        right.append(d.strategy == max(y, key=y.get))
    # mean confidence tracks accuracy (within 0.15) instead of being pinned at 1.0
    assert abs(np.mean(conf) - np.mean(right)) < 0.15, (np.mean(conf), np.mean(right))


def test_training_needs_labels():
    with pytest.raises(InputError, match="at least 2"):
        train_learned(np.zeros((1, 25)), [{"rag": 1.0}], app_name="a", embedder=HashEmbedder(16))
    with pytest.raises(InputError, match="unknown strategy 'magic'"):
        train_learned(np.zeros((2, 25)), [{"magic": 1.0}] * 2, app_name="a", embedder=HashEmbedder(16))
