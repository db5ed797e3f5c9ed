"""What every strategy shares: the context it answers in, the prompt it builds, how a prompt
becomes an ``Answer``, and the traits it declares. Plain functions, no base class.

A strategy builds a ``Prompt`` (messages + adapter + citations + notices) and ``run_prompt`` turns it
into an ``Answer``; the split lets the chat stream tokens from the same prompt the CLI would use.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core.protocols import GenerationParams, Generator, Message, Retriever
from core.types import Answer, Citation, Hit

from hybrid.strategies import guard


@dataclass(frozen=True)
class Traits:
    """What a strategy needs and does, declared as class attributes of the same names (an attribute
    the class does not set takes the default below). The pipeline, the evaluation and the router's
    signals read these instead of strategy names:

    - ``uses_kb``: retrieves from the knowledge base. Excluded while the app's KB is missing or
      empty; its evaluation answers are cached per KB version.
    - ``uses_adapter``: generates with the app's adapter. Excluded while the app has none; cached
      per adapter version.
    - ``uses_examples``: reads the example bank. Excluded while the bank is empty.
    - ``uses_reader``: reads the app's extractive reader. Cached per reader version.
    - ``grounded``: its answers get a groundedness score against the retrieved sources in the
      evaluation. Unset, it follows ``uses_kb``.
    - ``generates``: calls the generator. ``False`` for a strategy that answers without the model
      (extract quotes a span).
    """

    uses_kb: bool = False
    uses_adapter: bool = False
    uses_examples: bool = False
    uses_reader: bool = False
    grounded: bool = False
    generates: bool = True


def traits(strategy: Any) -> Traits:
    """The traits a strategy class (or instance) declares, defaults filled in."""
    def get(name: str, default: bool) -> bool:
        return bool(getattr(strategy, name, default))

    uses_kb = get("uses_kb", False)
    return Traits(uses_kb=uses_kb, uses_adapter=get("uses_adapter", False),
                  uses_examples=get("uses_examples", False), uses_reader=get("uses_reader", False),
                  grounded=get("grounded", uses_kb), generates=get("generates", True))


@dataclass
class StrategyContext:
    """Everything a strategy needs to answer one query. Built by the pipeline per query.

    ``hits`` are the retrieval results the router already fetched (reused, never fetched twice);
    ``system_prompt`` is the app's rendered prompt, the same on every path.
    """

    system_prompt: str
    generator: Generator
    params: GenerationParams
    budget: int  # prompt tokens available
    retriever: Retriever | None = None
    examples: Any = None  # ExampleBank
    adapter: str | None = None  # name of the loaded adapter, None when the app has none
    history: list[Message] = field(default_factory=list)
    retrieval_query: str = ""
    query_vec: np.ndarray | None = None
    hits: list[Hit] | None = None
    k: int = 6
    mode: str = "hybrid"
    min_score: float = 0.25
    framing: str = "quoted"  # rag.framing
    answer_style: str = "free"  # rag.answer_style
    max_examples: int = 6
    mmr_lambda: float = 0.7
    chain_of_thought: bool = False
    dont_know: str = "I don't know."
    refuse: str = "I can't repeat instructions found inside my sources."
    embedder: Any = None  # the app's embedder (extract's zero-shot sentence scoring)
    reader: Any = None  # the app's extractive Reader (hybrid.reader), None = zero-shot extraction
    reader_threshold: float | None = None  # abstain below this span score; None = the reader card's
    max_answer_tokens: int = 30  # longest span a reader may return
    reader_quote: str = "auto"  # a tuned reader quotes its span or its sentence; auto = the card's choice
    reader_k: int | None = None  # chunks extract reads; None = its default for the reader in use
    timings: dict[str, float] = field(default_factory=dict)
    filters: dict[str, Any] | None = None  # metadata filter scoping retrieval, e.g. {"source": "policy.txt"}
    _deep: tuple[int, list[Hit]] | None = field(default=None, repr=False)  # (k, hits) of a deeper search

    def retrieve(self, k: int | None = None) -> list[Hit]:
        """The top ``self.k`` hits (kept in ``hits``), or the top ``k`` when a strategy reads deeper
        (extract): that searches once more, and is kept apart, so ``hits`` stays what rag reads."""
        if k is not None and k > self.k:
            if self._deep is None or self._deep[0] < k:
                self._deep = (k, self._search(k, "retrieve_deep"))
            return self._deep[1][:k]
        if self.hits is None:
            self.hits = self._search(self.k, "retrieve")
        return self.hits if k is None else self.hits[:k]

    def _search(self, k: int, timing: str) -> list[Hit]:
        if self.retriever is None:
            return []
        t = time.perf_counter()
        extra = {"filters": self.filters} if self.filters else {}  # retrievers without filters still work
        out = list(self.retriever.search(self.retrieval_query, k, mode=self.mode, **extra))
        self.timings[timing] = time.perf_counter() - t
        return out


@dataclass
class Prompt:
    """A built prompt, ready to generate from (or an answer that needs no model)."""

    messages: list[Message]
    adapter: str | None = None
    citations: list[Citation] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    injections: list[guard.Injection] = field(default_factory=list)
    postprocess: Callable[[str], str] | None = None
    direct: str | None = None  # when set, this is the answer and the model is not called
    params: GenerationParams | None = None  # per-prompt sampling settings (None = the context's)
    confidence: float | None = None  # a direct answer's own score (extract's span probability)
    hits: list[Hit] | None = None  # what the strategy read, when not the context's ``hits`` (extract reads deeper)


def relevance(hit: Hit) -> float:
    """The score thresholds compare: dense cosine when the KB reports it (comparable across
    queries), else the fused score."""
    return float(hit.scores.get("dense", hit.score))


def base_messages(ctx: StrategyContext) -> list[Message]:
    return [{"role": "system", "content": ctx.system_prompt}, *ctx.history]


def count(ctx: StrategyContext, messages: list[Message]) -> int:
    return int(ctx.generator.count_tokens(messages))


_CITE = re.compile(r"\[(\d{1,2})\]")


def keep_cited(text: str, citations: list[Citation]) -> tuple[str, list[Citation]]:
    """Numbers the model cited that exist stay; invented numbers are removed from the text.
    With no valid citation in the text, every source shown to the model is returned."""
    valid = {c.n for c in citations}
    used = []
    def fix(m: re.Match) -> str:
        n = int(m.group(1))
        if n in valid:
            used.append(n)
            return m.group(0)
        return ""
    text = _CITE.sub(fix, text)
    if used:
        return text, [c for c in citations if c.n in set(used)]
    return text, list(citations)


def run_prompt(name: str, prompt: Prompt, ctx: StrategyContext, text: str | None = None,
               usage: dict[str, int] | None = None) -> Answer:
    """Generate (unless ``text`` came from a stream or the prompt is direct) and post-process."""
    notices = list(prompt.notices)
    usage = dict(usage or {})
    if prompt.direct is not None:
        return Answer(text=prompt.direct, strategy=name, citations=list(prompt.citations),
                      timings=dict(ctx.timings), usage={"prompt_tokens": 0, "completion_tokens": 0},
                      notices=notices, confidence=prompt.confidence)
    if text is None:
        t = time.perf_counter()
        params = prompt.params or ctx.params
        gen = ctx.generator.generate(prompt.messages, adapter=prompt.adapter, params=params)
        ctx.timings["generate"] = time.perf_counter() - t
        text = gen.text
        usage = {"prompt_tokens": int(gen.prompt_tokens), "completion_tokens": int(gen.completion_tokens)}
        if gen.finish_reason == "length":
            notices.append(f"answer cut at max_new_tokens={params.max_new_tokens}")
    if prompt.postprocess is not None:
        text = prompt.postprocess(text)
    text, removed = guard.filter_output(text, prompt.injections)
    if removed:
        notices.append(f"removed {removed} answer line(s) that repeated instructions found in retrieved data")
        if not text:
            text = ctx.refuse
    citations = prompt.citations
    if citations:
        text, citations = keep_cited(text, citations)
    return Answer(text=text.strip(), strategy=name, citations=citations, timings=dict(ctx.timings),
                  usage=usage, notices=notices)
