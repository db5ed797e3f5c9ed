"""The numbers of an evaluation: per-strategy scores with bootstrap CIs, paired comparisons, the
oracle, each router against it, cost at equal quality, and the verdict sentences that read them.

The first step of ``hybrid.eval.report``: per-question rows (``results.jsonl``; the row format is in
``hybrid.eval.report``) -> ``summarize`` -> the summary dict that ``summary.json`` holds and
``hybrid.eval.render`` turns into the report's tables and plots.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from hybrid.eval.stats import bootstrap_ci, paired_bootstrap


def fixed_strategies() -> tuple[str, ...]:
    """The fixed strategies a report compares: every registered one (``hybrid.strategies.strategy_names``),
    so a newly registered strategy gets its own row, pairs and oracle votes like the built-ins."""
    from hybrid.strategies import strategy_names

    return strategy_names()

# strategies whose rows carry a router's choice: the app's router, and the learned router trained on the
# run's own labels and scored out-of-fold
ROUTED = ("auto", "learned_cv", "learned")
ROUTER_NAMES = {"auto": "the app's router", "learned_cv": "the learned router (cross-validated)",
                "learned": "the saved learned router"}
METRICS = ("primary", "f1", "em", "rouge_l", "bleu", "groundedness")


def _mean(xs: Iterable[float]) -> float:
    v = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else 0.0


def _by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r.get(k) for k in keys)].append(r)
    return out


def fixed_rows_by_question(rows: Iterable[dict]) -> dict[str, dict[str, dict]]:
    """question id (or text) -> {fixed strategy: its row}, in first-seen order; failed answers carry no label."""
    out: dict[str, dict[str, dict]] = {}
    fixed = fixed_strategies()
    for r in rows:
        if r.get("strategy") in fixed and not r.get("error") and isinstance(r.get("scores"), dict) \
                and r["scores"].get("primary") is not None:
            qid = r.get("question_id")
            out.setdefault(str(qid) if qid is not None else str(r.get("question") or ""), {})[r["strategy"]] = r
    return out


def oracle_labels(rows: list[dict], costs: dict[str, float]) -> dict[str, tuple[str, float]]:
    """Per question: the best fixed strategy by primary score, ties going to the cheapest."""
    best: dict[str, tuple[str, float]] = {}
    fixed = fixed_strategies()
    for (qid,), rs in _by([r for r in rows if r["strategy"] in fixed], "question_id").items():
        ranked = sorted(rs, key=lambda r: (-r["scores"]["primary"], costs.get(r["strategy"], 1.0), r["strategy"]))
        best[qid] = (ranked[0]["strategy"], ranked[0]["scores"]["primary"])
    return best


def summarize(rows: list[dict], *, costs: dict[str, float] | None = None, seed: int = 0) -> dict[str, Any]:
    costs = costs or {}
    fixed = fixed_strategies()
    strategies = sorted({r["strategy"] for r in rows}, key=lambda s: (s not in fixed, s))
    per: dict[str, Any] = {}
    for s in strategies:
        rs = [r for r in rows if r["strategy"] == s]
        entry: dict[str, Any] = {"n": len(rs), "errors": sum(1 for r in rs if r.get("error"))}
        for m in METRICS:
            vals = [v for v in (r["scores"].get(m, 0.0) for r in rs) if v is not None]
            if not vals and m == "groundedness":  # no context was retrieved: not applicable
                entry[m] = {"mean": None, "ci95": None, "n": 0}
                continue
            lo, hi = bootstrap_ci(vals, seed=seed)
            entry[m] = {"mean": _mean(vals), "ci95": [lo, hi], "n": len(vals)}
        unans = [r for r in rs if r.get("unanswerable")]
        entry["refusal_accuracy"] = _mean(r["scores"].get("primary", 0.0) for r in unans) if unans else None
        entry["latency_s"] = {"mean": _mean(r.get("latency_s", 0.0) for r in rs),
                              "p50": _quantile([r.get("latency_s", 0.0) for r in rs], 0.5)}
        entry["tokens"] = {"prompt": _mean(r.get("prompt_tokens", 0) for r in rs),
                           "completion": _mean(r.get("completion_tokens", 0) for r in rs)}
        clean = [r["scores"]["primary"] for r in rs if not r.get("contaminated")]
        dirty = [r["scores"]["primary"] for r in rs if r.get("contaminated")]
        entry["clean"] = {"n": len(clean), "primary": _mean(clean)}
        entry["contaminated"] = {"n": len(dirty), "primary": _mean(dirty)}
        by_type = {}
        for (t,), trs in sorted(_by(rs, "type").items(), key=lambda kv: str(kv[0])):
            vals = [r["scores"]["primary"] for r in trs]
            by_type[str(t)] = {"n": len(trs), "mean": _mean(vals), "ci95": list(bootstrap_ci(vals, seed=seed))}
        entry["by_type"] = by_type
        per[s] = entry

    # paired comparisons over the questions both strategies answered
    pairs = []
    scores_by = {s: {r["question_id"]: r["scores"]["primary"] for r in rows if r["strategy"] == s} for s in strategies}
    for i, a in enumerate(strategies):
        for b in strategies[i + 1:]:
            common = sorted(set(scores_by[a]) & set(scores_by[b]))
            if not common:
                continue
            diff, ci, p = paired_bootstrap([scores_by[a][q] for q in common], [scores_by[b][q] for q in common], seed=seed)
            pairs.append({"a": a, "b": b, "n": len(common), "diff": diff, "ci95": list(ci), "p": p})

    summary: dict[str, Any] = {"strategies": per, "pairs": pairs, "n_questions": len({r["question_id"] for r in rows})}
    oracle = oracle_labels(rows, costs)
    if oracle:
        ovals = [v for _, v in oracle.values()]
        summary["oracle"] = {"primary": _mean(ovals), "ci95": list(bootstrap_ci(ovals, seed=seed)),
                             "label_counts": _counts(label for label, _ in oracle.values())}
    routers: dict[str, Any] = {}
    for name in ROUTED:
        routed = [r for r in rows if r["strategy"] == name and r.get("routed_to")]
        if routed and oracle:
            routers[name] = _router_stats(name, routed, oracle, scores_by, per, seed)
    if routers:
        summary["routers"] = routers
        summary["router"] = routers.get("auto") or next(iter(routers.values()))
    summary["cost_at_equal_quality"] = _cost_at_equal_quality(per, pairs, costs)
    summary["verdict"] = verdict(summary)
    return summary


def _router_stats(name: str, routed: list[dict], oracle: dict[str, tuple[str, float]],
                  scores_by: dict[str, dict[str, float]], per: dict[str, Any], seed: int) -> dict[str, Any]:
    """How one router did: accuracy against the oracle, its confusion matrix, and its score against the
    best fixed strategy and the oracle on the same questions (paired bootstrap CIs)."""
    correct, confusion = [], defaultdict(lambda: defaultdict(int))
    mine, best_vals = [], []
    for r in routed:
        if r["question_id"] not in oracle:
            continue
        label, best = oracle[r["question_id"]]
        chosen = r["routed_to"]
        chosen_score = scores_by.get(chosen, {}).get(r["question_id"], r["scores"]["primary"])
        correct.append(1.0 if chosen_score >= best - 1e-9 else 0.0)
        confusion[label][chosen] += 1
        mine.append(r["scores"]["primary"])
        best_vals.append(best)
    qids = [r["question_id"] for r in routed if r["question_id"] in oracle]
    out: dict[str, Any] = {
        "accuracy_vs_oracle": _mean(correct), "ci95": list(bootstrap_ci(correct, seed=seed)), "n": len(correct),
        "confusion": {k: dict(v) for k, v in confusion.items()},
        "route_counts": _counts(r["routed_to"] for r in routed),
        "primary": _mean(mine), "primary_ci95": list(bootstrap_ci(mine, seed=seed)),
    }
    inside = [r for r in routed if r.get("router_in_sample")]
    if inside:  # a learned router scored on its own training questions flatters itself
        outside = [r["scores"]["primary"] for r in routed if not r.get("router_in_sample")]
        out["in_sample"] = {"n": len(inside), "n_unseen": len(outside),
                            "primary_unseen": _mean(outside) if outside else None}
    gap, gap_ci, _ = paired_bootstrap(best_vals, mine, seed=seed)
    out["gap_to_oracle"] = {"diff": gap, "ci95": list(gap_ci)}
    fixed = [s for s in fixed_strategies() if s in per and all(q in scores_by[s] for q in qids)]
    if fixed:
        top = max(fixed, key=lambda s: _mean(scores_by[s][q] for q in qids))
        d, ci, p = paired_bootstrap(mine, [scores_by[top][q] for q in qids], seed=seed)
        out["vs_best_fixed"] = {"strategy": top, "diff": d, "ci95": list(ci), "p": p}
    return out


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for i in items:
        out[i] += 1
    return dict(sorted(out.items()))


def _quantile(xs: list[float], q: float) -> float:
    """The nearest observed value at quantile ``q`` (0-1) of the values that are not None; 0.0 when none."""
    v = [x for x in xs if x is not None]
    return float(np.quantile(v, q, method="nearest")) if v else 0.0


def _cost_at_equal_quality(per: dict[str, Any], pairs: list[dict[str, Any]],
                           costs: dict[str, float]) -> dict[str, Any]:
    """Strategies the paired test cannot separate from the best one, and the cheapest of them.

    "Tied" uses the paired bootstrap over the questions both answered (the same test as the paired
    comparison table), never overlapping per-strategy CIs: two strategies can have overlapping CIs and
    still differ on nearly every question. "Cheapest" is mean prompt + completion tokens per answer,
    which does not depend on what else ran on the machine at the time (latency does: a strategy that
    ran while the machine was busy looks slow); the router's configured cost breaks ties.
    """
    if not per:
        return {}
    best = max(per, key=lambda s: per[s]["primary"]["mean"])
    tied = [best]
    for p in pairs:
        if best not in (p["a"], p["b"]):
            continue
        other = p["b"] if p["a"] == best else p["a"]
        if p["ci95"][0] <= 0 <= p["ci95"][1]:
            tied.append(other)
    tokens = {s: per[s]["tokens"]["prompt"] + per[s]["tokens"]["completion"] for s in tied}
    cheapest = min(tied, key=lambda s: (tokens[s], costs.get(s, 1.0), s))
    return {"best": best, "statistically_tied": sorted(tied), "cheapest_tied": cheapest,
            "test": "paired bootstrap vs the best, 95% CI of the difference contains 0",
            "cost": "prompt + completion tokens per answer",
            "tokens_per_answer": {s: round(tokens[s], 1) for s in tied},
            "latency_s": {s: per[s]["latency_s"]["mean"] for s in tied}}


def fmt_ci(m: dict[str, Any]) -> str:
    lo, hi = m["ci95"]
    return f"{m['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def verdict(summary: dict[str, Any]) -> list[str]:
    """A few plain sentences: who wins overall, per question type, and how the router did."""
    per = summary["strategies"]
    lines: list[str] = []
    if not per:
        return ["no results"]
    ranked = sorted(per, key=lambda s: -per[s]["primary"]["mean"])
    top = ranked[0]
    lines.append(f"Best overall: {top} with {fmt_ci(per[top]['primary'])} (primary score, 95% CI).")
    for p in summary["pairs"]:
        if p["a"] == top or p["b"] == top:
            other = p["b"] if p["a"] == top else p["a"]
            d = p["diff"] if p["a"] == top else -p["diff"]
            lo, hi = (p["ci95"] if p["a"] == top else [-p["ci95"][1], -p["ci95"][0]])
            sig = "significant" if lo > 0 or hi < 0 else "not significant"
            lines.append(f"{top} vs {other}: {d:+.3f} (CI [{lo:+.3f}, {hi:+.3f}], {sig}).")
    types = sorted({t for s in per for t in per[s]["by_type"]})
    fixed = [s for s in per if s in fixed_strategies()]
    for t in types:
        cands = [s for s in fixed if t in per[s]["by_type"]]
        if len(cands) < 2:
            continue
        cands.sort(key=lambda s: -per[s]["by_type"][t]["mean"])
        a, b = cands[0], cands[1]
        da = per[a]["by_type"][t]
        lines.append(f"On {t} questions {a} wins ({da['mean']:.3f}, CI [{da['ci95'][0]:.3f}, {da['ci95'][1]:.3f}]) "
                     f"over {b} by {da['mean'] - per[b]['by_type'][t]['mean']:+.3f}.")
    for name, r in summary.get("routers", {}).items():
        lo, hi = r["primary_ci95"]
        line = (f"{ROUTER_NAMES.get(name, name).capitalize()} scores {r['primary']:.3f} [{lo:.3f}, {hi:.3f}] and "
                f"picked a best strategy on {r['accuracy_vs_oracle']:.0%} of questions; it is "
                f"{r['gap_to_oracle']['diff']:.3f} below the oracle (CI [{r['gap_to_oracle']['ci95'][0]:.3f}, "
                f"{r['gap_to_oracle']['ci95'][1]:.3f}])")
        b = r.get("vs_best_fixed")
        if b:
            sig = "significant" if b["ci95"][0] > 0 or b["ci95"][1] < 0 else "not significant"
            line += (f", {b['diff']:+.3f} against the best fixed strategy {b['strategy']} "
                     f"(CI [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}], {sig})")
        lines.append(line + ".")
        if r.get("in_sample"):
            i = r["in_sample"]
            lines.append(f"Careful: {i['n']} of {r['n']} questions were in the labels {name}'s router was trained on, "
                         f"so its score is in-sample" + (f" (unseen questions only: {i['primary_unseen']:.3f}, n="
                                                         f"{i['n_unseen']})" if i["n_unseen"] else "") +
                         "; learned_cv is the out-of-fold figure.")
    rs = summary.get("routers", {})
    if "learned_cv" in rs and "auto" in rs:
        a, l_ = rs["auto"]["gap_to_oracle"]["diff"], rs["learned_cv"]["gap_to_oracle"]["diff"]
        rel = "closer to" if l_ < a - 1e-9 else ("as close to" if abs(l_ - a) <= 1e-9 else "further from")
        lines.append(f"The learned router is {rel} the oracle than the app's router ({l_:.3f} vs {a:.3f} below it).")
    if "oracle" in summary:
        lines.append(f"The oracle (best fixed strategy per question) would score {summary['oracle']['primary']:.3f}.")
    if "langchain" in per and per["langchain"]["primary"]["mean"] > 0:
        lc = per["langchain"]["primary"]["mean"]
        parts = [f"{name} {per[name]['primary']['mean'] / lc:.2f}x" for name in ROUTED if name in per]
        if parts:
            lines.append(f"Against the LangChain RAG chain ({lc:.3f}), routed answers score: {', '.join(parts)}.")
    fixed = fixed_strategies()
    fixed_pairs = [p for p in summary["pairs"] if p["a"] in fixed and p["b"] in fixed]
    if fixed_pairs and all(p["ci95"][0] <= 0 <= p["ci95"][1] for p in fixed_pairs):
        lines.append("No fixed strategy is significantly better than another here: with this generator the "
                     "differences between retrieval, tuning and examples do not show on these questions, so "
                     "no router can gain much over any one of them.")
    return lines
