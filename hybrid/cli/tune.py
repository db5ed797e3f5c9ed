"""``hybrid tune``: train an adapter; ``hybrid tune merge``: fold one into its base; ``hybrid tune build``.

    hybrid tune --app apps/legal                       # the app's prompt, tune_data and adapter path
    hybrid tune --app apps/legal --config configs/tiny-lora.yaml --set train.max_steps=2 --out /tmp/a
    hybrid tune --data train.jsonl --config configs/lora.yaml --out adapters/shop --set train.max_steps=100
    hybrid tune --data train.jsonl --config configs/lora.yaml --out adapters/shop --resume
    hybrid tune merge --adapter adapters/shop --out models/shop-merged
    hybrid tune build raft --docs docs.jsonl --out raft.jsonl
    hybrid tune build raft --questions policyqa-dev.json --out raft.jsonl --app apps/legal

Multi-GPU: the same command under ``torchrun --nproc-per-node 4 -m hybrid tune ...`` or
``accelerate launch --num_processes 4 -m hybrid tune ...``.
"""

from __future__ import annotations

import click

from hybrid.cli.options import config_option, set_option


@click.group(name="tune", invoke_without_command=True)
@click.option("-a", "--app", "app_dir", type=click.Path(), default=None, envvar="HYBRID_APP",
              help="Tune this app's adapter: its system prompt and {app_name}, its adapter.tune_data (unless "
                   "--data) and its adapter path (unless --out). Env: HYBRID_APP.")
@click.option("-d", "--data", "data", multiple=True, type=click.Path(dir_okay=False),
              help="Training JSONL (chat 'messages', Alpaca, {question, answer[, context]} or 'text' rows); "
                   "repeatable.")
@click.option("-e", "--eval-data", "eval_data", multiple=True, type=click.Path(dir_okay=False),
              help="Eval JSONL; without it, data.eval_fraction of source documents is held out.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Adapter directory to write (checkpoints go to OUT.run/).")
@config_option
@set_option
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in OUT.run/checkpoints.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def cli(ctx: click.Context, app_dir: str | None, data: tuple[str, ...], eval_data: tuple[str, ...],
        out: str | None, config_path: str | None, overrides: tuple[str, ...], resume: bool, quiet: bool) -> None:
    """Tune the base model on your data (LoRA, prompt/prefix tuning, IA3 or full fine-tuning)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"app_dir": app_dir, "config_path": config_path, "overrides": overrides}
        return
    if not app_dir and (not data or not out):
        raise click.UsageError("hybrid tune needs --app DIR, or --data FILE and --out DIR "
                               "(or a subcommand: merge, build)")
    import logging

    from hybrid.tuning.trainer import train

    logging.getLogger("hybrid.tuning").setLevel(logging.INFO)
    cfg, data_files, out_dir = resolve_run(app_dir, data, out, config_path, overrides)
    result = train(cfg, data=data_files, out=out_dir, eval_data=list(eval_data), resume=resume,
                   progress=False if quiet else None)
    if result.out is None:  # a non-zero rank under torchrun
        return
    card = result.card
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    click.echo(f"data: {result.report.summary() if result.report else ''}")
    for problem in (result.report.problems[:5] if result.report else []):
        click.echo(f"  skipped {problem}")
    click.echo(f"trained {card.method} for {result.steps} steps on {result.tokens_seen} tokens: "
               f"{result.tokens_seen / max(result.train_seconds, 1e-9):.0f} tokens/s in training steps, "
               f"{result.wall_time_s:.1f} s wall time with data preparation and evals")
    evals = ", ".join(f"{s}:{v:.3f}" for s, v in result.eval_history)
    click.echo(f"train loss {fmt(result.train_loss)} ({result.train_loss_basis}), eval loss {fmt(result.eval_loss)}"
               + (f" (by step {evals})" if evals else "") + (" - stopped early" if result.stopped_early else ""))
    click.echo(f"adapter: {result.out} (card: {result.out}/adapter_card.json)")


def resolve_run(app_dir: str | None, data: tuple[str, ...], out: str | None, config_path: str | None,
                overrides: tuple[str, ...]):
    """(TuneConfig, data files, output dir). With an app, ``hybrid.pipeline.tune_config`` puts the app's
    prompt into the preset (``--set`` still wins) and the app supplies the data and output defaults."""
    from hybrid.config import load_config
    from hybrid.tuning.config import TuneConfig

    if not app_dir:
        return load_config(TuneConfig, config_path, list(overrides)), list(data), out
    from hybrid.app import load_app
    from hybrid.pipeline import app_tune_data, tune_config

    app = load_app(app_dir)
    cfg = tune_config(app, config_path, list(overrides))
    files = list(data) or [str(app_tune_data(app))]
    return cfg, files, out or str(app.adapter_path)


@cli.command("merge")
@click.option("-a", "--adapter", required=True, type=click.Path(file_okay=False, exists=True),
              help="Adapter directory written by hybrid tune.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Merged model directory.")
@click.option("--base-model", default=None, help="Base model (default: the one named in the adapter card).")
def merge(adapter: str, out: str, base_model: str | None) -> None:
    """Fold a LoRA/IA3 adapter into its base model and save a standalone model directory."""
    from hybrid.tuning.save import merge_adapter

    path = merge_adapter(adapter, out, base_model=base_model)
    click.echo(f"merged model: {path}")


@cli.command("build")
@click.argument("kind", type=click.Choice(["raft", "style", "text"]))
@click.option("--docs", "docs", required=True, type=click.Path(exists=True),
              help="docs.jsonl ({id, text, metadata} rows) or a knowledge-base directory.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Training JSONL to write.")
@click.option("--eval-out", type=click.Path(dir_okay=False), default=None,
              help="Also write a held-out split (by source document) here.")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True)
@click.option("--distractors", type=int, default=3, show_default=True, help="RAFT: distractor chunks per row.")
@click.option("--oracle-fraction", type=float, default=0.8, show_default=True,
              help="RAFT: share of rows whose context holds the oracle chunk.")
@click.option("--seed", type=int, default=0, show_default=True)
def build(kind: str, docs: str, out: str, eval_out: str | None, eval_fraction: float, distractors: int,
          oracle_fraction: float, seed: int) -> None:
    """Build training rows from documents: raft (grounded Q&A), style (continuations) or text (pretraining)."""
    from hybrid.io import write_jsonl
    from hybrid.tuning import builders
    from hybrid.tuning.data import split_by_source

    chunks = builders.load_chunks(docs)
    if kind == "raft":
        rows = builders.build_raft(chunks, n_distractors=distractors, oracle_fraction=oracle_fraction, seed=seed)
    elif kind == "style":
        rows = builders.build_style_set(chunks, seed=seed)
    else:
        rows = builders.build_text_set(chunks)
    train_rows, eval_rows = split_by_source(rows, eval_fraction if eval_out else 0.0, seed=seed,
                                            key=lambda r: r["source"])
    n = write_jsonl(out, train_rows)
    msg = f"{kind}: {n} rows -> {out}"
    if eval_out:
        msg += f", {write_jsonl(eval_out, eval_rows)} rows -> {eval_out}"
    click.echo(msg + f" (from {len(chunks)} chunks)")

