"""Router settings: one dataclass per router, loaded from ``configs/router.yaml`` plus an app's
``router.overrides``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import deep_merge

DEFAULT_ROUTER_YAML = Path(__file__).resolve().parents[2] / "configs" / "router.yaml"


def strategy_names() -> tuple[str, ...]:
    """The registered strategies (``hybrid.strategies.strategy_names``), imported when first needed."""
    from hybrid.strategies import strategy_names as names

    return names()


def _ramp_pair(low: float, high: float, name: str) -> None:
    if not low < high:
        raise ValueError(f"{name}_low ({low}) must be < {name}_high ({high})")


@dataclass
class RulesConfig:
    rag_low: float = field(default=0.25, metadata={"help": "top retrieval cosine where rag starts to score"})
    rag_high: float = field(default=0.50, metadata={"help": "top retrieval cosine where rag scores fully"})
    margin_high: float = field(default=0.15, metadata={
        "help": "top-1 minus top-2 cosine that counts as a clear winner (a specific fact)"})
    fewshot_low: float = field(default=0.45, metadata={"help": "example similarity where few_shot starts"})
    fewshot_high: float = field(default=0.80, metadata={"help": "example similarity where few_shot is full"})
    tuned_low: float = field(default=0.45, metadata={"help": "training-prompt similarity where tuned starts"})
    tuned_high: float = field(default=0.80, metadata={"help": "training-prompt similarity where tuned is full"})
    neighbours: int = field(default=3, metadata={"help": "k of the kNN similarity signals"})
    lookup_bonus: float = field(default=0.10, metadata={"help": "added to rag for fact-lookup questions"})
    style_bonus: float = field(default=0.10, metadata={
        "help": "added to few_shot and tuned for drafting/format questions"})
    both_bonus: float = field(default=0.05, metadata={
        "help": "added to tuned_rag so it beats rag when the adapter also knows the topic"})
    min_score: float = field(default=0.15, metadata={"help": "below this best score, use the fallback"})
    fallback: str = field(default="few_shot", metadata={"help": "strategy when no signal is strong"})
    epsilon: float = field(default=0.02, metadata={"help": "scores this close count as a tie: cheapest wins"})
    extract_min: float | None = field(default=None, metadata={
        "help": "route to extract when the zero-shot scorer's confidence is at least this, else decide among "
                "the others; null = off (never by confidence). Fit it with `hybrid router fit-rules`"})
    extract_min_reader: float | None = field(default=None, metadata={
        "help": "the same gate when a tuned reader scores the span (a calibrated probability, another scale "
                "than the zero-shot score); null = off. Fit it with `hybrid router fit-rules`"})
    own_input_words: int | None = field(default=8, metadata={
        "help": "a style question (rewrite/convert/summarize ...) quoting at least this many words carries its "
                "own source: retrieval and extract would only find that text again, so they are set aside; "
                "null = off"})
    extra_scores: dict[str, float] = field(default_factory=dict, metadata={
        "help": "fixed rules score of a registered strategy beyond the built-ins (which have no signal "
                "ramp here); a strategy not named scores 0"})

    def __post_init__(self) -> None:
        _ramp_pair(self.rag_low, self.rag_high, "rag")
        for name in ("extract_min", "extract_min_reader"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or null, got {v}")
        _ramp_pair(self.fewshot_low, self.fewshot_high, "fewshot")
        _ramp_pair(self.tuned_low, self.tuned_high, "tuned")
        if self.margin_high <= 0:
            raise ValueError(f"margin_high must be > 0, got {self.margin_high}")
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.neighbours}")
        if self.own_input_words is not None and (isinstance(self.own_input_words, bool)
                                                 or not isinstance(self.own_input_words, int)
                                                 or self.own_input_words < 1):
            raise ValueError(f"own_input_words must be a whole number >= 1 or null, got {self.own_input_words!r}")
        known = strategy_names()
        if self.fallback not in known:
            raise ValueError(f"fallback must be one of {list(known)}, got {self.fallback!r}")
        for k in self.extra_scores:
            if k not in known:
                raise ValueError(f"extra_scores: unknown strategy {k!r}")


@dataclass
class LearnedConfig:
    epsilon: float = field(default=0.05, metadata={
        "help": "predicted scores within this of the best are equivalent: the cheapest wins"})
    confidence_floor: float = field(default=0.40, metadata={
        "help": "below this calibrated confidence, use the fallback"})
    fallback: str = field(default="best_fixed", metadata={
        "help": "below the floor: 'best_fixed' (the strategy with the best mean score in the training labels), "
                "'rules', or a strategy name"})
    prefer: str = field(default="best_fixed", metadata={
        "help": "among strategies predicted within epsilon of the best: 'best_fixed' keeps the best fixed "
                "strategy when it is one of them (else the cheapest), 'cheapest' always takes the cheapest"})
    l2: float = field(default=1.0, metadata={"help": "L2 penalty (few labelled queries: keep it strong)"})
    steps: int = field(default=500, metadata={"help": "gradient steps (full batch, Adam)"})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate"})
    folds: int = field(default=5, metadata={"help": "cross-validation folds for calibration"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_floor <= 1.0:
            raise ValueError(f"confidence_floor must be in [0, 1], got {self.confidence_floor}")
        known = strategy_names()
        if self.fallback not in ("rules", "best_fixed") and self.fallback not in known:
            raise ValueError(f"fallback must be 'best_fixed', 'rules' or one of {list(known)}, "
                             f"got {self.fallback!r}")
        if self.prefer not in ("best_fixed", "cheapest"):
            raise ValueError(f"prefer must be 'best_fixed' or 'cheapest', got {self.prefer!r}")
        if self.steps < 1 or self.lr <= 0 or self.l2 < 0:
            raise ValueError(f"need steps >= 1, lr > 0, l2 >= 0; got {self.steps}, {self.lr}, {self.l2}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")


@dataclass
class RouterConfig:
    """Thresholds and training settings for the routers.

    ``costs`` as given (YAML, overrides) only overrides: after construction it holds every registered
    strategy's cost, its class ``cost`` unless the config names it.

    >>> cfg = load_router_config(overrides={"rules": {"rag_high": 0.6}})
    >>> cfg.rules.rag_high
    0.6
    """

    rules: RulesConfig = field(default_factory=RulesConfig, metadata={"help": "rules router"})
    learned: LearnedConfig = field(default_factory=LearnedConfig, metadata={"help": "learned router"})
    costs: dict[str, float] = field(default_factory=dict, metadata={
        "help": "relative cost per strategy (prompt length, adapter), used to break near-ties; each "
                "strategy class's `cost` is the default, entries here override it for this config or app"})

    def __post_init__(self) -> None:
        from hybrid.strategies import costs as class_costs

        known = strategy_names()
        for k, v in self.costs.items():
            if k not in known:
                raise ValueError(f"costs: unknown strategy {k!r}")
            if v <= 0:
                raise ValueError(f"costs.{k} must be > 0, got {v}")
        self.costs = {**class_costs(), **{k: float(v) for k, v in self.costs.items()}}


def load_router_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RouterConfig:
    """``configs/router.yaml`` (or ``path``) with an app's overrides merged on top, checked."""
    from core.config import _build, read_yaml

    p = Path(path) if path else DEFAULT_ROUTER_YAML
    data = read_yaml(p) if (path or p.is_file()) else {}
    if overrides:
        data = deep_merge(data, overrides)
    return _build(RouterConfig, data, str(p) + (" (with app overrides)" if overrides else ""))
