"""``hybrid eval``: every strategy and the router on the same questions, with a written verdict.

``hybrid eval retrieval`` scores a knowledge base on a BEIR-format dataset (the code
``benchmarks/retrieval.py`` uses).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import click

from hybrid.cli.options import app_set_option


def _default_out(app_dir: str) -> str:
    return f"reports/{Path(app_dir).name}-{_dt.date.today().isoformat()}"


@click.group("eval", invoke_without_command=True)
@click.option("-a", "--app", "app_dir", type=click.Path(file_okay=False), envvar="HYBRID_APP",
              help="App directory with app.yaml (env: HYBRID_APP).")
@click.option("-q", "--questions", type=click.Path(dir_okay=False),
              help="Questions: JSONL (question, answer, type, ...) or SQuAD v1/v2 JSON.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Eval preset (configs/eval.yaml); flags below win over it.")
@click.option("--strategies", default=None, help="Comma-separated strategies; auto = the app's router "
              "[default: every registered strategy, then auto].")
@click.option("-o", "--out", "out_dir", default=None, help="Report directory [default: reports/<app>-<date>].")
@click.option("-n", "--limit", type=int, default=None, help="Evaluate a seeded sample of N questions.")
@click.option("-b", "--batch-size", type=int, default=None, help="Questions generated together [default: 16].")
@click.option("--max-new-tokens", type=int, default=None, help="Override the app's max_new_tokens.")
@click.option("--threads", type=int, default=None,
              help="Torch threads for generation and embedding [default: torch's, one per core]. "
                   "On a busy 2-core machine 1 thread was far faster than 2.")
@click.option("--no-track", is_flag=True, help="Do not record this run in MLflow (the report is written as always).")
@click.option("-r", "--router", default=None, metavar="KIND", help="Router for auto (default: the app's).")
@click.option("--baseline", type=click.Choice(["none", "langchain"]), default="none", show_default=True,
              help="Also score a plain LangChain RAG chain (FAISS, same embedder, k=3, same generator).")
@click.option("--seed", type=int, default=None, help="Sampling and bootstrap seed [default: 0].")
@click.option("--titles", default=None, metavar="A,B|@FILE",
              help="Only questions of these titles (SQuAD article titles, or the JSONL 'title' field).")
@click.option("--exclude-titles", default=None, metavar="A,B|@FILE",
              help="Leave out questions of these titles. For SQuAD input the knowledge base is the contexts "
                   "of the selected questions' articles.")
@app_set_option
@click.pass_context
def cli(ctx, app_dir, questions, config_path, strategies, out_dir, limit, batch_size, max_new_tokens, threads,
        no_track, router, baseline, seed, titles, exclude_titles, overrides):
    """Compare few-shot, RAG, tuned, tuned+RAG and the router on the same questions.

    \b
    hybrid eval --app apps/legal --questions apps/legal/questions.jsonl
    hybrid eval --app apps/covidqa --questions ../shared/data/covidqa/covidqa-squad2.json -n 100
    hybrid eval --app apps/policy --questions apps/policy/questions/test.jsonl --exclude-titles yahoo.com
    hybrid eval retrieval --kb /tmp/cran-kb --dataset ../shared/data/cranfield
    """
    if ctx.invoked_subcommand is not None:
        return
    if not app_dir or not questions:
        raise click.UsageError("hybrid eval needs --app and --questions (or a subcommand: retrieval)")
    import dataclasses

    from hybrid.app import load_app
    from core.config import load_config
    from hybrid.eval.data import load_questions, parse_titles, select_titles
    from hybrid.eval.report import retrieval_line
    from hybrid.eval.runner import EvalConfig, run_eval

    cfg = load_config(EvalConfig, config_path) if config_path else EvalConfig()
    flags = {"batch_size": batch_size, "limit": limit, "seed": seed, "max_new_tokens": max_new_tokens,
             "router": router, "threads": threads, "track": False if no_track else None}
    names = [s.strip() for s in strategies.split(",") if s.strip()] if strategies else list(cfg.strategies)
    if baseline == "langchain" and "langchain" not in names:
        names.append("langchain")
    try:
        cfg = dataclasses.replace(cfg, strategies=names, **{k: v for k, v in flags.items() if v is not None})
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    base = None
    if "langchain" in names:
        from hybrid.eval.baseline import langchain_rag_baseline

        base = langchain_rag_baseline
    app = load_app(app_dir, overrides)
    out = out_dir or _default_out(app_dir)
    qs = load_questions(questions)
    include, exclude = parse_titles(titles), parse_titles(exclude_titles)
    if include or exclude:
        n = len(qs.questions)
        qs = select_titles(qs, include, exclude)
        click.echo(f"titles: kept {len(qs.questions)} of {n} questions ({len({q.title for q in qs.questions})} "
                   f"titles)", err=True)
    res = run_eval(app, qs, out, cfg, baseline=base, echo=lambda s: click.echo(s, err=True))
    s = res.summary
    click.echo(f"\n{s['run']['n_evaluated']} questions, {res.computed} answers computed, {res.cached} from cache")
    click.echo(f"{'strategy':<12} {'score':>7}  {'95% CI':<17} {'F1':>6} {'latency':>8}")
    for name, e in s["strategies"].items():
        lo, hi = e["primary"]["ci95"]
        click.echo(f"{name:<12} {e['primary']['mean']:>7.3f}  [{lo:.3f}, {hi:.3f}]  {e['f1']['mean']:>6.3f} "
                   f"{e['latency_s']['mean']:>7.2f}s")
    if "oracle" in s:
        click.echo(f"{'oracle':<12} {s['oracle']['primary']:>7.3f}")
    for name, why in s.get("skipped_strategies", {}).items():
        click.echo(f"skipped {name}: {why}")
    rline = retrieval_line(s.get("retrieval") or {})
    if rline:
        click.echo(rline)
    click.echo("\nverdict:")
    for line in s["verdict"]:
        click.echo(f"  {line}")
    click.echo(f"\nreport: {res.files['markdown']}  (also report.html, results.jsonl, summary.json, plots)")


@cli.command("retrieval")
@click.option("--kb", "kb_dir", required=True, type=click.Path(file_okay=False),
              help="Knowledge-base directory; built from the dataset's corpus when missing.")
@click.option("--dataset", required=True, type=click.Path(file_okay=False), help="BEIR-format directory.")
@click.option("--modes", default="dense,bm25,hybrid", show_default=True)
@click.option("-k", default=100, show_default=True, help="Documents ranked per query.")
@click.option("--limit-queries", type=int, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def retrieval(kb_dir, dataset, modes, k, limit_queries, as_json):
    """Score a knowledge base on a BEIR dataset: nDCG@10, recall@10/100, MRR@10 per search mode."""
    from hybrid.eval.retrieval import evaluate_run, load_beir, run_knowledge_base
    from indexes.kb import MANIFEST, KnowledgeBase

    ds = load_beir(dataset, limit_queries=limit_queries)
    path = Path(kb_dir)
    if not (path / MANIFEST).exists():
        click.echo(f"building {path} from {len(ds.corpus)} documents", err=True)
    kb = KnowledgeBase.open_or_create(path)  # an existing KB opens with its stored settings, a new one the defaults
    report = kb.sync(ds.documents(), progress=True)
    if report.changed:
        click.echo(str(report), err=True)
    out = {}
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        run = run_knowledge_base(kb, ds.queries, k=k, mode=mode, chunk_k=min(k * 3, 1000))
        out[mode] = evaluate_run(run, ds.qrels).mean
    if as_json:
        click.echo(json.dumps({"dataset": ds.name, "queries": len(ds.queries), "scores": out}, indent=2))
        return
    keys = list(next(iter(out.values())).keys())
    click.echo(f"{ds.name}: {len(ds.queries)} queries, {len(ds.corpus)} documents")
    click.echo(f"{'mode':<8}" + "".join(f"{key:>12}" for key in keys))
    for mode, m in out.items():
        click.echo(f"{mode:<8}" + "".join(f"{m[key]:>12.4f}" for key in keys))


@cli.command("forgetting")
@click.option("--adapter", required=True, type=click.Path(file_okay=False, exists=True), help="Adapter directory.")
@click.option("--tasks", "tasks_path", required=True, type=click.Path(dir_okay=False),
              help="General tasks, self-instruct JSONL (instruction, instances[0].input/output), none used in tuning.")
@click.option("-n", "--limit", type=int, default=30, show_default=True, help="A seeded sample of N tasks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling and bootstrap seed.")
@click.option("--max-new-tokens", type=int, default=48, show_default=True)
@click.option("--model", default="default", show_default=True,
              help="Base model the adapter was tuned on (its card is checked against it).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the full report (per-task answers) as JSON here.")
def forgetting(adapter, tasks_path, limit, seed, max_new_tokens, model, json_out):
    """Did tuning break what the base model could do? Base vs base+adapter on general tasks: token F1 and
    ROUGE-L of greedy answers, perplexity on the references, each drop with a paired bootstrap CI."""
    from core.io import atomic_write_text
    from hybrid.models import load_base_model
    from hybrid.tuning.forgetting import forgetting_markdown, general_tasks, measure_forgetting

    if limit is not None and limit < 2:
        raise click.BadParameter(f"must be at least 2 (a CI needs pairs), got {limit}", param_hint="--limit")
    tasks = general_tasks(tasks_path, limit=limit, seed=seed)
    base_model, tokenizer = load_base_model(model)
    rep = measure_forgetting(base_model, tokenizer, adapter, tasks, max_new_tokens=max_new_tokens, seed=seed)
    if json_out:
        atomic_write_text(json_out, json.dumps(rep, indent=1))
    click.echo(forgetting_markdown(rep))
