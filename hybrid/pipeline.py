"""The query path: validate -> (rewrite from history) -> route -> one strategy -> Answer.

::

    from hybrid.pipeline import Assistant, ask
    answer = ask("What is the notice period for a residential lease?", "apps/legal")
    answer.strategy, answer.decision.reason, answer.citations, answer.timings

    bot = Assistant.from_dir("apps/shopping")   # components load once, lazily
    bot.warm_up()                               # or let the first question do it
    history = []
    a = bot.ask("Do you sell trail shoes?", history)
    history += [{"role": "user", "content": "Do you sell trail shoes?"},
                {"role": "assistant", "content": a.text}]
    bot.ask("How much are they?", history)      # "they" -> retrieval uses the previous question too

``Assistant`` caches the embedder, knowledge base, example bank, generator, adapter and router;
``ask()`` keeps one ``Assistant`` per app directory for the process. ``Assistant.prepare`` routes and
builds the prompt without generating (a ``Prepared``); ``ask`` and ``stream`` generate from it.

The parts an app loads once (embedder, KB, example bank, generator, adapter, reader, routers) live in
``hybrid.components`` (``Assistant`` is a ``Components``); the follow-up heuristics in ``hybrid.history``,
the component builders and the adapter lifecycle in ``hybrid.assemble`` (both re-exported here under
their old names); the main job ``make demo`` runs is ``hybrid.demo.run_main_job``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from core.errors import InputError
from core.io import read_jsonl
from core.protocols import Message
from core.types import Answer, Decision
from hybrid.app import AppConfig, load_app
# The builders live in hybrid.assemble; the CLI, the API, benchmarks and tests import them from here too.
from hybrid.assemble import (  # noqa: F401
    DEMO_TUNE, adapter_is_current, adapter_training_prompts, app_tune_data, build_kb, ensure_adapter,
    has_adapter_files, kb_config, kb_size, load_sources, make_embedder, make_generator, open_or_build_kb,
    read_prompts, tune_config)
from hybrid.components import Components
from hybrid.history import bounded_history, retrieval_query, validate_history
from hybrid.history import depends_on_history  # noqa: F401 - re-exported: hybrid.pipeline's public name

log = logging.getLogger(__name__)



def strategy_choices() -> tuple[str, ...]:
    """What a request may force: ``auto`` and every registered strategy (read at call time, so a
    strategy registered after import is accepted)."""
    from hybrid.strategies import strategy_names

    return ("auto", *strategy_names())

# The question itself may use at most this share of the prompt budget; the rest is for context.
QUERY_SHARE = 0.5

@dataclass
class Prepared:
    """One query made ready to generate: what ``Assistant.prepare`` returns to ``ask``, ``stream``
    and the evaluation runner (which batches the generation itself)."""

    strategy: Any              # the chosen strategy (``hybrid.strategies`` object; ``.name``)
    prompt: Any                # its built prompt: messages, adapter, params, or a direct answer
    ctx: Any                   # the ``StrategyContext`` the prompt was built with (hits, params)
    decision: Decision         # the router's choice, confidence and reason
    notices: list[str]         # what the user should know (truncation, history rewrite, ...)
    timings: dict[str, float]  # seconds per stage so far: embed, retrieve, route, prompt
    started: float             # ``time.perf_counter()`` when preparing began; the answer's total counts from it


@dataclass
class Streamed:
    """Tokens as they come (iterate), then ``.answer`` once the iteration is over."""

    tokens: Iterator[str]
    decision: Decision | None = None  # known before the first token
    answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        return self.tokens


class Assistant(Components):
    """One app, ready to answer. Heavy parts load once, on ``warm_up()`` or first use (see
    ``hybrid.components.Components``); this class is the query path over them.

    >>> bot = Assistant.from_dir("apps/legal")            # cheap: reads app.yaml only
    >>> bot.ask("Who pays the deposit?").decision.reason   # doctest: +SKIP

    Pass ``generator=``, ``embedder=``, ``knowledge_base=`` to share or fake components
    (tests pass a ScriptedGenerator and a hash embedder).
    """

    # -- answering -------------------------------------------------------------------------------
    def budget(self) -> int:
        g = self.app.generation
        return max(64, min(g.max_prompt_tokens, int(self.generator.context_window) - g.max_new_tokens))

    def _fit_query(self, query: str, notices: list[str]) -> str:
        """Truncate a query that alone would eat more than its share of the context window."""
        gen = self.generator
        limit = int(self.budget() * QUERY_SHARE)
        sys_msg = {"role": "system", "content": self.system_prompt}

        def size(q: str) -> int:
            return int(gen.count_tokens([sys_msg, {"role": "user", "content": q}]))

        full = size(query)
        if full <= limit:
            return query
        lo, hi = 0, len(query)  # longest prefix that fits, by bisection on characters
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(query[:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        cut = query[:lo]
        if " " in cut[int(len(cut) * 0.8):]:
            cut = cut[: cut.rstrip().rfind(" ")]  # end on a word boundary when one is close
        notices.append(f"query truncated from {full} to {size(cut)} prompt tokens to fit the context window")
        return cut.rstrip()

    def _bounded_history(self, history: list[Message]) -> list[Message]:
        # history may use at most a quarter of the budget: drop oldest pairs first
        return bounded_history(history, self.app.generation.history_turns, self.generator.count_tokens,
                               self.budget() // 4)

    def prepare(self, query: str, history: Sequence[Message] | None = None, strategy: str = "auto",
                router: str | None = None, filters: dict[str, Any] | None = None) -> Prepared:
        """Validate, route, and build the chosen strategy's prompt: a ``Prepared`` for ``ask`` and
        ``stream``. ``filters`` scopes retrieval to matching chunks (``KnowledgeBase.search`` syntax,
        e.g. ``{"source": "policy.txt"}``)."""
        from hybrid.strategies import get_strategy
        from hybrid.strategies.base import StrategyContext, traits

        t0 = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise InputError("query is empty: ask a question")
        choices = strategy_choices()
        if strategy not in choices:
            raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(choices)}")
        notices: list[str] = []
        timings: dict[str, float] = {}
        query = self._fit_query(query.strip(), notices)
        hist = self._bounded_history(validate_history(history))
        rq = retrieval_query(query, hist)
        if rq != query:
            notices.append(f"retrieval query rewritten from history: {rq!r}")
        t = time.perf_counter()
        qvec = np.asarray(self.embedder.embed([rq]), dtype=np.float32)[0]
        timings["embed"] = time.perf_counter() - t

        app = self.app
        sctx = StrategyContext(
            system_prompt=self.system_prompt, generator=self.generator, params=app.generation.params(),
            budget=self.budget(), retriever=self.knowledge_base, examples=self.examples, adapter=self.adapter,
            history=hist, retrieval_query=rq, query_vec=qvec, k=app.rag.k, mode=app.rag.mode,
            min_score=app.rag.min_score, framing=app.rag.framing, answer_style=app.rag.answer_style,
            max_examples=app.examples.max_k, mmr_lambda=app.examples.mmr_lambda,
            chain_of_thought=app.examples.chain_of_thought, dont_know=app.voice.dont_know,
            refuse=app.voice.refuse, timings=timings, filters=filters or None)
        missing = self.missing()
        excluded = self.excluded(missing)
        if sctx.retriever is not None and missing["uses_kb"] is not None:
            sctx.retriever = None  # a missing or empty KB: nothing to search
        sctx.k = self.retrieval_k()
        built: dict[str, Any] = {}  # extract's prompt, built at most once per query

        def give_reader() -> None:
            # the reader loads only when a strategy that uses it is asked for (by the router or to answer)
            sctx.embedder, sctx.reader = self.sentence_embedder, self.reader
            sctx.reader_threshold, sctx.max_answer_tokens = app.reader.threshold, app.reader.max_answer_tokens
            sctx.reader_quote = app.reader.quote
            sctx.reader_k = self.extract_k(sctx.reader)

        def extract_prompt():
            if "prompt" not in built:
                give_reader()
                built["prompt"] = get_strategy("extract").build(query, sctx)
            return built["prompt"]

        def extract_confidence() -> float:
            return float(extract_prompt().confidence or 0.0)  # no relevant source: nothing to quote

        rctx = self.route_context(rq, qvec, sctx.retrieve, excluded, extract_confidence, self.extract_scorer)
        kind = f"fixed:{strategy}" if strategy != "auto" else (router or self._router_kind)
        t = time.perf_counter()
        decision: Decision = self.router(kind).route(rq, rctx)
        # routing time excludes the retrieval it triggered: that is reused by rag/tuned_rag (scoring
        # extract's confidence stays in it: when extract then answers, building its prompt costs nothing)
        timings["route"] = time.perf_counter() - t - timings.get("retrieve", 0.0)
        log.info("route %s -> %s (confidence %.2f): %s", app.name, decision.strategy, decision.confidence,
                 decision.reason)
        strat = get_strategy(decision.strategy)
        t = time.perf_counter()
        # extract scored for routing (the router's gate) is not run again: its prompt (the quoted span)
        # is the answer
        if strat.name == "extract":
            prompt = extract_prompt()
        else:
            if traits(strat).uses_reader:
                give_reader()
            prompt = strat.build(query, sctx)
        timings["prompt"] = time.perf_counter() - t
        return Prepared(strategy=strat, prompt=prompt, ctx=sctx, decision=decision, notices=notices,
                        timings=timings, started=t0)

    def ask(self, query: str, history: Sequence[Message] | None = None, strategy: str = "auto", *,
            router: str | None = None, filters: dict[str, Any] | None = None) -> Answer:
        """Answer one query. ``strategy`` forces one (``auto`` = the app's router); ``filters`` scopes
        retrieval to a document or source."""
        from hybrid.strategies.base import run_prompt

        p = self.prepare(query, history, strategy, router, filters)
        return self._finish(run_prompt(p.strategy.name, p.prompt, p.ctx), p)

    def stream(self, query: str, history: Sequence[Message] | None = None, strategy: str = "auto", *,
               router: str | None = None, filters: dict[str, Any] | None = None) -> Streamed:
        """Like ``ask`` but yields text as it is generated; ``.answer`` is set at the end.

        When the data block held instruction-like text, tokens are released a line at a time so the
        output filter can drop an echoing line before it is shown.
        """
        from hybrid.strategies import guard
        from hybrid.strategies.base import run_prompt

        p = self.prepare(query, history, strategy, router, filters)
        strat, prompt, sctx = p.strategy, p.prompt, p.ctx
        out = Streamed(iter(()), decision=p.decision)

        def tokens() -> Iterator[str]:
            if prompt.direct is not None:
                yield prompt.direct
                out.answer = self._finish(run_prompt(strat.name, prompt, sctx), p)
                return
            t = time.perf_counter()
            pieces: list[str] = []
            line = ""
            buffered = bool(prompt.injections) or prompt.postprocess is not None
            inner = self.generator.stream(prompt.messages, adapter=prompt.adapter,
                                          params=prompt.params or sctx.params)
            try:
                for piece in inner:
                    pieces.append(piece)
                    if not buffered:
                        yield piece
                        continue
                    line += piece
                    while "\n" in line:
                        head, line = line.split("\n", 1)
                        if prompt.postprocess is None and not any(guard.echoes(head, i) for i in prompt.injections):
                            yield head + "\n"
            finally:
                # closing this generator (client gone, /stop) must stop the model's stream too
                close = getattr(inner, "close", None)
                if close is not None:
                    close()
            text = "".join(pieces)
            sctx.timings["generate"] = time.perf_counter() - t
            if buffered and prompt.postprocess is None and line and \
                    not any(guard.echoes(line, i) for i in prompt.injections):
                yield line
            usage = {"prompt_tokens": int(self.generator.count_tokens(prompt.messages)),
                     "completion_tokens": len(pieces)}
            ans = run_prompt(strat.name, prompt, sctx, text=text, usage=usage)
            if prompt.postprocess is not None:
                yield ans.text  # chain-of-thought: only the final answer is shown
            out.answer = self._finish(ans, p)

        out.tokens = tokens()
        return out

    def _finish(self, ans: Answer, p: Prepared) -> Answer:
        ans.decision = p.decision
        ans.notices = p.notices + ans.notices
        ans.timings["total"] = time.perf_counter() - p.started
        ans.timings = {k: round(v, 4) for k, v in ans.timings.items()}
        log.info("answer %s via %s in %.2fs", self.app.name, ans.strategy, ans.timings["total"])
        return ans


def demo_questions(app: AppConfig, n: int = 5) -> list[str]:
    """A handful of held-out questions of mixed types (one per type first) from questions.jsonl."""
    path = app.resolve("questions.jsonl")
    rows = [r for _, r in read_jsonl(path) if isinstance(r, dict) and r.get("question")] if path.is_file() else []
    by_type: dict[str, list[str]] = {}
    for r in rows:
        by_type.setdefault(str(r.get("type", "")), []).append(str(r["question"]))
    out: list[str] = []
    while len(out) < n and any(by_type.values()):
        for t in sorted(by_type):
            if by_type[t] and len(out) < n:
                out.append(by_type[t].pop(0))
    return out


_ASSISTANTS: dict[str, Assistant] = {}
_ASSISTANTS_LOCK = threading.Lock()


def get_assistant(app: "str | Path | AppConfig | Assistant") -> Assistant:
    """One cached ``Assistant`` per app directory for this process."""
    if isinstance(app, Assistant):
        return app
    cfg = app if isinstance(app, AppConfig) else load_app(app)
    key = str(Path(cfg.root).resolve())
    with _ASSISTANTS_LOCK:
        if key not in _ASSISTANTS or _ASSISTANTS[key].app != cfg:
            _ASSISTANTS[key] = Assistant(cfg)
        return _ASSISTANTS[key]


def ask(query: str, app: "str | Path | AppConfig | Assistant", history: Sequence[Message] | None = None,
        strategy: str = "auto") -> Answer:
    """Answer ``query`` with ``app`` (a directory, an ``AppConfig`` or an ``Assistant``).

    Returns ``Answer(text, strategy, decision, citations, timings, usage, notices)``.
    """
    return get_assistant(app).ask(query, history, strategy)


def answer_to_dict(ans: Answer) -> dict[str, Any]:
    """JSON-ready form of an answer (CLI ``--json``, API)."""
    from dataclasses import asdict

    return asdict(ans)
