"""The role interfaces, as ``typing.Protocol``s: what callers call on each role. Implementations
register by name; no base classes.

Shapes (every package codes against these, tests use the fakes that live next to the real ones;
tests/test_protocols.py checks that the real classes and the fakes satisfy them):

- ``Embedder``   indexes/embed.py      (real: SentenceTransformerEmbedder, fake: HashEmbedder)
- ``Generator``  hybrid/generation/    (real: HFGenerator, fake: ScriptedGenerator)
- ``Retriever``  indexes/kb.py         (KnowledgeBase)
- ``Strategy``   hybrid/strategies/    (few_shot, rag, tuned, tuned_rag, extract)
- ``Router``     hybrid/routing/       (rules, learned, fixed:<strategy>)

Types that live in higher layers (a strategy's ``Prompt``, a knowledge base's ``SyncReport``) are
``Any`` here: the ground imports nothing of ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from core.types import Answer, Decision, Document, Hit


@runtime_checkable
class Embedder(Protocol):
    """Text -> L2-normalized float32 vectors of shape (n, dim)."""

    name: str  # e.g. "sentence-transformers/all-MiniLM-L6-v2"
    revision: str  # content hash of the weights, recorded in manifests
    dim: int

    def warm_up(self) -> None: ...

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass
class GenerationParams:
    """Sampling settings shared by every strategy and by evaluation."""

    max_new_tokens: int = field(default=128, metadata={"help": "upper bound on generated tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0 means greedy decoding"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    stop: list[str] = field(default_factory=list, metadata={"help": "strings that end generation"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    repetition_penalty: float = field(default=1.1, metadata={
        "help": "penalty on tokens the model already generated (never on the prompt, so answers may quote their sources); 1.0 disables it"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The one check of these values, run on creation and again by every generator (a dataclass
        can be mutated after creation). Raises ``InputError``, which is also a ``ValueError``."""
        import math

        from core.errors import InputError

        if not isinstance(self.max_new_tokens, int):
            raise InputError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be > 0, got {self.max_new_tokens!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise InputError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not math.isfinite(self.top_p) or not (0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise InputError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InputError(f"stop strings must be non-empty strings, got {self.stop!r}")


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length" | "cancelled"


@runtime_checkable
class Generator(Protocol):
    """Chat-in, text-out. ``adapter`` names a loaded LoRA adapter (None = base model)."""

    model_id: str
    context_window: int

    def warm_up(self) -> None: ...

    def generate(self, messages: list[Message], *, adapter: str | None = None,
                 params: GenerationParams | None = None) -> Generation: ...

    def stream(self, messages: list[Message], *, adapter: str | None = None,
               params: GenerationParams | None = None) -> Iterator[str]: ...

    def generate_batch(self, batch: list[list[Message]], *, adapter: str | None = None,
                       params: GenerationParams | None = None) -> list[Generation]: ...

    def count_tokens(self, messages: list[Message]) -> int: ...

    def has_adapter(self, name: str) -> bool: ...

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load the LoRA adapter in directory ``path`` under ``name`` (then ``adapter=name`` uses it)."""


@runtime_checkable
class Retriever(Protocol):
    """Search over stored chunks, plus the upkeep the pipeline and the API call."""

    def search(self, query: str, k: int = 5, *, filters: dict[str, Any] | None = None,
               mode: str = "hybrid") -> list[Hit]: ...

    def stats(self) -> dict[str, Any]:
        """Counts and settings; ``"chunks"`` is how many chunks a search can return."""

    def sync(self, documents: Iterable[Document], prune: bool = False, progress: bool = False) -> Any:
        """Add new, refresh changed (``prune=True``: also delete absent) documents; returns a report."""


@runtime_checkable
class Strategy(Protocol):
    """``build`` makes the prompt (a ``hybrid.strategies.base.Prompt``) that the pipeline generates
    from or streams (via ``hybrid.strategies.base.run_prompt``); ``answer`` is both in one call."""

    name: str
    cost: float  # relative cost, used by cost-aware routing

    def build(self, query: str, ctx: Any) -> Any: ...

    def answer(self, query: str, ctx: Any) -> Answer: ...


@runtime_checkable
class Router(Protocol):
    def route(self, query: str, ctx: Any) -> Decision: ...
