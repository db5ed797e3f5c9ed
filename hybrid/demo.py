"""``make demo``: the main job on the embedded defaults, with the legal example app.

1. ingest the legal app's corpus (apps/legal/corpus: 36 made-up statutes, contracts, policies);
2. build its knowledge base (FAISS + BM25) and answer a search;
3. tune its LoRA adapter briefly (or reuse the cached one) and show one answer before and after;
4. answer a handful of mixed held-out questions through the router, printing each answer with its
   route, the router's reason and the citations.

Everything runs offline on the CPU. Artifacts go to ``.cache/demo`` (``$HYBRID_DEMO_DIR``), so a
second run reuses the knowledge base and the adapter and only answers.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "legal"
DEMO_TUNE_CONFIG = ROOT / "configs" / "demo-lora.yaml"
SEARCH = "How much notice must a landlord give before raising the rent?"
STYLE_QUESTION = "What is a power of attorney?"


def work_dir() -> Path:
    p = Path(os.environ.get("HYBRID_DEMO_DIR") or ROOT / ".cache" / "demo")
    p.mkdir(parents=True, exist_ok=True)
    return p


def say(text: str = "", *, bold: bool = False) -> None:
    if bold and sys.stdout.isatty():
        text = f"\033[1m{text}\033[0m"
    print(text, flush=True)


def rel(p: Path) -> str:
    p = Path(p)
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def demo_app():
    """The legal app with its knowledge base and adapter under the demo's work dir."""
    from hybrid.app import load_app

    app = load_app(APP_DIR)
    w = work_dir()
    return dataclasses.replace(
        app, knowledge_base=dataclasses.replace(app.knowledge_base, path=str(w / "kb")),
        adapter=dataclasses.replace(app.adapter, path=str(w / "adapter")))


def step_ingest(app) -> list:
    from hybrid.assemble import load_sources

    say(f"1/4 Ingest {', '.join(rel(p) for p in app.source_paths())}", bold=True)
    t = time.perf_counter()
    docs = load_sources(app, progress=True)
    say(f"    {len(docs)} documents from {len({d.metadata.get('source') for d in docs})} files "
        f"in {time.perf_counter() - t:.1f}s")
    return docs


def step_index(app, docs, embedder):
    from hybrid.assemble import kb_config
    from hybrid.cli.search import format_hit
    from indexes.kb import KnowledgeBase

    say(f"2/4 Knowledge base {rel(app.kb_path)}", bold=True)
    kb = KnowledgeBase.create(app.kb_path, kb_config(app), embedder=embedder, exist_ok=True)
    report = kb.sync(docs, prune=True, progress=True)
    s = kb.stats()
    say(f"    {report}")
    say(f"    {s['documents']} documents, {s['chunks']} chunks in FAISS {s['index']} + SQLite FTS5 BM25")
    say(f"    search (hybrid): {SEARCH}")
    for h in kb.search(SEARCH, k=3, mode="hybrid"):
        say("    " + format_hit(h).replace("\n", "\n    "))
    return kb


def step_tune(app, bot, tune_config=DEMO_TUNE_CONFIG) -> None:
    from hybrid.assemble import ensure_adapter

    say(f"3/4 Adapter {rel(app.adapter_path)}", bold=True)
    gen = bot.generator
    messages = [{"role": "system", "content": bot.system_prompt}, {"role": "user", "content": STYLE_QUESTION}]
    params = dataclasses.replace(app.generation.params(), max_new_tokens=60)
    had = bot.has_adapter_files()
    before = gen.generate(messages, params=params).text if not had else None
    t = time.perf_counter()
    path, trained = ensure_adapter(app, config=tune_config)
    say(f"    {'trained in %.0fs' % (time.perf_counter() - t) if trained else 'reused the cached adapter'}: "
        f"{rel(path)}")
    if before is None:
        before = gen.generate(messages, params=params).text
    after = gen.generate(messages, adapter=bot.adapter, params=params).text if bot.adapter else "(no adapter)"
    say(f"    Q: {STYLE_QUESTION}")
    say(f"    base model : {before}")
    say(f"    with adapter: {after}")


def step_answer(app, bot, questions=None) -> list:
    from hybrid.pipeline import demo_questions

    say("4/4 Answers through the router", bold=True)
    answers = []
    for q in demo_questions(app) if questions is None else questions:
        ans = bot.ask(q)
        answers.append(ans)
        d = ans.decision
        say()
        say(f"    Q: {q}", bold=True)
        say("    A: " + ans.text.replace("\n", "\n       "))
        say(f"    route: {ans.strategy} (confidence {d.confidence:.2f}) - {d.reason}")
        for c in ans.citations:
            say(f"    [{c.n}] {c.source}" + (f", page {c.page}" if c.page is not None else ""))
        say(f"    {ans.timings.get('total', 0):.1f}s, {ans.usage.get('completion_tokens', 0)} tokens")
    return answers


def run_main_job(app, *, tune_config=DEMO_TUNE_CONFIG, questions=None) -> list:
    """The main job on ``app`` (an ``AppConfig``), each step printed: ingest its sources, create or sync
    its knowledge base, tune its adapter with ``tune_config`` or reuse a current one, then answer
    ``questions`` (default: ``demo_questions(app)``) through the router. Returns the answers.

    ``make demo`` runs it on ``demo_app()``; the tests run it on a small app with fakes."""
    from hybrid.assemble import make_embedder
    from hybrid.pipeline import Assistant

    embedder = make_embedder(app)
    docs = step_ingest(app)
    kb = step_index(app, docs, embedder)
    bot = Assistant(app, embedder=embedder, knowledge_base=kb)
    step_tune(app, bot, tune_config)
    # a fresh Assistant sharing the generator: it loads the adapter step 3 may just have trained
    return step_answer(app, Assistant(app, embedder=embedder, knowledge_base=kb, generator=bot.generator), questions)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bar for sub-second weight loads
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not ours

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from core.errors import HybridError

    t0 = time.perf_counter()
    try:
        run_main_job(demo_app())
    except HybridError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    say()
    say(f"done in {time.perf_counter() - t0:.0f}s. Next: .venv/bin/hybrid ask \"When is a tenancy deposit "
        f"returned?\" --app apps/legal   (or: .venv/bin/hybrid serve --app apps/legal --app apps/shopping)")


if __name__ == "__main__":
    main()
