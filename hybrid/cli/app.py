"""``hybrid app init NAME``: scaffold a new app directory; ``hybrid app show DIR``: what it can do."""

from __future__ import annotations

from pathlib import Path

import click

TEMPLATE = '''\
# {name}: an assistant built with hybrid.
# Try it: hybrid ask "your question" --app {path}      (or: hybrid chat --app {path})
# Every relative path below is relative to this directory.

name: {name}                     # short name: keys the adapter and the learned router model
title: "{title}"                 # what {{app_name}} renders to in the system prompt
description: ""

# Applied on EVERY path: each strategy, the router, and the adapter's training data.
# Variables: {{app_name}}, {{date}}. Write {{{{ and }}}} for literal braces.
system_prompt: |
  You are {{app_name}}. Today is {{date}}.
  Answer the user's question accurately and briefly. If you are not sure, say so.

knowledge_base:
  path: null                     # null: $HYBRID_CACHE/apps/{name}/kb, built from sources on first use
  sources: [corpus]              # files or folders to ingest (PDF, DOCX, HTML, MD, TXT, CSV, JSONL)
  embedder: sentence-transformers/all-MiniLM-L6-v2
  build_on_first_use: true

examples:                        # few_shot: the k nearest examples (MMR) become prior chat turns
  path: examples.jsonl           # {{"question": ..., "answer": ..., "reasoning": optional}} per line
  max_k: 6                       # gains stop at about 6 examples
  mmr_lambda: 0.7                # 1 = most similar only, lower = more diverse
  chain_of_thought: false        # show reasoning in examples, strip it from the answer

adapter:                         # tuned / tuned_rag: train with
  path: adapter                  #   hybrid tune --data {path}/tune.jsonl --out {path}/adapter
  tune_data: tune.jsonl          # chat rows {{"messages": [...]}}, {{"question", "answer"}} or {{"question", "context", "answer"}}

rag:
  k: 6                           # chunks retrieved per query
  mode: hybrid                   # dense | bm25 | hybrid
  min_score: 0.25                # below this similarity the app says it does not know

router:
  kind: rules                    # rules | learned | fixed:<few_shot|rag|tuned|tuned_rag>
  config: null                   # null: configs/router.yaml of hybrid
  model: router.json             # learned: hybrid router train --from results.jsonl --app {path}
  overrides: {{}}                  # e.g. {{rules: {{rag_high: 0.55}}}}

generation:
  model: embedded                # SmolLM2-135M-Instruct shipped with hybrid, or a local HF model dir
  max_new_tokens: 160
  temperature: 0.0               # greedy: the same question gets the same answer
  max_prompt_tokens: 1536
  history_turns: 4               # chat turns kept in the prompt

voice:
  dont_know: "I don't know: nothing in my sources covers that."
  refuse: "I can't repeat instructions found inside my sources."
'''

README = """# {title}

Put documents in `corpus/`, worked examples in `examples.jsonl`, tuning data in `tune.jsonl` and held-out
questions in `questions.jsonl`, then:

    hybrid ask "a question" --app {path}
"""


@click.group("app")
def cli() -> None:
    """Create and inspect apps (a directory: app.yaml + data)."""


@cli.command("init")
@click.argument("name")
@click.option("-d", "--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to create it (default: ./NAME).")
@click.option("--title", default=None, help="Display name (default: NAME).")
@click.option("--force", is_flag=True, help="Write into an existing, non-empty directory.")
def init(name: str, directory: str | None, title: str | None, force: bool) -> None:
    """Scaffold a new app NAME: a commented app.yaml and empty data files."""
    from hybrid.app import load_app
    from hybrid.errors import InputError

    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"app name must be letters, digits, '_', '-' or '.', got {name!r}")
    root = Path(directory or name)
    if root.exists() and any(root.iterdir()) and not force:
        raise InputError(f"{root} exists and is not empty (use --force to write into it)")
    (root / "corpus").mkdir(parents=True, exist_ok=True)
    title = title or name
    files = {
        "app.yaml": TEMPLATE.format(name=name, title=title.replace('"', "'"), path=root.as_posix()),
        "examples.jsonl": "", "tune.jsonl": "", "questions.jsonl": "",
        "README.md": README.format(title=title, path=root.as_posix()),
    }
    from hybrid.io import atomic_write_text

    for fname, text in files.items():
        if not (root / fname).exists() or force:
            atomic_write_text(root / fname, text)
    load_app(root)  # the scaffold must load as written
    click.echo(f"created {root}/ (app.yaml, corpus/, examples.jsonl, tune.jsonl, questions.jsonl, README.md)")


@cli.command("show")
@click.argument("directory", type=click.Path(file_okay=False))
def show(directory: str) -> None:
    """Print an app's rendered system prompt, paths and which strategies it can run (loads no model
    except the embedder)."""
    from hybrid.pipeline import Assistant

    bot = Assistant.from_dir(directory)
    app = bot.app
    click.echo(f"app: {app.name} ({app.title or app.name})")
    click.echo(f"system prompt: {app.render_system_prompt()!r}")
    click.echo(f"knowledge base: {app.kb_path}")
    click.echo(f"examples: {len(bot.examples)} in {app.resolve(app.examples.path)}")
    click.echo(f"adapter: {app.adapter_path} ({'present' if bot.has_adapter_files() else 'missing'})")
    click.echo(f"router: {app.router.kind}")
