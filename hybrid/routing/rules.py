"""The transparent baseline router: a scorer over the shared signals, then thresholds.

Scoring (``score``) maps signals to one number per strategy in about [0, 1]; deciding (``decide``)
drops impossible strategies, applies the minimum score and breaks near-ties by cost. Both are plain
functions so the learned router and the evaluation can reuse them.

``extract`` is gated first, by its own scorer: the strategy's calibrated confidence that its quoted
span answers (``RouteContext.extract_confidence``). At or above the scorer's threshold the answer is
extract's (``rules.extract_min`` for the zero-shot sentence selector, ``rules.extract_min_reader`` for a
tuned reader, whose calibrated probability is on another scale); below it (or when no confidence can be computed) the rules decide among the other
strategies as before. ``hybrid router fit-rules`` sets both from evaluation results.

The strategies come from the registry (``hybrid.strategies.strategy_names``). A strategy registered
beyond the built-ins has no signal ramp here: it scores ``rules.extra_scores[name]`` (0 unless the
router config sets it), so with the defaults the rules pick it only when no signal is strong and it is
``rules.fallback`` (or the cheapest that can run when the fallback cannot); force it with
``--strategy``, or let the learned router learn it from labels. See docs/extending.md.
"""

from __future__ import annotations

import math

from hybrid.routing import ROUTERS
from hybrid.routing.config import RouterConfig, RulesConfig, strategy_names
from hybrid.routing.signals import RouteContext, Signals
from core.types import Decision


def order() -> tuple[str, ...]:
    """Tie-break order among equal costs: the registry's (built-ins first, then registered extras)."""
    return strategy_names()


def ramp(x: float, low: float, high: float) -> float:
    """0 below ``low``, 1 above ``high``, linear between."""
    return min(1.0, max(0.0, (x - low) / (high - low)))


def carries_input(s: Signals, cfg: RulesConfig) -> bool:
    """A style question that quotes the text it is about ("Convert this clause to plain English:
    "..."") carries its own source. Retrieval finds that very text again, so its similarity says
    nothing about whether the sources help, and quoting it back (extract) is no rewrite."""
    return cfg.own_input_words is not None and s.qtype == "style" and s.quoted_words >= cfg.own_input_words


def score(s: Signals, cfg: RulesConfig) -> dict[str, float]:
    # the retrieval signal is void when the question carries its own source (see carries_input)
    r = 0.0 if carries_input(s, cfg) else ramp(s.top, cfg.rag_low, cfg.rag_high)
    m = ramp(s.margin, 0.0, cfg.margin_high)
    e = ramp(s.example_sim, cfg.fewshot_low, cfg.fewshot_high)
    a = ramp(s.adapter_sim, cfg.tuned_low, cfg.tuned_high)
    style = cfg.style_bonus if s.qtype == "style" else 0.0
    lookup = cfg.lookup_bonus if s.qtype == "lookup" else 0.0
    scores = {
        "rag": 0.8 * r + 0.2 * m * r + lookup * r,
        # strong retrieval makes the adapter alone the riskier choice (it may not know the facts)
        "tuned": a * (1.0 - 0.5 * r) + style * a,
        "tuned_rag": math.sqrt(r * a) + (cfg.both_bonus if r > 0 and a > 0 else 0.0) + lookup * r * a,
        "few_shot": e + style,
        # extract's own calibrated confidence; the router gates on it first (extract_gate), so here it
        # is only reported, never compared with the ramps above
        "extract": float(s.extract or 0.0),
    }
    for name in strategy_names():  # registered beyond the built-ins: no ramp, the config's constant
        if name not in scores:
            scores[name] = float(cfg.extra_scores.get(name, 0.0))
    return scores


def decide(scores: dict[str, float], excluded: dict[str, str], costs: dict[str, float], *,
           epsilon: float, min_score: float, fallback: str) -> tuple[str, str, float]:
    """(strategy, why, confidence). Among strategies within ``epsilon`` of the best, the cheapest."""
    avail = {k: v for k, v in scores.items() if k not in excluded}
    if not avail:
        raise_no_strategy(excluded)
    best = max(avail.values())
    if best < min_score:
        pick = fallback if fallback in avail else min(avail, key=lambda k: costs.get(k, 1.0))
        return pick, f"no signal is strong (best {best:.2f} < {min_score:.2f}): fallback", 0.5
    near = [k for k, v in avail.items() if v >= best - epsilon]
    rank = order()
    pick = min(near, key=lambda k: (costs.get(k, 1.0), rank.index(k) if k in rank else len(rank)))
    others = sorted((v for k, v in avail.items() if k != pick), reverse=True)
    lead = avail[pick] - (others[0] if others else 0.0)
    why = ("highest score" if len(near) == 1 else
           f"cheapest of {', '.join(sorted(near))} (within {epsilon:.2f} of the best)")
    # a heuristic, not a probability: 0.5 at a tie, approaching 1 with a clear lead
    return pick, why, round(0.5 + 0.5 * min(1.0, max(0.0, lead)), 3)


def raise_no_strategy(excluded: dict[str, str]):
    from core.errors import InputError

    why = "; ".join(f"{k}: {v}" for k, v in sorted(excluded.items()))
    raise InputError(f"no strategy can answer for this app ({why})")


def explain(pick: str, s: Signals, cfg: RulesConfig) -> str:
    if pick == "rag":
        return f"retrieval found relevant sources (top {s.top:.2f}, rag_high {cfg.rag_high:.2f})"
    if pick == "tuned_rag":
        return (f"relevant sources (top {s.top:.2f}) and the adapter knows the topic "
                f"(training-prompt similarity {s.adapter_sim:.2f})")
    if pick == "extract":
        return (f"a quoted span answers with confidence {s.extract:.2f}" if s.extract is not None else
                f"an extractive reader can quote the answer (retrieval top {s.top:.2f})")
    if pick == "tuned":
        return (f"the adapter knows the topic (training-prompt similarity {s.adapter_sim:.2f}) "
                f"and retrieval is weak (top {s.top:.2f})")
    if pick == "few_shot":
        return f"close worked examples (similarity {s.example_sim:.2f})" + (
            ", style/format question" if s.qtype == "style" else "") + (
            f" that quotes its own input ({s.quoted_words} words): retrieval set aside"
            if carries_input(s, cfg) else "")
    return f"no signal ramp of its own (its score is rules.extra_scores.{pick}, 0 if unset)"


def extract_threshold(cfg: RulesConfig, scorer: str) -> tuple[str, float | None]:
    """(setting name, value) of the gate for this scorer: a tuned reader's or the zero-shot one."""
    name = "extract_min_reader" if scorer == "reader" else "extract_min"
    return name, getattr(cfg, name)


def extract_gate(confidence: float | None, extract_min: float | None) -> bool:
    """The threshold half of extract's scorer-plus-threshold: route to extract on this confidence?"""
    return confidence is not None and extract_min is not None and confidence >= extract_min


def pick_without_extract(s: Signals, cfg: RulesConfig, excluded: dict[str, str],
                         costs: dict[str, float]) -> tuple[str, str, float, dict[str, float]]:
    """What the rules choose among the strategies other than extract: (pick, why, confidence, scores).
    ``hybrid router fit-rules`` replays this offline on the signals of evaluated questions."""
    scores = score(s, cfg)
    excl = {**excluded, "extract": excluded.get("extract", "below its confidence threshold")}
    pick, why, conf = decide(scores, excl, costs, epsilon=cfg.epsilon, min_score=cfg.min_score,
                             fallback=cfg.fallback)
    return pick, why, conf, scores


@ROUTERS.register("rules")
class RulesRouter:
    """Signals -> per-strategy scores -> thresholds. No training needed.

    >>> router = RulesRouter(load_router_config())
    >>> router.route("What is the notice period?", route_ctx).reason  # doctest: +SKIP
    'rag: retrieval found relevant sources (top 0.61, rag_high 0.50); ...'
    """

    name = "rules"

    def __init__(self, cfg: RouterConfig | None = None):
        self.cfg = cfg or RouterConfig()

    def route(self, query: str, ctx: RouteContext) -> Decision:
        s = ctx.signals()
        rc = self.cfg.rules
        costs = ctx.costs or self.cfg.costs
        excluded = dict(ctx.excluded)
        others = [k for k in order() if k != "extract" and k not in excluded]
        # a question quoting the text to rewrite: extract would only quote that text back
        extract_ok = "extract" not in excluded and (not carries_input(s, rc) or not others)
        scorer = ctx.extract_scorer() if extract_ok and ctx.extract_scorer is not None else "zero_shot"
        gate_name, gate = extract_threshold(rc, scorer)
        if extract_ok and gate is not None and ctx.extract_confidence is not None and s.extract is None:
            s.extract = ctx.extract_confidence()  # runs extract once; the pipeline reuses its answer
        if extract_ok and (extract_gate(s.extract, gate) or not others):
            scores = score(s, rc)
            if others:
                why = f"extract confidence {s.extract:.2f} >= {gate_name} {gate:.2f}"
                conf = round(float(s.extract), 3)
            else:
                why, conf = "the only strategy this app can run", 0.5
            pick = "extract"
        else:
            pick, why, conf, scores = pick_without_extract(s, rc, excluded, costs)
        reason = f"{pick}: {explain(pick, s, rc)}; {why}. signals: {s.describe()}"
        if extract_ok and pick != "extract" and s.extract is not None:
            reason += (f". extract not chosen: confidence {s.extract:.2f} < {gate_name} "
                       + ("(off)" if gate is None else f"{gate:.2f}"))
        if excluded:
            reason += ". excluded: " + "; ".join(f"{k} ({v})" for k, v in sorted(excluded.items()))
        return Decision(strategy=pick, scores={k: round(v, 4) for k, v in scores.items()},
                        confidence=conf, reason=reason, excluded=dict(ctx.excluded))
