"""The learned router: per-strategy logistic regression over [query embedding, rule signals].

Trained from labelled outcomes (JSONL rows ``{"query": ..., "scores": {"rag": 0.8, "tuned": 0.3}}``,
which the evaluation produces): each strategy gets a head predicting its score in [0, 1] (soft-label
cross-entropy; a row may score only some strategies). Deciding is cost-aware: among strategies whose
predicted score is within ``epsilon`` of the best, the cheapest wins. Confidence is calibrated: a
temperature on the softmax of predicted scores is fitted on out-of-fold predictions to the question
"which strategy was really best?"; below ``confidence_floor`` the fallback decides.

Saved as JSON (weights as lists, no pickle) with the app name and the embedder, and refused for any
other app or embedder::

    router = train_learned(X, rows_scores, app_name="legal", embedder=emb, cfg=cfg)
    router.save("apps/legal/router.json")
    LearnedRouter.load("apps/legal/router.json", cfg, app_name="legal", embedder=emb)
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ConfigError, InputError
from core.io import atomic_write_text
from hybrid.routing import ROUTERS
from hybrid.routing.config import LearnedConfig, RouterConfig, strategy_names
from hybrid.routing.signals import RouteContext, Signals
from core.types import Decision

FORMAT = "hybrid-learned-router"
VERSION = 1


def features(ctx: RouteContext) -> np.ndarray:
    return np.concatenate([ctx.query_vec.astype(np.float32), ctx.signals().vector()])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def fit_heads(X: np.ndarray, Y: np.ndarray, M: np.ndarray, cfg: LearnedConfig) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch Adam on masked soft-label binary cross-entropy + L2. X is already standardized."""
    n, d = X.shape
    s = Y.shape[1]
    W = np.zeros((d, s))
    mean = (Y * M).sum(0) / np.maximum(M.sum(0), 1)
    b = np.log(np.clip(mean, 1e-3, 1 - 1e-3) / np.clip(1 - mean, 1e-3, 1))
    mW, vW, mb, vb = np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)
    b1, b2, eps = 0.9, 0.999, 1e-8
    denom = max(M.sum(), 1.0)
    for t in range(1, cfg.steps + 1):
        p = _sigmoid(X @ W + b)
        g = (p - Y) * M / denom
        gW = X.T @ g + cfg.l2 * W / max(n, 1)
        gb = g.sum(0)
        mW = b1 * mW + (1 - b1) * gW
        vW = b2 * vW + (1 - b2) * gW**2
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb**2
        W -= cfg.lr * (mW / (1 - b1**t)) / (np.sqrt(vW / (1 - b2**t)) + eps)
        b -= cfg.lr * (mb / (1 - b1**t)) / (np.sqrt(vb / (1 - b2**t)) + eps)
    return W, b


def fit_temperature(P: np.ndarray, Y: np.ndarray, M: np.ndarray) -> float:
    """Temperature T minimizing the NLL of the truly best strategy under softmax(P / T)."""
    rows = M.sum(1) >= 2  # a row with one scored strategy says nothing about which is best
    if rows.sum() < 2:
        return 0.1
    P, Y, M = P[rows], Y[rows], M[rows]
    best = np.where(M > 0, Y, -np.inf).argmax(1)
    logits_mask = np.where(M > 0, 0.0, -1e9)
    grid = np.exp(np.linspace(math.log(0.005), math.log(2.0), 80))
    nll = []
    for T in grid:
        q = _softmax(P / T + logits_mask)
        nll.append(-np.log(np.clip(q[np.arange(len(best)), best], 1e-9, 1)).mean())
    return float(grid[int(np.argmin(nll))])


@ROUTERS.register("learned")
class LearnedRouter:
    """A trained scorer plus cost-aware, confidence-floored deciding. Load with ``LearnedRouter.load``."""

    name = "learned"

    def __init__(self, model: dict, cfg: RouterConfig | None = None):
        self.model = model
        self.cfg = cfg or RouterConfig()
        self.strategies: list[str] = list(model["strategies"])
        self.mean = np.asarray(model["mean"], dtype=np.float64)
        self.std = np.asarray(model["std"], dtype=np.float64)
        self.W = np.asarray(model["W"], dtype=np.float64)
        self.b = np.asarray(model["b"], dtype=np.float64)
        self.temperature = float(model["temperature"])
        self._rules = None
        self._hashes: set[str] | None = None

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.model, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path | None, cfg: RouterConfig | None = None, *, app_name: str = "",
             embedder=None) -> "LearnedRouter":
        if path is None or not Path(path).is_file():
            raise ConfigError(f"learned router model not found: {path} "
                              f"(train one with `hybrid router train --from results.jsonl --app DIR`)")
        try:
            model = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a router model ({e})") from None
        if not isinstance(model, dict) or model.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a {FORMAT} file")
        if model.get("version") != VERSION:
            raise ConfigError(f"{path}: router model version {model.get('version')!r}, expected {VERSION}")
        if app_name and model.get("app") != app_name:
            raise ConfigError(f"{path}: router model was trained for app {model.get('app')!r}, not {app_name!r}; "
                              f"retrain it with `hybrid router train --app <this app>`")
        if embedder is not None:
            want = model.get("embedder", {})
            if want.get("name") != embedder.name or int(want.get("dim", -1)) != int(embedder.dim):
                raise ConfigError(f"{path}: router model was trained with embedder {want.get('name')!r} "
                                  f"(dim {want.get('dim')}), this app uses {embedder.name!r} (dim {embedder.dim})")
        d = len(model["mean"])
        if np.asarray(model["W"]).shape != (d, len(model["strategies"])):
            raise ConfigError(f"{path}: weight shape does not match {d} features x "
                              f"{len(model['strategies'])} strategies")
        return cls(model, cfg)

    def best_fixed(self, excluded: dict[str, str] | None = None) -> str | None:
        """The available strategy with the best mean score in the training labels (None for old models)."""
        prior = self.model.get("trained", {}).get("mean_scores") or {}
        avail = {s: v for s, v in prior.items() if s not in (excluded or {})}
        return max(avail, key=lambda s: avail[s]) if avail else None

    def trained_on(self, query: str) -> bool:
        """True when ``query`` was one of the labelled questions this router was trained on."""
        if self._hashes is None:
            self._hashes = set(self.model.get("trained", {}).get("query_hashes", []))
        return query_hash(query) in self._hashes

    # -- scoring and deciding --------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> dict[str, float]:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        p = _sigmoid(z @ self.W + self.b)
        return {s: float(v) for s, v in zip(self.strategies, p)}

    def route(self, query: str, ctx: RouteContext) -> Decision:
        x = features(ctx)
        if x.shape[0] != self.mean.shape[0]:
            raise ConfigError(f"router model expects {self.mean.shape[0]} features, got {x.shape[0]}")
        pred = self.predict(x)
        excluded = dict(ctx.excluded)
        for s in strategy_names():
            if s not in pred and s not in excluded:
                excluded[s] = "the learned router was trained without it"
        avail = {s: v for s, v in pred.items() if s not in excluded}
        if not avail:
            from hybrid.routing.rules import raise_no_strategy

            raise_no_strategy(excluded)
        lc: LearnedConfig = self.cfg.learned
        costs = ctx.costs or self.cfg.costs
        best = max(avail.values())
        near = [s for s, v in avail.items() if v >= best - lc.epsilon]
        prior = self.best_fixed(excluded)
        if lc.prefer == "best_fixed" and prior in near:
            pick = prior  # leave the strategy that wins on average only for a clearly better one
        else:
            pick = min(near, key=lambda s: costs.get(s, 1.0))
        names = list(avail)
        probs = _softmax(np.array([avail[s] for s in names]) / self.temperature)
        # calibrated probability that the truly best strategy is one of the near-equivalent set
        conf = float(sum(p for s, p in zip(names, probs) if s in near))
        scores = {s: round(v, 4) for s, v in pred.items()}
        if len(near) == 1:
            why = f"predicted score {avail[pick]:.2f}"
        elif pick == prior and lc.prefer == "best_fixed":
            why = (f"best on average in training, and predicted within {lc.epsilon:.2f} of the best "
                   f"{best:.2f} ({', '.join(sorted(near))})")
        else:
            why = f"cheapest of {', '.join(sorted(near))} (predicted within {lc.epsilon:.2f} of the best {best:.2f})"
        if conf < lc.confidence_floor:
            fb = lc.fallback
            if fb == "rules":
                from hybrid.routing.rules import RulesRouter

                inner = RulesRouter(self.cfg).route(query, ctx)
                return Decision(strategy=inner.strategy, scores=scores, confidence=round(conf, 3),
                                reason=f"learned router unsure (confidence {conf:.2f} < floor "
                                       f"{lc.confidence_floor:.2f}); fallback rules -> {inner.reason}",
                                excluded=excluded)
            if fb == "best_fixed":
                fb = prior or pick
            if fb not in excluded:
                pick = fb
                why = f"confidence {conf:.2f} < floor {lc.confidence_floor:.2f}: fallback {lc.fallback}"
        return Decision(strategy=pick, scores=scores, confidence=round(conf, 3),
                        reason=f"{pick}: {why}; learned from {self.model['trained']['n']} labelled queries",
                        excluded=excluded)


def query_hash(query: str) -> str:
    """Short stable hash of a query's text, to recognise the router's own training questions."""
    import hashlib

    return hashlib.sha256(" ".join(query.split()).lower().encode()).hexdigest()[:16]


def train_learned(X: np.ndarray, scores: Sequence[dict[str, float]], *, app_name: str, embedder,
                  cfg: RouterConfig | None = None, seed: int = 0,
                  queries: Sequence[str] | None = None) -> tuple[LearnedRouter, dict]:
    """Fit the router on feature rows ``X`` (see ``features``) and per-strategy scores. With ``queries``
    the model remembers their hashes, so an evaluation can tell in-sample questions apart.

    Returns the router and a small report (rows, strategies, out-of-fold agreement with the best).
    """
    cfg = cfg or RouterConfig()
    lc = cfg.learned
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(scores):
        raise InputError(f"need one feature row per labelled query, got {X.shape} for {len(scores)} rows")
    if len(X) < 2:
        raise InputError(f"need at least 2 labelled queries to train a router, got {len(X)}")
    strategies = sorted({s for row in scores for s in row})
    unknown = [s for s in strategies if s not in strategy_names()]
    if unknown:
        raise InputError(f"unknown strategy {unknown[0]!r} in the labels")
    Y = np.zeros((len(X), len(strategies)))
    M = np.zeros_like(Y)
    for i, row in enumerate(scores):
        for j, s in enumerate(strategies):
            if s in row and row[s] is not None and math.isfinite(float(row[s])):
                Y[i, j], M[i, j] = float(row[s]), 1.0
    lo, hi = float(Y[M > 0].min()), float(Y[M > 0].max())
    if lo < 0 or hi > 1:  # scores outside [0, 1] (e.g. a 1-5 rubric): rescale, and remember how
        Y = np.where(M > 0, (Y - lo) / max(hi - lo, 1e-9), 0.0)
    mean = X.mean(0)
    std = X.std(0)
    std[std < 1e-6] = 1.0
    Z = (X - mean) / std

    # out-of-fold predictions: an honest basis for the temperature and the reported agreement
    n = len(Z)
    folds = min(lc.folds, n)
    order = np.random.default_rng(seed).permutation(n)
    P = np.zeros_like(Y)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        if len(train) == 0:
            continue
        W, b = fit_heads(Z[train], Y[train], M[train], lc)
        P[test] = _sigmoid(Z[test] @ W + b)
    temperature = fit_temperature(P, Y, M)
    scored2 = M.sum(1) >= 2
    agree = float((np.where(M > 0, P, -np.inf).argmax(1) == np.where(M > 0, Y, -np.inf).argmax(1))[scored2].mean()) \
        if scored2.any() else float("nan")
    W, b = fit_heads(Z, Y, M, lc)
    model = {
        "format": FORMAT, "version": VERSION, "app": app_name,
        "embedder": {"name": embedder.name, "revision": getattr(embedder, "revision", ""), "dim": int(embedder.dim)},
        "strategies": strategies,
        "features": {"embedding_dim": int(X.shape[1] - len(Signals.NAMES)), "signals": list(Signals.NAMES)},
        "mean": mean.tolist(), "std": std.tolist(), "W": W.tolist(), "b": b.tolist(),
        "temperature": temperature, "score_range": [lo, hi],
        "trained": {"n": int(n), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "oof_best_agreement": None if math.isnan(agree) else round(agree, 4),
                    "l2": lc.l2, "steps": lc.steps,
                    "mean_scores": {s: round(float(Y[M[:, j] > 0, j].mean()), 6) if M[:, j].any() else 0.0
                                    for j, s in enumerate(strategies)},
                    "query_hashes": sorted({query_hash(q) for q in queries}) if queries is not None else []},
    }
    report = {"rows": int(n), "strategies": strategies, "oof_best_agreement": model["trained"]["oof_best_agreement"],
              "temperature": round(temperature, 4)}
    return LearnedRouter(model, cfg), report


def cross_validated_decisions(X: np.ndarray, scores: Sequence[dict[str, float]], queries: Sequence[str],
                              contexts: Sequence[RouteContext], *, app_name: str, embedder,
                              cfg: RouterConfig | None = None, folds: int | None = None,
                              seed: int = 0) -> list[Decision]:
    """Out-of-fold routing: every query is decided by a router trained without its fold.

    Folds split by query (one row per query), so no question's own label ever informs its route.
    The decision is the full ``LearnedRouter.route`` (cost-aware ties, confidence floor, fallback),
    exactly what a saved router would do on unseen questions of the same kind.
    """
    cfg = cfg or RouterConfig()
    n = len(X)
    if not (n == len(scores) == len(queries) == len(contexts)):
        raise InputError(f"need one feature row, label, query and context per question; got {n}, {len(scores)}, "
                         f"{len(queries)}, {len(contexts)}")
    k = min(folds or cfg.learned.folds, n)
    if k < 2 or n < 2 * k:
        raise InputError(f"cross-validation needs at least {2 * max(k, 2)} labelled questions, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    out: list[Decision | None] = [None] * n
    X = np.asarray(X, dtype=np.float64)
    for f in range(k):
        test = order[f::k]
        train = np.setdiff1d(order, test)
        router, _ = train_learned(X[train], [scores[i] for i in train], app_name=app_name, embedder=embedder,
                                  cfg=cfg, seed=seed)
        for i in test:
            out[i] = router.route(queries[i], contexts[i])
    return [d for d in out if d is not None]


def routed_scores(decisions: Sequence[Decision], scores: Sequence[dict[str, float]]) -> list[float]:
    """The score each question gets from the strategy its decision chose (0 if that one was not scored)."""
    return [float(s.get(d.strategy, 0.0)) for d, s in zip(decisions, scores)]
