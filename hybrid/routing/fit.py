"""Fit the rules router's thresholds offline, from evaluation results (STYLE 10: not by hand).

For every evaluated question the routed score of a candidate setting is

    extract's score              if extract's confidence >= its scorer's threshold
    score of the rules' choice   otherwise (the rules replayed on the question's signals, extract excluded)

so no answer is generated again: the eval rows hold every fixed strategy's score and extract's
confidence, and the signals come from ``Assistant.route_contexts``. The setting kept maximises the
pooled mean score over all datasets (``extract_min`` for the zero-shot scorer, ``extract_min_reader`` for a
tuned reader's calibrated probability: different scales, so one threshold each), with every dataset's mean kept at or above its best fixed strategy
where any setting can. Each dataset is reported against its best fixed strategy with a paired CI::

    data = [FitData.from_rows("legal", rows, bot.route_contexts(...), ...)]
    result = fit_rules(data, RouterConfig(), grid=True)
    result["extract_min"], result["datasets"][0]["diff"], result["datasets"][0]["ci95"]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from core.errors import InputError
from hybrid.routing.config import RouterConfig, strategy_names
from hybrid.routing.rules import pick_without_extract
from hybrid.routing.signals import Signals

RAG_HIGH_GRID = (0.40, 0.45, 0.50, 0.55, 0.60)
FEWSHOT_LOW_GRID = (0.35, 0.40, 0.45, 0.50, 0.55)


@dataclass
class FitQuestion:
    qid: str
    query: str
    scores: dict[str, float]  # fixed strategy -> primary score (extract included)
    confidence: float  # extract's calibrated confidence for this question
    scorer: str = "zero_shot"  # what produced it: "zero_shot" (sentence selection) or "reader" (tuned)


@dataclass
class FitData:
    """One dataset: its questions, their routing signals and the app's router settings."""

    name: str
    questions: list[FitQuestion]
    signals: list[Signals]
    excluded: dict[str, str] = field(default_factory=dict)  # strategies the app cannot run
    cfg: RouterConfig = field(default_factory=RouterConfig)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows or questions left out


def questions_from_rows(rows: Iterable[dict]) -> tuple[list[FitQuestion], dict[str, int]]:
    """Group evaluation rows by question: fixed strategies' primary scores and extract's confidence.
    Questions without a scored extract answer carrying ``confidence`` are counted and left out."""
    by_q: dict[str, dict[str, dict]] = {}
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    known = strategy_names()
    for r in rows:
        if not isinstance(r, dict) or r.get("strategy") not in known:
            continue  # router and baseline rows answer with another strategy's answer
        if "no_reference" in (r.get("flags") or []):
            skip("no reference")
            continue
        sc = r.get("scores") if isinstance(r.get("scores"), dict) else {}
        if r.get("error") or sc.get("primary") is None:
            skip("failed")
            continue
        qid = str(r.get("question_id") if r.get("question_id") is not None else r.get("question"))
        by_q.setdefault(qid, {})[r["strategy"]] = r
    out = []
    for qid, rs in by_q.items():
        ex = rs.get("extract")
        if ex is None or ex.get("confidence") is None:
            skip("no extract answer with a confidence")
            continue
        if len(rs) < 2:
            skip("extract was the only strategy")
            continue
        text = str(ex.get("question") or ex.get("query") or "")
        out.append(FitQuestion(qid=qid, query=text, scores={s: float(r["scores"]["primary"]) for s, r in rs.items()},
                               confidence=float(ex["confidence"]), scorer=scorer_of(ex)))
    return out, skipped


def scorer_of(row: dict) -> str:
    """Which scorer gave an extract row its confidence, from the strategy's notice: a reader's
    ("tuned reader: span ...", "untuned reader: ...") or the zero-shot sentence selector's."""
    notices = row.get("notices") or []
    readers = ("tuned reader:", "untuned reader:")
    return "reader" if any(isinstance(n, str) and n.startswith(readers) for n in notices) else "zero_shot"


def _rules_scores(data: FitData, cfg: RouterConfig) -> np.ndarray:
    """Score each question gets from the rules' choice with extract excluded (and anything the question
    was not evaluated with, as the live router could not have picked what the app cannot run)."""
    out = np.zeros(len(data.questions))
    for i, (q, s) in enumerate(zip(data.questions, data.signals)):
        excl = dict(data.excluded)
        for st in strategy_names():
            if st not in q.scores and st != "extract":
                excl.setdefault(st, "not in the results")
        if all(st in excl for st in strategy_names() if st != "extract"):
            out[i] = q.scores["extract"]  # the router's only choice
            continue
        pick = pick_without_extract(s, cfg.rules, excl, cfg.costs)[0]
        out[i] = q.scores.get(pick, 0.0)
    return out


def _candidates(conf: np.ndarray) -> list[float | None]:
    """None (gate off), then a threshold below every confidence and midway between neighbouring ones:
    any threshold in the same gap routes identically, the middle generalises best."""
    u = np.unique(np.round(conf, 6))
    mids = [float(round((a + b) / 2, 4)) for a, b in zip(u[:-1], u[1:])]
    return [None, 0.0, *mids]


def _with(cfg: RouterConfig, **rules: Any) -> RouterConfig:
    return dataclasses.replace(cfg, rules=dataclasses.replace(cfg.rules, **rules))


SCORERS = ("zero_shot", "reader")
THRESHOLD_KEY = {"zero_shot": "extract_min", "reader": "extract_min_reader"}


def fit_rules(datasets: Sequence[FitData], cfg: RouterConfig | None = None, *, grid: bool = False,
              margin: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Choose ``rules.extract_min`` and ``rules.extract_min_reader`` (and with ``grid`` ``rag_high`` and
    ``fewshot_low``) from evaluation rows.

    The two thresholds gate two scorers whose confidences are on different scales: the zero-shot
    sentence selector's heuristic score and a tuned reader's calibrated probability. Each is fitted on
    the questions its scorer answered (``FitQuestion.scorer``); a scorer no question used keeps its
    current value. Order of preference: no dataset below its best fixed strategy by more than ``margin``
    (else the least total shortfall), then the highest pooled mean, then the fewest changed settings,
    then the lowest thresholds (extract is the cheapest strategy). Returns the values, the pooled score,
    the score of the current setting, and per dataset the routed mean against its best fixed strategy
    with a paired bootstrap CI (``hybrid.eval.stats.paired_bootstrap``).
    """
    from hybrid.eval.stats import paired_bootstrap

    cfg = cfg or RouterConfig()
    datasets = [d for d in datasets if d.questions]
    if not datasets:
        raise InputError("no question has both an extract answer with a confidence and another strategy's "
                         "answer; evaluate with extract and at least one more fixed strategy")
    confs = [np.array([q.confidence for q in d.questions]) for d in datasets]
    kinds = [np.array([q.scorer for q in d.questions]) for d in datasets]
    exts = [np.array([q.scores["extract"] for q in d.questions]) for d in datasets]
    best_fixed = []
    for d in datasets:
        common = [s for s in strategy_names() if all(s in q.scores for q in d.questions)]
        means = {s: float(np.mean([q.scores[s] for q in d.questions])) for s in common}
        bf = max(means, key=lambda s: (means[s], -cfg.costs.get(s, 1.0)))
        best_fixed.append((bf, means[bf], np.array([q.scores[bf] for q in d.questions]), means))
    n_total = sum(len(d.questions) for d in datasets)
    cur = cfg.rules
    current_t = {k: getattr(cur, THRESHOLD_KEY[k]) for k in SCORERS}
    grids = [(cur.rag_high, cur.fewshot_low)]
    if grid:
        grids += [(rh, fl) for rh in RAG_HIGH_GRID for fl in FEWSHOT_LOW_GRID
                  if rh > cur.rag_low and fl < cur.fewshot_high and (rh, fl) != grids[0]]
    present = [k for k in SCORERS if any((kd == k).any() for kd in kinds)]
    candidates = {k: _candidates(np.concatenate([c[kd == k] for c, kd in zip(confs, kinds)])) for k in present}

    masks = [{k: kd == k for k in present} for kd in kinds]

    def routed(rule_scores: list[np.ndarray], ts: dict[str, float | None]) -> list[np.ndarray]:
        out = []
        for c, m, e, r in zip(confs, masks, exts, rule_scores):
            thr = np.full(len(c), np.inf)
            for k, mk in m.items():
                if ts[k] is not None:
                    thr[mk] = ts[k]
            out.append(np.where(c >= thr, e, r))
        return out

    def evaluate(rule_scores: list[np.ndarray], ts: dict[str, float | None]) -> tuple[float, float]:
        got = routed(rule_scores, ts)
        shortfall = sum(max(0.0, bf[1] - float(g.mean()) - margin) for g, bf in zip(got, best_fixed))
        return shortfall, float(sum(g.sum() for g in got) / n_total)

    def key_of(rule_scores, ts, changed):
        shortfall, pooled = evaluate(rule_scores, ts)
        return (round(shortfall, 9), -round(pooled, 9), changed,
                sum(2.0 if ts[k] is None else ts[k] for k in present)), pooled

    best_key, best = None, None
    current = None
    for rh, fl in grids:
        per = [_with(d.cfg, rag_high=rh, fewshot_low=fl) if (rh, fl) != (d.cfg.rules.rag_high, d.cfg.rules.fewshot_low)
               else d.cfg for d in datasets]
        rule_scores = [_rules_scores(d, c) for d, c in zip(datasets, per)]
        changed = int(not math.isclose(rh, cur.rag_high)) + int(not math.isclose(fl, cur.fewshot_low))
        if (rh, fl) == grids[0]:
            current = evaluate(rule_scores, current_t)[1]
        # coordinate search: each scorer's threshold in turn, the others held, twice round
        ts = dict(current_t)
        for _ in range(2):
            for k in present:
                ts[k] = min(candidates[k], key=lambda t: key_of(rule_scores, {**ts, k: t}, changed)[0])
        k_, pooled = key_of(rule_scores, ts, changed)
        if best_key is None or k_ < best_key:
            best_key, best = k_, (rh, fl, dict(ts), rule_scores, pooled)
    rh, fl, ts, rule_scores, pooled = best
    got = routed(rule_scores, ts)
    report = []
    for d, g, c, kd, (bf, bf_mean, bf_scores, means) in zip(datasets, got, confs, kinds, best_fixed):
        diff, ci, p = paired_bootstrap(g.tolist(), bf_scores.tolist(), seed=seed)
        n_ext = int(sum(1 for x, k in zip(c, kd) if ts[k] is not None and x >= ts[k]))
        report.append({"name": d.name, "questions": len(d.questions), "routed": round(float(g.mean()), 4),
                       "best_fixed": {"strategy": bf, "mean": round(bf_mean, 4)},
                       "fixed": {s: round(v, 4) for s, v in sorted(means.items(), key=lambda kv: -kv[1])},
                       "diff": round(diff, 4), "ci95": [round(x, 4) for x in ci], "p": round(p, 4),
                       "to_extract": n_ext, "scorers": sorted(set(kd.tolist())), "skipped": dict(d.skipped)})
    return {"extract_min": ts["zero_shot"], "extract_min_reader": ts["reader"],
            "fitted": present, "rag_high": rh, "fewshot_low": fl, "grid": grid,
            "pooled": {"routed": round(pooled, 4), "questions": n_total,
                       "current_setting": round(current, 4),
                       "best_fixed": round(float(sum(bf[2].sum() for bf in best_fixed)) / n_total, 4)},
            "datasets": report,
            "all_at_least_best_fixed": best_key[0] == 0.0}


def format_fit(result: dict[str, Any]) -> list[str]:
    """The table ``hybrid router fit-rules`` prints."""
    p = result["pooled"]

    def show(key: str, scorer: str) -> str:
        t = result[key]
        kept = "" if scorer in result.get("fitted", SCORERS) else " (no question used this scorer: kept)"
        return f"{key} {'null (off)' if t is None else t}{kept}"

    lines = [f"fitted rules: {show('extract_min', 'zero_shot')}, {show('extract_min_reader', 'reader')}, "
             f"rag_high {result['rag_high']}, "
             f"fewshot_low {result['fewshot_low']}" + ("" if result["grid"] else " (grid off: kept)"),
             f"pooled mean score {p['routed']:.3f} over {p['questions']} questions "
             f"(current setting {p['current_setting']:.3f}; each dataset's best fixed strategy {p['best_fixed']:.3f})",
             "", f"{'dataset':<20}{'n':>5}{'routed':>8}  {'best fixed':<20}{'diff':>7}  {'95% CI':<18}{'p':>6}"
             f"{'extract':>9}"]
    for d in result["datasets"]:
        bf = d["best_fixed"]
        lo, hi = d["ci95"]
        best = f"{bf['strategy']} {bf['mean']:.3f}"
        lines.append(f"{d['name'][:19]:<20}{d['questions']:>5}{d['routed']:>8.3f}  "
                     f"{best:<20}{d['diff']:>+7.3f}  [{lo:+.3f}, {hi:+.3f}]  "
                     f"{d['p']:>5.3f}{d['to_extract']:>9}")
    if not result["all_at_least_best_fixed"]:
        lines += ["", "no setting keeps every dataset at or above its best fixed strategy: the one kept has the "
                      "smallest total shortfall"]
    for d in result["datasets"]:
        if d["skipped"]:
            lines.append(f"{d['name']}: left out " + ", ".join(f"{v} ({k})" for k, v in sorted(d["skipped"].items())))
    return lines


def fitted_yaml(result: dict[str, Any], sources: Sequence[tuple[str, str]], command: str) -> str:
    """A commented YAML of the fitted values: which results they came from and what they scored."""
    p = result["pooled"]
    head = [f"# Rules-router thresholds fitted offline by:", f"#   {command}",
            "# from these evaluation results (app: file, questions, routed vs best fixed, paired 95% CI):"]
    for (app, path), d in zip(sources, result["datasets"]):
        head.append(f"#   {app}: {path}, {d['questions']} questions, {d['routed']:.3f} vs "
                    f"{d['best_fixed']['strategy']} {d['best_fixed']['mean']:.3f} "
                    f"(diff {d['diff']:+.3f}, CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}])")
    head += [f"# pooled mean primary score {p['routed']:.3f} over {p['questions']} questions "
             f"(current setting {p['current_setting']:.3f})",
             "# Use: copy the values into configs/router.yaml's rules section (or --update it), or into an",
             "# app's router.overrides.rules.", "", "rules:"]
    t, tr = result["extract_min"], result.get("extract_min_reader")
    head += [f"  extract_min: {'null' if t is None else t}   # zero-shot extract answers at or above this score",
             f"  extract_min_reader: {'null' if tr is None else tr}   # tuned reader: at or above this probability",
             f"  rag_high: {result['rag_high']}",
             f"  fewshot_low: {result['fewshot_low']}", ""]
    return "\n".join(head)
