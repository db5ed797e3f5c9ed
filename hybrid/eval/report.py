"""Turn per-question results into the evaluation summary, verdict, plots and reports.

Input rows (``results.jsonl``, one per question and strategy)::

    {"question_id": "q1", "type": "retrieval", "strategy": "rag", "routed_to": null,
     "scores": {"f1": 0.8, "em": 0, "rouge_l": .., "bleu": .., "groundedness": .., "primary": 0.8},
     "latency_s": 1.2, "prompt_tokens": 300, "completion_tokens": 40, "contaminated": false,
     "unanswerable": false, "error": null, "flags": []}

``strategy == "auto"`` rows carry the router's choice in ``routed_to``.

    summary = summarize(rows, costs={"few_shot": 1.0, "rag": 1.5, ...})
    write_report(summary, rows, out_dir)   # report.md, report.html, *.png, summary.json
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from hybrid.eval.stats import bootstrap_ci, paired_bootstrap
from core.io import atomic_write_text



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


def cost_line(c: dict[str, Any]) -> str:
    """The report's "Cost at equal quality" sentence."""
    others = [s for s in c["statistically_tied"] if s != c["best"]]
    toks = c.get("tokens_per_answer") or {}
    if not others:
        return (f"Cost at equal quality: the paired tests separate {c['best']} from every other strategy, so "
                f"no strategy matches it at a lower cost.")
    cost = ", ".join(f"{s} {toks[s]:.0f}" for s in sorted(toks, key=lambda s: toks[s])) if toks else ""
    return (f"Cost at equal quality: the paired test cannot separate {', '.join(others)} from {c['best']} "
            f"(95% CI of the difference contains 0); the cheapest of them by tokens per answer is "
            f"{c['cheapest_tied']}" + (f" ({cost})." if cost else "."))


def retrieval_line(r: dict[str, Any]) -> str | None:
    """The report's retrieval sentence, or None when no question named its source."""
    if not r or not r.get("n"):
        return None
    return (f"Retrieval hit@1 {r['hit@1']:.2f} / hit@{r['k']} {r['hit@k']:.2f} over {r['n']} questions with "
            f"known sources (a hit: a retrieved chunk comes from the question's source document).")


def _opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt_ci(m: dict[str, Any]) -> str:
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
    lines.append(f"Best overall: {top} with {_fmt_ci(per[top]['primary'])} (primary score, 95% CI).")
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


# ---------------------------------------------------------------- plots and files


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["strategies"]
    names = list(per)
    files: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    means = [per[s]["primary"]["mean"] for s in names]
    errs = [[m - per[s]["primary"]["ci95"][0] for s, m in zip(names, means)],
            [per[s]["primary"]["ci95"][1] - m for s, m in zip(names, means)]]
    ax.bar(names, means, yerr=errs, capsize=4, color="#4c78a8")
    if "oracle" in summary:
        ax.axhline(summary["oracle"]["primary"], ls="--", color="#e45756", label="oracle")
        ax.legend()
    ax.set_ylabel("primary score (F1 / refusal)")
    ax.set_title("Score by strategy (95% CI)")
    files.append(_save(fig, out / "score_by_strategy.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in names:
        ax.scatter(per[s]["latency_s"]["mean"], per[s]["primary"]["mean"], s=60)
        ax.annotate(s, (per[s]["latency_s"]["mean"], per[s]["primary"]["mean"]), textcoords="offset points",
                    xytext=(5, 5))
    ax.set_xlabel("mean latency per answer (s)")
    ax.set_ylabel("primary score")
    ax.set_title("Quality versus latency")
    files.append(_save(fig, out / "quality_vs_latency.png"))

    routers = summary.get("routers", {})
    if routers:
        labels = sorted({o for r in routers.values() for o in r["confusion"]} |
                        {c for r in routers.values() for v in r["confusion"].values() for c in v})
        fig, axes = plt.subplots(1, len(routers), figsize=(4.5 * len(routers), 4), squeeze=False)
        for ax, (name, r) in zip(axes[0], routers.items()):
            mat = [[r["confusion"].get(o, {}).get(c, 0) for c in labels] for o in labels]
            ax.imshow(mat, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=30)
            ax.set_yticks(range(len(labels)), labels)
            top = max((v for row in mat for v in row), default=0)
            for i, row in enumerate(mat):
                for j, v in enumerate(row):  # white text on dark cells so every count stays readable
                    ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
            ax.set_xlabel(f"{name} chose")
            ax.set_ylabel("oracle best")
            ax.set_title(f"{name}: {r['accuracy_vs_oracle']:.0%} best picks")
        files.append(_save(fig, out / "router_confusion.png"))

    types = sorted({t for s in names for t in per[s]["by_type"]})
    if types:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.8 / max(len(names), 1)
        for i, s in enumerate(names):
            vals = [per[s]["by_type"].get(t, {}).get("mean", 0.0) for t in types]
            ax.bar([x + i * width for x in range(len(types))], vals, width=width, label=s)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(types))], types)
        ax.set_ylabel("primary score")
        ax.set_title("By question type")
        ax.legend(fontsize=7)
        files.append(_save(fig, out / "by_type.png"))
    return files


def render_markdown(summary: dict[str, Any], title: str, images: list[Path]) -> str:
    per = summary["strategies"]
    out = [f"# {title}", "", f"{summary['n_questions']} questions.", "", "## Verdict", ""]
    out += [f"- {v}" for v in summary["verdict"]]
    rline = retrieval_line(summary.get("retrieval") or {})
    if rline:
        out += ["", rline]
    out += ["", "## Scores by strategy (mean [95% CI])", "",
            "| strategy | primary | F1 | EM | ROUGE-L | BLEU | grounded | refusal acc. | latency s | tokens in/out | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, e in per.items():
        ref = "-" if e["refusal_accuracy"] is None else f"{e['refusal_accuracy']:.2f}"
        out.append(f"| {s} | {_fmt_ci(e['primary'])} | {_fmt_ci(e['f1'])} | {e['em']['mean']:.3f} | "
                   f"{e['rouge_l']['mean']:.3f} | {e['bleu']['mean']:.3f} | {_opt(e['groundedness']['mean'])} | {ref} | "
                   f"{e['latency_s']['mean']:.2f} | {e['tokens']['prompt']:.0f}/{e['tokens']['completion']:.0f} | {e['errors']} |")
    if "oracle" in summary:
        o = summary["oracle"]
        out += ["", f"Oracle (best fixed strategy per question): {o['primary']:.3f} "
                    f"[{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}]; best-strategy counts: {o['label_counts']}."]
    if summary.get("routers"):
        out += ["", "## Routers", "",
                "`auto` is the app's router; `learned_cv` is the learned router trained on this run's labels and "
                "scored out-of-fold (every question routed by a model that never saw it), reusing the chosen "
                "strategy's answer.", "",
                "| router | score [95% CI] | best picks [95% CI] | below oracle [95% CI] | vs best fixed [95% CI] | routes |",
                "|---|---|---|---|---|---|"]
        for name, r in summary["routers"].items():
            g, b = r["gap_to_oracle"], r.get("vs_best_fixed")
            vs = (f"{b['diff']:+.3f} vs {b['strategy']} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]" if b else "-")
            routes = ", ".join(f"{k} {v}" for k, v in r["route_counts"].items())
            out.append(f"| {name} | {r['primary']:.3f} [{r['primary_ci95'][0]:.3f}, {r['primary_ci95'][1]:.3f}] | "
                       f"{r['accuracy_vs_oracle']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                       f"{g['diff']:.3f} [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | {vs} | {routes} |")
    c = summary.get("cost_at_equal_quality") or {}
    if c:
        out += ["", cost_line(c)]
    out += ["", "## Paired comparisons (primary score)", "", "| a | b | n | a - b | 95% CI | p |", "|---|---|---|---|---|---|"]
    for p in summary["pairs"]:
        out.append(f"| {p['a']} | {p['b']} | {p['n']} | {p['diff']:+.3f} | [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] | {p['p']:.3f} |")
    out += ["", "## By question type", "", "| strategy | " + " | ".join(sorted({t for e in per.values() for t in e['by_type']})) + " |"]
    types = sorted({t for e in per.values() for t in e["by_type"]})
    out.append("|---|" + "---|" * len(types))
    for s, e in per.items():
        cells = [f"{e['by_type'][t]['mean']:.3f} (n={e['by_type'][t]['n']})" if t in e["by_type"] else "-" for t in types]
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    out += ["", "## Contamination", "", "Questions whose source documents were in the adapter's training data are "
            "reported apart.", "", "| strategy | clean n | clean score | contaminated n | contaminated score |",
            "|---|---|---|---|---|"]
    for s, e in per.items():
        out.append(f"| {s} | {e['clean']['n']} | {e['clean']['primary']:.3f} | {e['contaminated']['n']} | "
                   f"{e['contaminated']['primary']:.3f} |")
    if images:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(out) + "\n"


def _md_to_html(md: str, out: Path) -> str:
    """report.md as a self-contained HTML page: Python-Markdown with its tables extension, the plots
    inlined as data URIs, and raw HTML in the text escaped rather than passed through."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class InlineImages(Treeprocessor):
        def run(self, root):
            for img in root.iter("img"):
                path = out / img.get("src", "")
                if path.is_file():
                    img.set("src", "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())

    conv = markdown.Markdown(extensions=["tables"], output_format="html")
    conv.preprocessors.deregister("html_block")  # our text is never markup: escape it
    conv.inlinePatterns.deregister("html")
    conv.treeprocessors.register(InlineImages(conv), "inline_images", 0)
    body = conv.convert(md)
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em}"
             "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>report</title><style>{style}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_report(summary: dict[str, Any], out_dir: str | Path, *, title: str = "Evaluation report") -> dict[str, Path]:
    """Write summary.json, report.md, report.html (self-contained) and the PNG plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(summary, out)
    md = render_markdown(summary, title, images)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", _md_to_html(md, out))
    return {"summary": out / "summary.json", "markdown": out / "report.md", "html": out / "report.html",
            **{p.stem: p for p in images}}
