"""``hybrid tune sweep``: search learning rate, rank, alpha, dropout, steps/epochs and method with Optuna.

    hybrid tune sweep --app apps/legal --config configs/demo-lora.yaml --space sweep.yaml --trials 6 --out sweeps/legal
    hybrid tune sweep --data train.jsonl --config configs/lora.yaml --space sweep.yaml --trials 20 \\
        --out sweeps/shop --study-db postgresql://optuna@db/studies      # several machines, one study
    hybrid tune sweep --app apps/legal --space sweep.yaml --trials 8 --out sweeps/legal-rag \\
        --objective eval:tuned_rag --questions dev-questions.jsonl --eval-limit 20

Run it again with the same ``--out``/``--study-db`` to resume: ``--trials`` counts the study's finished trials.
"""

from __future__ import annotations

import click

from hybrid.cli.options import config_option, set_option


@click.command("sweep")
@click.option("-a", "--app", "app_dir", type=click.Path(), default=None,
              help="Tune this app's adapter: its system prompt, {app_name} and tune data (unless --data).")
@click.option("-d", "--data", "data", multiple=True, type=click.Path(dir_okay=False), help="Training JSONL; repeatable.")
@click.option("-e", "--eval-data", "eval_data", multiple=True, type=click.Path(dir_okay=False),
              help="Eval JSONL; without it, data.eval_fraction is held out.")
@click.option("--space", "space_path", required=True, type=click.Path(dir_okay=False),
              help="Search space YAML: lr, rank, alpha, dropout, steps, epochs, method, weight_decay, warmup_steps, "
                   "virtual_tokens; each a list of choices, a {low, high[, log][, step]} range or one value.")
@click.option("-n", "--trials", type=int, required=True, help="Finished trials the study should hold.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Sweep directory: trials/, best/ (the best adapter), sweep.md, sweep.png, study.sqlite.")
@click.option("--study-db", default=None,
              help="Study storage: a SQLite file or an RDB URL shared by several machines (default OUT/study.sqlite).")
@click.option("--study-name", default=None, help="Study name inside the storage (default: OUT's name).")
@click.option("--objective", default="eval_loss", show_default=True,
              help="eval_loss (minimised, with pruning), or eval:<strategy>: that strategy's mean primary score on "
                   "--questions (maximised; needs --app).")
@click.option("-q", "--questions", type=click.Path(dir_okay=False), default=None,
              help="Dev question set for --objective eval:<strategy>.")
@click.option("--eval-limit", type=int, default=None, help="Score a seeded sample of this many dev questions.")
@click.option("--no-baseline", is_flag=True, help="Do not start a new study with the preset's own values.")
@click.option("--no-track", is_flag=True, help="Do not record the trials in MLflow.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed.")
@config_option
@set_option
@click.pass_context
def sweep(ctx: click.Context, app_dir: str | None, data: tuple[str, ...], eval_data: tuple[str, ...],
          space_path: str, trials: int, out: str, study_db: str | None, study_name: str | None, objective: str,
          questions: str | None, eval_limit: int | None, no_baseline: bool, no_track: bool, seed: int,
          config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Sweep tuning hyperparameters; print the best trial and write its adapter, a plot and a report."""
    import logging

    from hybrid.cli.tune import resolve_run
    from hybrid.tuning.sweep import downstream_objective, load_space, run_sweep

    parent = ctx.obj or {}
    app_dir = app_dir or parent.get("app_dir")
    config_path = config_path or parent.get("config_path")
    overrides = tuple(parent.get("overrides") or ()) + tuple(overrides) + (("track.enabled=false",) if no_track else ())
    if not app_dir and not data:
        raise click.UsageError("hybrid tune sweep needs --app DIR or --data FILE")
    space = load_space(space_path)  # a bad space fails before any model loads
    score, direction = None, "minimize"
    if objective.startswith("eval:"):
        strategy = objective.split(":", 1)[1]
        if not app_dir or not questions:
            raise click.UsageError(f"--objective {objective} needs --app and --questions (a dev question set)")
        score, direction = downstream_objective(app_dir, questions, strategy, limit=eval_limit), "maximize"
    elif objective != "eval_loss":
        raise click.UsageError(f"--objective must be eval_loss or eval:<strategy>, got {objective!r}")
    logging.getLogger("hybrid.tuning").setLevel(logging.WARNING)
    cfg, files, _ = resolve_run(app_dir, data, out, config_path, overrides)
    result = run_sweep(cfg, space, trials, data=files, eval_data=list(eval_data), out=out, study_db=study_db,
                       study_name=study_name, objective=score, objective_name=objective, direction=direction,
                       baseline=not no_baseline, seed=seed, echo=click.echo,
                       model_factory=ctx.obj.get("model_factory") if isinstance(ctx.obj, dict) else None)
    if result.best_number is None:
        click.echo(f"no trial finished yet ({len(result.trials)} in the study); report: {result.report}")
        return
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sorted(result.best_params.items()))
    click.echo(f"best trial {result.best_number}: {objective} {result.best_value:.4f} ({params})")
    click.echo(f"best adapter: {result.best_adapter or '(ran on another machine: see the study)'}")
    click.echo(f"report: {result.report}" + (f", plot: {result.plot}" if result.plot else ""))
