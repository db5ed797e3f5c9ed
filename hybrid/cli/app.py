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


def scaffold(name: str, root: Path, title: str | None = None, *, force: bool = False) -> None:
    """Write a new app's app.yaml and empty data files into ``root`` (what ``hybrid app init`` does)."""
    from hybrid.app import load_app
    from core.errors import InputError
    from core.io import atomic_write_text

    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"app name must be letters, digits, '_', '-' or '.', got {name!r}")
    if root.exists() and any(root.iterdir()) and not force:
        raise InputError(f"{root} exists and is not empty (use --force to write into it)")
    (root / "corpus").mkdir(parents=True, exist_ok=True)
    title = title or name
    files = {
        "app.yaml": TEMPLATE.format(name=name, title=title.replace('"', "'"), path=root.as_posix()),
        "examples.jsonl": "", "tune.jsonl": "", "questions.jsonl": "",
        "README.md": README.format(title=title, path=root.as_posix()),
    }
    for fname, text in files.items():
        if not (root / fname).exists() or force:
            atomic_write_text(root / fname, text)
    load_app(root)  # the scaffold must load as written


@cli.command("init")
@click.argument("name")
@click.option("-d", "--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to create it (default: ./NAME).")
@click.option("--title", default=None, help="Display name (default: NAME).")
@click.option("--force", is_flag=True, help="Write into an existing, non-empty directory.")
def init(name: str, directory: str | None, title: str | None, force: bool) -> None:
    """Scaffold a new app NAME: a commented app.yaml and empty data files."""
    root = Path(directory or name)
    scaffold(name, root, title, force=force)
    click.echo(f"created {root}/ (app.yaml, corpus/, examples.jsonl, tune.jsonl, questions.jsonl, README.md)")


NEXT_STEPS = """# {title}

Imported from `{source}` by `hybrid app import`: {articles} articles in `corpus/`, questions split by
{split_by} into `questions/train.jsonl` ({train}), `questions/dev.jsonl` ({dev}) and `questions/test.jsonl`
({test}); `examples.jsonl` (few-shot bank) and `tune.jsonl` come from the train split only.

Next steps (docs/new-app.md in hybrid walks through them with real output):

    # 1. try it: RAG over corpus/ works now (the knowledge base builds on first use)
    hybrid ask "{question}" --app {path}

    # 2. tune the extractive reader (the extract strategy) on the train split
    hybrid tune reader --app {path}

    # 3. optional: tune the adapter on the train split (tuned / tuned_rag strategies)
    hybrid tune --app {path}

    # 4. label the dev split with every strategy, train the learned router, switch to it if it wins
    hybrid app fit {path} --questions {path}/questions/dev.jsonl -n 60 --max-new-tokens 64

    # 5. the held-out verdict: articles in test were never seen by the reader, adapter, examples or router
    hybrid eval --app {path} --questions {path}/questions/test.jsonl -n 100 --max-new-tokens 64 --baseline langchain --out reports/{name}-test

Retrieval hit@k in the report compares each question's `relevant_docs` with the sources retrieved.
"""


@cli.command("import")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("-d", "--data", "data", required=True, type=click.Path(dir_okay=False),
              help="SQuAD v1/v2 JSON, or JSONL rows {question, context, answer} (optional title, id, answer_start).")
@click.option("--split", "split_text", default="0.6,0.2,0.2", show_default=True,
              help="Train,dev,test fractions; the split is by article title.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and the example sample.")
@click.option("--max-examples", type=int, default=200, show_default=True, help="Cap on examples.jsonl rows.")
@click.option("--name", default=None, help="App name when DIRECTORY is created (default: its folder name).")
@click.option("--scope", type=click.Choice(["none", "document"]), default="none", show_default=True,
              help="document: each question searches only its own article (for questions like 'does this "
                   "website sell my data?' that only make sense inside one document).")
@click.option("--force", is_flag=True, help="Overwrite non-empty examples.jsonl / tune.jsonl / questions/ of an existing app.")
def import_(directory: str, data: str, split_text: str, seed: int, max_examples: int, name: str | None,
            scope: str, force: bool) -> None:
    """Import a SQuAD-format file into app DIRECTORY (created like `hybrid app init` when missing):
    corpus/ per article, questions/{train,dev,test}.jsonl split by title, examples.jsonl and tune.jsonl.

    \b
    hybrid app import apps/policy --data policyqa-dev.json
    hybrid app import apps/covid --data covidqa-squad2.json --split 0.8,0.1,0.1 --seed 1
    """
    from hybrid.app import load_app
    from core.errors import InputError
    from hybrid.eval.importer import import_qa, parse_split, read_qa_file
    from core.io import atomic_write_text

    fractions = parse_split(split_text)
    if max_examples < 0:
        raise InputError(f"--max-examples must be >= 0, got {max_examples}")
    read = read_qa_file(data)  # a bad file fails before anything is written
    root = Path(directory)
    created = not (root / "app.yaml").is_file()
    if created:
        app_name = name or root.resolve().name
        if root.exists() and any(root.iterdir()):
            raise InputError(f"{root} is not empty and has no app.yaml; import into a new directory or an app")
        scaffold(app_name, root)
    elif not force:
        busy = [f for f in ("examples.jsonl", "tune.jsonl", "questions/train.jsonl")
                if (root / f).is_file() and (root / f).stat().st_size > 0]
        if busy:
            raise InputError(f"{root} already has {', '.join(busy)}; use --force to replace them")
    app = load_app(root)
    report = import_qa(data, root, split=fractions, seed=seed, max_examples=max_examples, scope=scope, read=read)
    for line in report.summary():
        click.echo(line)
    if "corpus" not in [Path(s).as_posix().rstrip("/") for s in app.knowledge_base.sources]:
        click.echo(f"note: {root}/app.yaml knowledge_base.sources is {list(app.knowledge_base.sources)}; "
                   f"add corpus to search the imported articles")
    first = next((r for r in _first_question(root)), "a question about your documents")
    atomic_write_text(root / "README.md", NEXT_STEPS.format(
        title=app.title or app.name, source=Path(data).name, articles=report.articles, split_by=report.split_by,
        path=root.as_posix(), name=app.name, question=first.replace('"', "'"),
        **{s: report.questions.get(s, 0) for s in ("train", "dev", "test")}))
    click.echo(f"{'created' if created else 'filled'} {root}/: corpus/ ({report.articles} files), "
               f"questions/train|dev|test.jsonl, examples.jsonl, tune.jsonl; next steps in {root}/README.md")


def _first_question(root: Path):
    from core.io import read_jsonl

    for split in ("test", "dev", "train"):
        p = root / "questions" / f"{split}.jsonl"
        if p.is_file() and p.stat().st_size:
            for _, row in read_jsonl(p):
                if isinstance(row, dict) and not row.get("unanswerable"):
                    yield str(row.get("question", ""))
                    return


@cli.command("show")
@click.argument("directory", type=click.Path(file_okay=False))
def show(directory: str) -> None:
    """Print an app's rendered system prompt, paths and which strategies it can run (loads no model
    except the embedder)."""
    from core.errors import ConfigError
    from hybrid.pipeline import Assistant

    bot = Assistant.from_dir(directory)
    app = bot.app
    # A missing corpus folder is a broken app (nothing to build or refresh the KB from), not a detail.
    for source, path in zip(app.knowledge_base.sources, app.source_paths()):
        if "://" not in source and not path.exists():
            raise ConfigError(f"app {app.name}: knowledge_base.sources entry {source!r} does not exist "
                              f"({path}); fix app.yaml or create it")
    click.echo(f"app: {app.name} ({app.title or app.name})")
    click.echo(f"system prompt: {app.render_system_prompt()!r}")
    click.echo(f"knowledge base: {app.kb_path}")
    click.echo(f"examples: {len(bot.examples)} in {app.resolve(app.examples.path)}")
    click.echo(f"adapter: {app.adapter_path} ({'present' if bot.has_adapter_files() else 'missing'})")
    click.echo(f"router: {app.router.kind}")


from hybrid.cli.app_fit import cli as _fit  # noqa: E402  (hybrid app fit: its own module)

cli.add_command(_fit)
