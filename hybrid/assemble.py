"""Building an app's parts: generator, embedder, knowledge base, sources, and its adapter's lifecycle.

::

    from hybrid.app import load_app
    from hybrid.assemble import build_kb, ensure_adapter, make_embedder
    app = load_app("apps/legal")
    kb = build_kb(app, make_embedder(app))   # ingest the sources, create or sync the KB
    ensure_adapter(app)                      # train the adapter unless a current one is cached

``hybrid.pipeline.Assistant`` loads its components through these; the CLI, the API and the demo call
them directly. The adapter card is read with ``hybrid.tuning.card.read_card``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from core.errors import InputError
from core.io import read_jsonl
from hybrid.app import AppConfig

log = logging.getLogger(__name__)


def generator_backend(model: str) -> str:
    """The ``hybrid.generation.GENERATORS`` backend that serves an app's ``generation.model``: a value
    naming a registered backend other than ``hf`` is that backend (``scripted``: the echoing fake, for
    dry runs of an app's plumbing and fast CLI tests); anything else (``embedded``/``default``, a local
    model directory, a hub id) is ``hf``, loading that model."""
    from hybrid.generation import GENERATORS

    return model if model != "hf" and model in GENERATORS else "hf"


def _hf_args(app: AppConfig) -> tuple[tuple, dict]:
    from hybrid.chat import SystemPrompt

    model = app.generation.model
    # The generator knows the app's template so adapter cards are checked against it; every
    # strategy still sends the rendered prompt itself as the first message.
    sp = SystemPrompt(app.system_prompt, defaults={"app_name": app.title or app.name})
    if model in ("embedded", "default"):
        return ("default",), {"system_prompt": sp}
    return (app.resolve(model) if app.resolve(model).exists() else model,), {"system_prompt": sp}


def _module_args(module: str):
    """A backend module's own ``app_kwargs(app)`` (the openai and vllm backends keep theirs there)."""
    import importlib

    return lambda app: importlib.import_module(module).app_kwargs(app)


# how an app's settings become a backend factory's arguments; a backend not listed is called with none
_BACKEND_ARGS = {
    "hf": _hf_args,
    "scripted": lambda app: ((), {"context_window": 4096}),
    "openai": _module_args("hybrid.generation.openai_backend"),
    "vllm": _module_args("hybrid.generation.vllm_backend"),
}


def make_generator(app: AppConfig):
    """The app's generator, from the ``hybrid.generation.GENERATORS`` backend ``generator_backend``
    picks for ``generation.model``: the embedded SmolLM2 by default, or a local HF model directory."""
    from hybrid.generation import GENERATORS

    backend = app.generation.backend  # "transformers" (the default): by generation.model, as before
    backend = generator_backend(app.generation.model) if backend in ("transformers", "hf") else backend
    args, kwargs = _BACKEND_ARGS.get(backend, lambda app: ((), {}))(app)
    factory = GENERATORS.get(backend)
    if backend == "hf":  # an encoder-decoder model directory (T5, BART): the seq2seq generator
        from hybrid.generation.seq2seq import Seq2SeqGenerator, is_encoder_decoder_model

        factory = Seq2SeqGenerator if is_encoder_decoder_model(args[0]) else factory
    return factory(*args, **kwargs)


def make_embedder(app: AppConfig):
    """The embedder the app's knowledge base is configured with (``knowledge_base.embedder``), not warmed up."""
    from indexes.embed import get_embedder

    return get_embedder(app.knowledge_base.embedder)


def kb_size(kb) -> int:
    try:
        stats = kb.stats()
    except AttributeError:
        return -1  # a retriever without stats (a fake): assume it has content
    if isinstance(stats, dict):
        for key in ("chunks", "n_chunks", "vectors", "documents"):
            if key in stats:
                return int(stats[key])
        return -1
    for key in ("chunks", "n_chunks", "vectors", "documents"):
        if hasattr(stats, key):
            return int(getattr(stats, key))
    return -1


def open_or_build_kb(app: AppConfig, embedder, *, progress: bool = False):
    """Open the app's KB; build it from ``knowledge_base.sources`` when missing (and allowed).
    Returns None when there is no KB and nothing to build it from."""
    from indexes.kb import MANIFEST, KnowledgeBase

    path = app.kb_path
    if (path / MANIFEST).exists():
        return KnowledgeBase.open(path, embedder=embedder)
    if not app.knowledge_base.sources or not app.knowledge_base.build_on_first_use:
        return None
    log.warning("building the %s knowledge base from %s into %s (first use)", app.name,
                ", ".join(app.knowledge_base.sources), path)
    return build_kb(app, embedder, progress=progress)


def build_kb(app: AppConfig, embedder, *, progress: bool = True, prune: bool = True):
    """Ingest the app's sources and create or sync its knowledge base; returns the open KB.
    Unchanged documents are not re-embedded (the KB syncs by content hash)."""
    from indexes.kb import KnowledgeBase

    docs = load_sources(app, progress=progress)
    kb = KnowledgeBase.create(app.kb_path, kb_config(app), embedder=embedder, exist_ok=True)
    report = kb.sync(docs, prune=prune, progress=progress)
    log.info("%s knowledge base: %s", app.name, report)
    return kb


def kb_config(app: AppConfig):
    from indexes.config import IndexConfig

    kb = app.knowledge_base
    return IndexConfig(embedder=kb.embedder, chunk_size=kb.chunk_size, chunk_overlap=kb.chunk_overlap)


def load_sources(app: AppConfig, *, progress: bool = True) -> list:
    """Cleaned documents from every source of the app; bad files are counted skips (logged)."""
    import connectors

    if not app.knowledge_base.sources:
        raise InputError(f"app {app.name!r} lists no knowledge_base.sources")
    from core.config import load_config

    cfg = load_config(connectors.IngestConfig, None, data=app.knowledge_base.ingest)
    result = connectors.ingest([str(p) for p in app.source_paths()], cfg, progress=progress)
    log.info("%s: %s", app.name, result.report.render() if hasattr(result.report, "render") else result.report)
    return result.documents


def read_prompts(path: Path) -> list[str]:
    """User prompts from tuning data in any shape hybrid.tuning accepts (chat, alpaca, Q/A)."""
    out: list[str] = []
    if not path.is_file():
        return out
    for _, row in read_jsonl(path):
        if not isinstance(row, dict):
            continue
        if isinstance(row.get("messages"), list):
            users = [m.get("content", "") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            if users:
                out.append(str(users[0]))
            continue
        for key in ("question", "prompt", "instruction", "query", "input"):
            if row.get(key):
                text = str(row[key])
                if key == "instruction" and row.get("input"):
                    text += "\n" + str(row["input"])
                out.append(text)
                break
    return out


def has_adapter_files(app: AppConfig) -> bool:
    """Whether the app's adapter directory holds an adapter (its PEFT config or its card)."""
    from hybrid.tuning.card import CARD_FILE

    p = app.adapter_path
    return (p / "adapter_config.json").is_file() or (p / CARD_FILE).is_file()


def adapter_training_prompts(app: AppConfig) -> list[str]:
    """The user prompts the app's adapter was trained on: from the train-split data files its card
    names (relative paths resolve against the app), else from the app's ``adapter.tune_data``."""
    from hybrid.tuning.card import read_card

    paths: list[Path] = []
    try:
        data = read_card(app.adapter_path).data
    except (OSError, InputError, TypeError):  # no card, or one this reader cannot parse
        data = []
    for d in data:
        if getattr(d, "split", "train") == "train" and getattr(d, "path", None):
            p = Path(d.path)
            paths.append(p if p.is_absolute() else app.resolve(str(p)))
    paths = [p for p in paths if p.is_file()] or [app.resolve(app.adapter.tune_data)]
    return [q for p in paths for q in read_prompts(p)]


def tune_config(app: AppConfig, config: str | Path | None = None, overrides: Sequence[str] = ()):
    """The ``TuneConfig`` that trains ``app``'s adapter: the given preset with the app's system prompt
    template and ``{app_name}`` value, so training rows carry exactly the prompt inference uses.
    An explicit ``data.system_prompt=`` / ``data.app_name=`` override still wins over the app's.

    The CLI equivalent: ``hybrid tune --app apps/legal --config configs/lora.yaml``.
    """
    import dataclasses

    from core.config import load_config
    from hybrid.tuning import TuneConfig

    cfg = load_config(TuneConfig, config, overrides)
    given = {o.split("=", 1)[0].strip() for o in overrides}
    values = {"system_prompt": app.system_prompt, "app_name": app.title or app.name}
    data = dataclasses.replace(cfg.data, **{k: v for k, v in values.items() if f"data.{k}" not in given})
    return dataclasses.replace(cfg, data=data)


def app_tune_data(app: AppConfig) -> Path:
    """The app's ``adapter.tune_data`` file; a missing one is a one-line ``InputError``."""
    path = app.resolve(app.adapter.tune_data)
    if not path.is_file():
        raise InputError(f"{app.name}: adapter.tune_data {path} not found (set it in "
                         f"{Path(app.root) / 'app.yaml'} or pass --data)")
    return path


def adapter_is_current(app: AppConfig) -> tuple[bool, str]:
    """Whether the adapter on disk was trained with this app's system prompt (template hash)."""
    from hybrid.tuning.card import CARD_FILE, read_card

    if not (app.adapter_path / CARD_FILE).is_file():
        return False, f"no adapter at {app.adapter_path}"
    try:
        card = read_card(app.adapter_path)
    except (OSError, InputError) as e:
        return False, f"unreadable adapter card ({e})"
    want = app.system_prompt_hash()
    if card.system_prompt_hash and card.system_prompt_hash != want:
        return False, "the adapter was trained with a different system prompt"
    return True, f"adapter at {app.adapter_path} ({card.steps} steps)"


def ensure_adapter(app: AppConfig, *, config: str | Path | None = None, overrides: Sequence[str] = (),
                   force: bool = False, progress: bool = True) -> tuple[Path, bool]:
    """Train the app's adapter from ``adapter.tune_data`` unless a current one exists.
    Returns (adapter dir, trained now?)."""
    ok, why = adapter_is_current(app)
    if ok and not force:
        log.info("%s: reusing %s", app.name, why)
        return app.adapter_path, False
    from hybrid.tuning import train

    cfg = tune_config(app, config, overrides)
    log.warning("%s: training the adapter (%s)", app.name, why)
    train(cfg, data=[str(app_tune_data(app))], out=app.adapter_path, progress=progress)
    return app.adapter_path, True


# "Tune briefly", as overrides for ensure_adapter(app, overrides=DEMO_TUNE): 12 optimizer steps of ~1k
# tokens. Measured 235 s for 8 such steps on a heavily shared 2-core machine (one torch thread).
# (`make demo` tunes with configs/demo-lora.yaml instead.)
DEMO_TUNE = ("train.max_steps=12", "train.batch_tokens=1024", "train.eval_every=0", "train.tensorboard=false",
             "data.max_length=512")
