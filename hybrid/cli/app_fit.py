"""``hybrid app fit DIR --questions dev.jsonl``: calibrate an app's router in one command.

Evaluates the app's fixed strategies on a dev question file (``hybrid eval``), trains the learned router
on those labels (``hybrid router train``), prints the out-of-fold comparison, and switches the app to
the learned router (``router.kind: learned`` in app.yaml, comments kept) only when, out of fold, it is
at least as good as the best fixed strategy: the paired 95% CI of (learned - best fixed) must not reach
below ``-margin``. Otherwise the app keeps its router and the command says why (``--force`` switches
anyway)::

    hybrid app fit apps/legal --questions apps/legal/questions/dev.jsonl -n 100
    hybrid app fit apps/legal --router-only --from apps/legal/reports/fit-2026-12-02/results.jsonl
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import click

from hybrid.cli.options import set_option



def switch_verdict(oof: dict[str, Any], margin: float) -> tuple[bool, str]:
    """(switch?, why) from ``out_of_fold_report``: switch when the learned router is, out of fold, not
    worse than the best fixed strategy beyond ``margin`` (lower end of the paired 95% CI)."""
    if "skipped" in oof:
        return False, f"no out-of-fold comparison ({oof['skipped']})"
    best = oof["vs_best_fixed"]
    lo = best["ci95"][0]
    line = (f"out of fold the learned router scores {oof['learned']:.3f} vs {best['strategy']} "
            f"{oof['fixed'][best['strategy']]:.3f} (difference {best['diff']:+.3f}, paired 95% CI lower bound "
            f"{lo:+.3f}")
    if lo < -margin:
        return False, f"{line} < -{margin:g}): it may lose to the best fixed strategy"
    return True, f"{line} >= -{margin:g}): at least as good as the best fixed strategy"


def set_router_kind(app_yaml: Path, kind: str) -> bool:
    """Set ``router.kind`` in app.yaml's text (comments kept, written atomically); False if already so."""
    from core.config import read_yaml
    from core.io import atomic_write_text
    from hybrid.yaml_edit import set_yaml_value

    if (read_yaml(app_yaml).get("router") or {}).get("kind") == kind:
        return False
    text = set_yaml_value(app_yaml.read_text(encoding="utf-8"), "router", "kind", kind)
    atomic_write_text(app_yaml, text)
    return True


@click.command("fit")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("-q", "--questions", type=click.Path(dir_okay=False), default=None,
              help="Dev questions (JSONL or SQuAD JSON) to label the strategies on; keep the test set apart.")
@click.option("-n", "--limit", type=int, default=None, help="Evaluate a seeded sample of N questions.")
@click.option("--max-new-tokens", type=int, default=None, help="Override the app's max_new_tokens.")
@click.option("--strategies", default=None, help="Comma-separated fixed strategies [default: every registered strategy].")
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Report directory [default: DIRECTORY/reports/fit-<date>].")
@click.option("--router-only", is_flag=True, help="Skip the evaluation: train on the labels of --from.")
@click.option("-f", "--from", "labels", default=None, type=click.Path(dir_okay=False),
              help="With --router-only: evaluation results.jsonl (or {query, scores} rows).")
@click.option("--margin", type=float, default=0.01, show_default=True,
              help="Switch unless the learned router's paired CI lower bound vs the best fixed is below -MARGIN.")
@click.option("--force", is_flag=True, help="Switch to the learned router even when it does not win.")
@set_option
def cli(directory, questions, limit, max_new_tokens, strategies, out_dir, router_only, labels, margin, force,
        overrides) -> None:
    """Evaluate the fixed strategies, train the learned router, switch to it if it wins out of fold."""
    from hybrid.cli.router import format_report, train_router
    from core.errors import InputError
    from hybrid.pipeline import Assistant

    root = Path(directory)
    out = Path(out_dir) if out_dir else root / "reports" / f"fit-{_dt.date.today().isoformat()}"
    if router_only:
        if not labels:
            raise InputError("--router-only needs --from results.jsonl (the labels of an earlier evaluation)")
        labels_path = Path(labels)
    else:
        if labels:
            raise InputError("--from is for --router-only; without it the evaluation makes the labels")
        if not questions:
            raise InputError("hybrid app fit needs --questions FILE (or --router-only --from results.jsonl)")
        labels_path = _evaluate(directory, questions, out, strategies, limit, max_new_tokens, overrides)

    bot = Assistant.from_dir(directory, overrides)
    qpath = Path(questions) if questions else bot.app.resolve("questions.jsonl")
    candidate = out / "router.json"
    out.mkdir(parents=True, exist_ok=True)
    router, report = train_router(bot, labels_path, qpath, candidate)
    for line in format_report(report):
        click.echo(line)
    ok, why = switch_verdict(report.get("out_of_fold") or {"skipped": "not computed"}, margin)
    click.echo("")
    current = bot.app.router.kind
    if not ok and not force:
        click.echo(f"kept router.kind: {current}. {why}.")
        click.echo(f"the trained model stays at {candidate}; `hybrid app fit {directory} --router-only --from "
                   f"{labels_path} --force` switches anyway")
        return
    dest = bot.app.router_model_path
    router.save(dest)
    changed = set_router_kind(bot.app.resolve("app.yaml"), "learned")
    verb = "switched" if changed else "kept"
    click.echo(f"{verb} router.kind: learned ({'forced: ' if not ok else ''}{why}); model saved to {dest}")


def _evaluate(directory, questions, out: Path, strategies, limit, max_new_tokens, overrides) -> Path:
    """Run ``hybrid eval`` over the fixed strategies; returns the results.jsonl the router learns from."""
    from hybrid.app import load_app
    from core.errors import InputError
    from hybrid.eval.runner import EvalConfig, run_eval
    from hybrid.strategies import strategy_names

    fixed = strategy_names()
    names = [s.strip() for s in strategies.split(",") if s.strip()] if strategies else list(fixed)
    bad = [s for s in names if s not in fixed]
    if bad:
        raise InputError(f"--strategies takes fixed strategies ({', '.join(fixed)}), got {bad[0]!r}")
    cfg = EvalConfig(strategies=names, limit=limit, max_new_tokens=max_new_tokens, learned_cv=False)
    res = run_eval(load_app(directory, overrides), questions, out, cfg, echo=lambda s: click.echo(s, err=True))
    s = res.summary
    click.echo(f"evaluated {s['run']['n_evaluated']} questions ({res.computed} answers computed, {res.cached} "
               f"from cache): " + ", ".join(f"{k} {e['primary']['mean']:.3f}" for k, e in s["strategies"].items()))
    click.echo(f"report: {res.files['markdown']}\n")
    return out / "results.jsonl"
