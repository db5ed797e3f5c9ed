"""``hybrid tune``: train an adapter; ``hybrid tune merge``: fold one into its base; ``hybrid tune build``.

    hybrid tune --app apps/legal                       # the app's prompt, tune_data and adapter path
    hybrid tune --app apps/legal --config configs/tiny-lora.yaml --set train.max_steps=2 --out /tmp/a
    hybrid tune --data train.jsonl --config configs/lora.yaml --out adapters/shop --set train.max_steps=100
    hybrid tune --data train.jsonl --config configs/lora.yaml --out adapters/shop --resume
    hybrid tune merge --adapter adapters/shop --out models/shop-merged
    hybrid tune export --adapter adapters/legal --for vllm --name legal   # + the vllm serve command
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
@click.option("--no-track", is_flag=True, help="Do not record this run in MLflow (metrics.jsonl is still written).")
@click.pass_context
def cli(ctx: click.Context, app_dir: str | None, data: tuple[str, ...], eval_data: tuple[str, ...],
        out: str | None, config_path: str | None, overrides: tuple[str, ...], resume: bool, quiet: bool,
        no_track: bool) -> None:
    """Tune the base model on your data (LoRA, prompt/prefix tuning, IA3 or full fine-tuning)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"app_dir": app_dir, "config_path": config_path, "overrides": overrides}
        return
    if not app_dir and (not data or not out):
        raise click.UsageError("hybrid tune needs --app DIR, or --data FILE and --out DIR "
                               "(or a subcommand: merge, build, export, sweep, reader)")
    import logging

    from hybrid.tuning.trainer import train

    logging.getLogger("hybrid.tuning").setLevel(logging.INFO)
    if no_track:
        overrides = tuple(overrides) + ("track.enabled=false",)
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
    from core.config import load_config
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
@click.option("--docs", "docs", type=click.Path(exists=True), default=None,
              help="docs.jsonl ({id, text, metadata} rows) or a knowledge-base directory (default with --app: "
                   "the app's knowledge base). RAFT questions are then made from templates over each chunk.")
@click.option("-q", "--questions", type=click.Path(dir_okay=False), default=None,
              help="RAFT from your own Q/A: SQuAD v1/v2 JSON or {question, context, answer} JSONL "
                   "(+ title, answer_start, id).")
@click.option("--kb", "kb_dir", type=click.Path(file_okay=False), default=None,
              help="With --questions: take distractors from this knowledge base (default with --app: the app's, "
                   "when built; else the file's other contexts).")
@click.option("-a", "--app", "app_dir", type=click.Path(), default=None,
              help="Take the app's knowledge base, system prompt and don't-know sentence.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Training JSONL to write.")
@click.option("--eval-out", type=click.Path(dir_okay=False), default=None,
              help="Also write a held-out split here (by document; by row, stratified, under 5 documents).")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True)
@click.option("--distractors", type=int, default=3, show_default=True, help="RAFT: distractor chunks per row.")
@click.option("--oracle-fraction", type=float, default=0.8, show_default=True,
              help="RAFT: share of rows whose context holds the oracle chunk.")
@click.option("--dont-know", default=None,
              help="RAFT --questions: the answer of rows without the oracle (default: the app's voice.dont_know).")
@config_option
@set_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def build(ctx: click.Context, kind: str, docs: str | None, questions: str | None, kb_dir: str | None,
          app_dir: str | None, out: str, eval_out: str | None, eval_fraction: float, distractors: int,
          oracle_fraction: float, dont_know: str | None, config_path: str | None, overrides: tuple[str, ...],
          seed: int) -> None:
    """Build training rows: raft (grounded Q&A from documents or your own Q/A pairs), style (continuations)
    or text (pretraining). RAFT rows are fitted to the tuning config's data.max_length (--config/--set)."""
    from core.io import write_jsonl
    from hybrid.tuning import builders
    from hybrid.tuning.data import split_rows

    parent = ctx.obj or {}
    app_dir = app_dir or parent.get("app_dir")
    config_path = config_path or parent.get("config_path")
    overrides = tuple(parent.get("overrides") or ()) + tuple(overrides)
    app = None
    if app_dir:
        from hybrid.app import load_app

        app = load_app(app_dir)
    if questions and kind != "raft":
        raise click.UsageError("--questions only builds raft rows")
    if questions and docs:
        raise click.UsageError("give --questions or --docs, not both")
    if not questions and not docs:
        if app is None:
            raise click.UsageError("hybrid tune build needs --docs FILE|KB, --questions FILE (raft) or --app DIR")
        if not app.kb_path.is_dir():
            from core.errors import InputError

            raise InputError(f"{app.name}: no knowledge base at {app.kb_path} yet (ask the app once or build it), "
                             "or pass --docs")
        docs = str(app.kb_path)
    report = builders.BuildReport()
    notes: list[str] = []
    if kind == "raft":
        budget, how = _raft_budget(app, config_path, overrides)
        notes.append(how)
        if questions:
            pairs = builders.read_qa_pairs(questions, report)
            kb = None
            kb_path = kb_dir or (str(app.kb_path) if app is not None and app.kb_path.is_dir() else None)
            if kb_path:
                from indexes.kb import KnowledgeBase

                kb = KnowledgeBase.open(kb_path, readonly=True)
            if dont_know is None:
                from hybrid.app import VoiceSection

                dont_know = app.voice.dont_know if app is not None else VoiceSection().dont_know
            try:
                rows = builders.build_raft_from_qa(pairs, n_distractors=distractors, oracle_fraction=oracle_fraction,
                                                   dont_know=dont_know, kb=kb, seed=seed, budget=budget, report=report)
            finally:
                if kb is not None:
                    kb.close()
            notes.append(f"{len(pairs)} questions; distractors from "
                         + (f"the knowledge base {kb_path}" if kb is not None else "the file's other contexts"))
        else:
            chunks = builders.load_chunks(docs)
            rows = builders.build_raft(chunks, n_distractors=distractors, oracle_fraction=oracle_fraction,
                                       seed=seed, budget=budget, report=report)
            notes.append(f"{len(chunks)} chunks")
    else:
        chunks = builders.load_chunks(docs)
        rows = builders.build_style_set(chunks, seed=seed) if kind == "style" else builders.build_text_set(chunks)
        report.rows = len(rows)
        notes.append(f"{len(chunks)} chunks")
    train_rows, eval_rows, split_how = split_rows(rows, eval_fraction if eval_out else 0.0, seed=seed,
                                                  key=lambda r: r["source"])
    n = write_jsonl(out, train_rows)
    msg = f"{kind}: {n} rows -> {out}"
    if eval_out:
        msg += f", {write_jsonl(eval_out, eval_rows)} rows -> {eval_out} ({split_how})"
    click.echo(msg + f" ({'; '.join(notes)})")
    if kind == "raft":
        for line in report.summary():
            click.echo(line)


def _raft_budget(app, config_path: str | None, overrides: tuple[str, ...]):
    """(Budget, how it was counted): the tuning config's data.max_length, the rendered system prompt, and
    the base model's tokenizer when it loads (else a words*1.4 estimate)."""
    from core.config import load_config
    from hybrid.tuning.builders import make_budget
    from hybrid.tuning.config import TuneConfig
    from hybrid.tuning.trainer import _system_prompt

    if app is not None:
        from hybrid.pipeline import tune_config

        cfg = tune_config(app, config_path, list(overrides))
    else:
        cfg = load_config(TuneConfig, config_path, list(overrides))
    system = _system_prompt(cfg)[0]
    try:
        from transformers import AutoTokenizer

        from hybrid.models import resolve_model

        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.base_model).path, local_files_only=True)
        return make_budget(cfg.data.max_length, system, tok), \
            f"budget data.max_length={cfg.data.max_length} counted with the {cfg.base_model} tokenizer"
    except Exception as e:  # noqa: BLE001 - any failure to load a tokenizer falls back to the estimate
        return make_budget(cfg.data.max_length, system, None), \
            f"budget data.max_length={cfg.data.max_length} estimated as words*1.4 (no tokenizer: {str(e)[:60]})"


@cli.command("export")
@click.option("-a", "--adapter", required=True, type=click.Path(file_okay=False),
              help="LoRA adapter directory written by hybrid tune.")
@click.option("--for", "target", required=True, type=click.Choice(["vllm", "llamacpp"]),
              help="The engine that will serve it.")
@click.option("-n", "--name", default=None,
              help="The model name requests use for it (default: the adapter directory's name; use the app's name "
                   "or its generation.openai.adapter_model).")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="vllm: directory to write [default: ADAPTER-vllm]; llamacpp: where the GGUF should go.")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
def export(adapter: str, target: str, name: str | None, out: str | None, force: bool) -> None:
    """Make an adapter servable by vLLM (a PEFT LoRA directory) or llama.cpp (the GGUF conversion
    command), and print the command that serves it. See docs/backends.md."""
    from hybrid.tuning.export import export_adapter

    result = export_adapter(adapter, target, out=out, name=name, force=force)
    if result.out is not None:
        click.echo(f"exported {result.name} for {target}: {result.out}")
    else:
        click.echo(f"{result.name} for {target}: base model {result.base_model}")
    click.echo("serve it with:")
    for cmd in result.commands:
        click.echo(f"  {cmd}")
    for note in result.notes:
        click.echo(f"note: {note}")


from hybrid.cli.tune_reader import reader as _reader  # noqa: E402
cli.add_command(_reader)

from hybrid.cli.tune_sweep import sweep as _sweep  # noqa: E402
cli.add_command(_sweep)
