"""``hybrid router train --from results.jsonl --app DIR``: fit the learned router on labelled outcomes.
``hybrid router fit-rules --from results.jsonl --app DIR``: fit the rules router's thresholds offline."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from hybrid.cli.ask import app_option
from hybrid.cli.options import set_option
from hybrid.routing.config import strategy_names  # the fixed strategies, extract included


def read_labels(path: Path, questions: Path | None = None,
                reasons: dict[str, int] | None = None) -> tuple[list[str], list[dict[str, float]], int]:
    """(queries, per-strategy scores, skipped rows) from either shape:

    - ``{"query": "...", "scores": {"rag": 0.8, "tuned": 0.4}}`` (one row per query), or
    - evaluation rows ``{"question_id", "strategy", "scores": {"primary": ..}}`` (one per question and
      strategy; the text comes from the row's ``question``/``query`` or from ``questions``' ``id``).
    A row that fits neither is a counted skip, never a crash; ``reasons`` (when given) receives the
    count per reason: ``"no scores"``, ``"router:auto"`` (rows of routers and baselines, whose score is
    another strategy's answer), ``"no reference"``, ``"failed"``, ``"no question text"``.
    """
    from core.errors import InputError
    from core.io import read_jsonl

    if not path.is_file():
        raise InputError(f"labels file not found: {path}")
    texts: dict[str, str] = {}
    if questions is not None and questions.is_file():
        for _, q in read_jsonl(questions):
            if isinstance(q, dict) and q.get("id") is not None:
                texts[str(q["id"])] = str(q.get("question") or q.get("query") or "")
    from hybrid.eval.report import fixed_rows_by_question, fixed_strategies

    known = strategy_names()  # the registry's: the same set fixed_strategies() gives the report
    why: dict[str, int] = reasons if reasons is not None else {}

    def skip(reason: str) -> None:
        why[reason] = why.get(reason, 0) + 1

    direct: list[tuple[str, dict[str, float]]] = []
    eval_rows: list[dict] = []
    for _, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("scores"), dict):
            skip("no scores")
            continue
        scores = row["scores"]
        query = str(row.get("query") or row.get("question") or "").strip()
        if scores and set(scores) <= set(known):
            try:
                clean = {k: float(v) for k, v in scores.items() if v is not None}
            except (TypeError, ValueError):
                skip("no scores")
                continue
            if query and clean:
                direct.append((query, clean))
            else:
                skip("no question text" if clean else "no scores")
            continue
        if row.get("strategy") not in fixed_strategies():
            skip(f"router:{row.get('strategy')}")
        elif "no_reference" in (row.get("flags") or []):
            skip("no reference")  # F1 against an empty reference labels nothing
        elif row.get("error") or row["scores"].get("primary") is None:
            skip("failed")
        else:
            eval_rows.append(row)
    grouped: dict[str, dict[str, float]] = {}
    order: list[str] = []
    for qid, by_strategy in fixed_rows_by_question(eval_rows).items():
        any_row = next(iter(by_strategy.values()))
        text = str(any_row.get("question") or any_row.get("query") or "").strip() or texts.get(qid, "")
        if not text:  # no text for this question anywhere
            for _ in by_strategy:
                skip("no question text")
            continue
        texts[qid] = text
        grouped[qid] = {st: float(r["scores"]["primary"]) for st, r in by_strategy.items()}
        order.append(qid)
    rows = direct + [(texts[k], grouped[k]) for k in order]
    return [q for q, _ in rows], [s for _, s in rows], sum(why.values())


def explain_skipped(reasons: dict[str, int]) -> str:
    """``300 rows skipped: 250 are router or baseline rows (auto 100, ...), 50 had no reference``."""
    total = sum(reasons.values())
    if not total:
        return "no rows skipped"
    routers = {k.split(":", 1)[1]: v for k, v in reasons.items() if k.startswith("router:")}
    parts = []
    if routers:
        parts.append(f"{sum(routers.values())} are router or baseline rows "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(routers.items()))}), whose answers are another "
                     f"strategy's")
    words = {"no reference": "had no reference answer", "failed": "were failed answers",
             "no question text": "had no question text (pass --questions with their ids)",
             "no scores": "had no readable scores"}
    for key, text in words.items():
        if reasons.get(key):
            parts.append(f"{reasons[key]} {text}")
    return f"{total} rows skipped: " + ", ".join(parts)


def format_report(report: dict) -> list[str]:
    """The comparison table ``hybrid router train`` prints (``--json`` prints ``report`` raw)."""
    lines = [f"learned router fitted on {report['rows']} labelled questions "
             f"({', '.join(report.get('strategies', []))}); saved to {report['saved']}"]
    if report.get("skipped_rows"):
        lines.append(report["skipped_explained"])
    oof = report.get("out_of_fold") or {}
    if "skipped" in oof:
        lines.append(f"no out-of-fold comparison: {oof['skipped']}")
        return lines
    lines += ["", f"out of fold: each of the {oof['questions']} questions every strategy answered is routed by a "
                  f"model trained without it", "",
              f"{'':<24}{'mean score':>10}"]
    best = oof["vs_best_fixed"]
    for name, v in sorted(oof["fixed"].items(), key=lambda kv: -kv[1]):
        lines.append(f"{name:<24}{v:>10.3f}")
    lo, hi = oof["learned_ci95"]
    lines.append(f"{'learned router (oof)':<24}{oof['learned']:>10.3f}  95% CI [{lo:.3f}, {hi:.3f}]")
    lines.append(f"{'best fixed: ' + best['strategy']:<24}{oof['fixed'][best['strategy']]:>10.3f}")
    lines.append(f"{'oracle':<24}{oof['oracle']:>10.3f}  (best strategy per question)")
    sig = "significant" if best["ci95"][0] > 0 or best["ci95"][1] < 0 else "not significant"
    lines += ["", f"learned - {best['strategy']}: {best['diff']:+.3f} (paired bootstrap 95% CI "
                  f"[{best['ci95'][0]:+.3f}, {best['ci95'][1]:+.3f}], p {best['p']:.3f}, {sig})",
              "routes: " + ", ".join(f"{k} {v}" for k, v in oof["routes"].items() if v)]
    return lines


def out_of_fold_report(X, scores, queries, contexts, bot, cfg) -> dict:
    """The learned router's cross-validated score (each question routed by a model trained without it)
    next to every fixed strategy and the oracle, on the questions every strategy answered."""
    from core.errors import InputError
    from hybrid.eval.stats import bootstrap_ci, paired_bootstrap
    from hybrid.routing.learned import cross_validated_decisions, routed_scores

    strategies = sorted({s for row in scores for s in row})
    full = [i for i, row in enumerate(scores) if set(row) == set(strategies)]
    try:
        decisions = cross_validated_decisions(X[full], [scores[i] for i in full], [queries[i] for i in full],
                                              [contexts[i] for i in full], app_name=bot.app.name,
                                              embedder=bot.embedder, cfg=cfg)
    except InputError as e:
        return {"skipped": str(e)}
    rows = [scores[i] for i in full]
    got = routed_scores(decisions, rows)
    fixed = {s: [r[s] for r in rows] for s in strategies}
    oracle = [max(r.values()) for r in rows]
    best = max(fixed, key=lambda s: sum(fixed[s]))
    diff, ci, p = paired_bootstrap(got, fixed[best])
    mean = sum(got) / len(got)
    return {"questions": len(rows), "learned": round(mean, 4), "learned_ci95": [round(x, 4) for x in bootstrap_ci(got)],
            "fixed": {s: round(sum(v) / len(v), 4) for s, v in fixed.items()},
            "oracle": round(sum(oracle) / len(oracle), 4),
            "vs_best_fixed": {"strategy": best, "diff": round(diff, 4), "ci95": [round(x, 4) for x in ci],
                              "p": round(p, 4)},
            "routes": {s: sum(1 for d in decisions if d.strategy == s) for s in strategies}}


def train_router(bot, labels: Path, questions: Path | None, dest: Path):
    """Fit the learned router on ``labels`` (see ``read_labels``), score it out of fold, save it to
    ``dest``. Returns (router, report); ``format_report(report)`` is the table ``hybrid router train``
    prints. ``hybrid app fit`` calls this after its evaluation."""
    from core.errors import InputError
    from hybrid.routing.learned import features, train_learned

    reasons: dict[str, int] = {}
    queries, scores, skipped = read_labels(labels, questions, reasons)
    if len(queries) < 2:
        raise InputError(f"{labels}: need at least 2 labelled queries, found {len(queries)} "
                         f"({explain_skipped(reasons)})")
    contexts = bot.route_contexts(queries, progress=len(queries) > 50)
    X = np.stack([features(c) for c in contexts])
    cfg = bot.router_config()
    router, report = train_learned(X, scores, app_name=bot.app.name, embedder=bot.embedder, cfg=cfg, queries=queries)
    report["out_of_fold"] = out_of_fold_report(X, scores, queries, contexts, bot, cfg)
    router.save(dest)
    report["skipped_rows"] = skipped
    report["skipped_reasons"] = reasons
    report["skipped_explained"] = explain_skipped(reasons)
    report["saved"] = str(dest)
    return router, report


@click.group("router")
def cli() -> None:
    """Train and inspect the learned router."""


@cli.command("train")
@click.option("-f", "--from", "labels", required=True, type=click.Path(dir_okay=False),
              help="JSONL of {query, scores: {strategy: score}} (or evaluation results rows).")
@app_option
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the model (default: the app's router.model).")
@click.option("--questions", default=None, type=click.Path(dir_okay=False),
              help="Question file to look up texts of evaluation rows (default: APP/questions.jsonl).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw report as one JSON line.")
@set_option
def train(labels: str, app_dir: str, out: str | None, questions: str | None, as_json: bool, overrides) -> None:
    """Fit the learned router for an app from labelled outcomes; saves JSON weights (no pickle)."""
    from hybrid.pipeline import Assistant

    bot = Assistant.from_dir(app_dir, overrides)
    qpath = Path(questions) if questions else bot.app.resolve("questions.jsonl")
    _, report = train_router(bot, Path(labels), qpath, Path(out) if out else bot.app.router_model_path)
    if as_json:
        click.echo(json.dumps(report))
        return
    for line in format_report(report):
        click.echo(line)


@cli.command("fit-rules")
@click.option("-f", "--from", "results", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Evaluation results.jsonl with extract rows (their confidence) and other fixed strategies. "
                   "Repeatable, paired in order with --app.")
@click.option("-a", "--app", "apps", required=True, multiple=True, type=click.Path(file_okay=False),
              help="App directory the results of the same position came from (repeatable).")
@click.option("--grid", is_flag=True, help="Also search rag_high and fewshot_low on a small grid.")
@click.option("--margin", type=float, default=0.0, show_default=True,
              help="A dataset may fall this far below its best fixed strategy before it counts as a loss.")
@click.option("-o", "--out", default="configs/router-fitted.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Commented YAML of the fitted values.")
@click.option("--update", "update", is_flag=False, flag_value="configs/router.yaml", default=None,
              metavar="[ROUTER_YAML]", help="Also write the values into the rules section of this router YAML "
              "(given alone: hybrid's configs/router.yaml), comments kept.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw result as one JSON line.")
@set_option
def fit_rules_cmd(results, apps, grid, margin, out, update, as_json, overrides) -> None:
    """Fit rules.extract_min and extract_min_reader (and with --grid rag_high, fewshot_low) from
    evaluation results, offline. Each threshold is fitted on the questions its scorer answered.

    \b
    hybrid router fit-rules --from reports/legal/results.jsonl --app apps/legal \\
                            --from reports/shopping/results.jsonl --app apps/shopping --grid
    """
    import shlex

    from core.errors import InputError
    from core.io import atomic_write_text, read_jsonl
    from hybrid.pipeline import Assistant
    from hybrid.routing.config import DEFAULT_ROUTER_YAML
    from hybrid.routing.fit import FitData, fit_rules, fitted_yaml, format_fit, questions_from_rows
    from hybrid.yaml_edit import set_yaml_value

    if len(results) != len(apps):
        raise InputError(f"give one --app per --from (got {len(results)} --from and {len(apps)} --app)")
    data, sources, names = [], [], set()
    cfg = None
    for path, app_dir in zip(results, apps):
        if not Path(path).is_file():
            raise InputError(f"results file not found: {path}")
        bot = Assistant.from_dir(app_dir, overrides)
        cfg = cfg or bot.router_config()
        questions, skipped = questions_from_rows(r for _, r in read_jsonl(path))
        name = bot.app.name if bot.app.name not in names else f"{bot.app.name}:{Path(path).parent.name}"
        names.add(name)
        contexts = bot.route_contexts([q.query for q in questions], progress=len(questions) > 50) if questions else []
        excluded = {k: v for k, v in bot.excluded().items() if k != "extract"}
        data.append(FitData(name, questions, [c.signals() for c in contexts], excluded=excluded,
                            cfg=bot.router_config(), skipped=skipped))
        sources.append((name, str(path)))
    result = fit_rules(data, cfg, grid=grid, margin=margin)
    command = "hybrid router fit-rules " + " ".join(
        f"--from {shlex.quote(str(r))} --app {shlex.quote(str(a))}" for r, a in zip(results, apps)) + (
        " --grid" if grid else "") + (f" --margin {margin}" if margin else "")
    atomic_write_text(out, fitted_yaml(result, sources, command))
    result["written"] = [str(out)]
    if update:
        target = DEFAULT_ROUTER_YAML if update == "configs/router.yaml" else Path(update)
        text = target.read_text(encoding="utf-8")
        note = (f"fitted by fit-rules on {', '.join(Path(p).as_posix() for _, p in sources)} "
                f"(pooled {result['pooled']['routed']:.3f})")
        for key, scorer in (("extract_min", "zero_shot"), ("extract_min_reader", "reader")):
            if scorer in result["fitted"]:  # a scorer no question used keeps its value
                text = set_yaml_value(text, "rules", key, result[key], comment=note)
        text = text.replace("NOT FITTED YET, set it from evaluation results with", "fitted; refit it with")
        if grid:
            text = set_yaml_value(text, "rules", "rag_high", result["rag_high"])
            text = set_yaml_value(text, "rules", "fewshot_low", result["fewshot_low"])
        atomic_write_text(target, text)
        result["written"].append(str(target))
    if as_json:
        click.echo(json.dumps(result))
        return
    for line in format_fit(result):
        click.echo(line)
    click.echo(f"\nwritten: {', '.join(result['written'])}")
