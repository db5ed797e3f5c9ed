"""What the HTTP layer needs from the product, as one small protocol, with two implementations.

- ``RealBackend``: the product. One ``hybrid.pipeline.Assistant`` per app directory (its own knowledge
  base, example bank, adapter and router), connectors for uploads, ``KnowledgeBase.sync`` for ingest.
- ``FakeBackend``: a deterministic stand-in (keyword search over in-memory documents, scripted
  token stream with an optional delay) so the HTTP behaviour (auth, caps, queueing, streaming,
  disconnects, schemathesis) is tested in milliseconds. It never replaces the real one in the tests
  that matter: those start ``hybrid serve`` on real apps.

::

    backend = RealBackend(["apps/legal", "apps/shopping"])
    backend.load()                                   # warm-up: models, knowledge bases, routers
    for item in backend.ask_stream(AskRequest(app="legal", question="Notice period?"), threading.Event()):
        print(item if isinstance(item, str) else item.strategy)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

from apps.api.batched import batched_generator, shorter_gil_turns, torch_threads
from core.errors import ConfigError, InputError
from core.types import Answer, Chunk, Citation, Decision, Document, Hit

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (stage message, fraction done in [0, 1])


class UnknownAppError(InputError):
    """The request names an app this server does not serve (HTTP 404)."""


class NotReadyError(RuntimeError):
    """Models or knowledge bases are still loading (HTTP 503)."""


@dataclass
class AskRequest:
    """One question, already checked against the service caps by the HTTP layer."""

    app: str
    question: str
    history: list[dict[str, str]] = field(default_factory=list)
    strategy: str = "auto"
    k: int | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    filters: dict[str, Any] | None = None  # metadata filter scoping retrieval (KnowledgeBase.search syntax)


@runtime_checkable
class Backend(Protocol):
    def app_names(self) -> list[str]: ...

    def load(self) -> None:
        """Blocking warm-up; ``ready()`` is True afterwards."""

    def ready(self) -> bool: ...

    def apps_info(self) -> list[dict[str, Any]]: ...

    def ask(self, req: AskRequest, cancel: threading.Event) -> Answer: ...

    def ask_stream(self, req: AskRequest, cancel: threading.Event) -> Iterator[str | Answer]:
        """Text pieces as generated, then exactly one ``Answer``. Stops soon after ``cancel`` is set."""

    def search(self, app: str, query: str, k: int, mode: str = "hybrid") -> list[Hit]: ...

    def ingest_files(self, app: str, paths: Sequence[Path], progress: Progress) -> dict[str, Any]:
        """Load the files and sync them into ``app``'s knowledge base; returns a report."""


def collect(stream: Iterator[str | Answer]) -> Answer:
    """Drain an ``ask_stream`` iterator and return its answer."""
    answer = None
    for item in stream:
        if isinstance(item, Answer):
            answer = item
    if answer is None:
        raise RuntimeError("the answer stream ended without an answer (cancelled?)")
    return answer


# ------------------------------------------------------------------------------------------------
# The real product
# ------------------------------------------------------------------------------------------------

class RealBackend:
    """Serves app directories through ``hybrid.pipeline``; each app keeps its own knowledge base.

    >>> b = RealBackend(["apps/legal"])   # cheap: reads app.yaml only   # doctest: +SKIP
    >>> b.load(); b.ask(AskRequest("legal", "Deposit cap?"), threading.Event()).strategy  # doctest: +SKIP
    """

    def __init__(self, app_dirs: Sequence[str | Path], *, overrides: Sequence[str] = (),
                 assistants: dict[str, Any] | None = None, batching: Any = None):
        from hybrid.app import load_app
        from hybrid.pipeline import Assistant

        if batching is None:  # what `hybrid serve` was told through HYBRID_API_BATCH_* (off by default)
            from apps.api.settings import BatchingSettings

            batching = BatchingSettings()
        self.batching = batching
        self._assistants: dict[str, Any] = dict(assistants or {})
        self._batchers: dict[str, Any] = {}  # app -> its BatchingGenerator, for batch_stats()
        for d in app_dirs:
            cfg = load_app(d, overrides)
            if cfg.name in self._assistants:
                raise ConfigError(f"two apps are named {cfg.name!r} (second: {d}); app names must differ")
            gen = batched_generator(cfg, batching)
            if hasattr(gen, "stats"):
                self._batchers[cfg.name] = gen
            self._assistants[cfg.name] = Assistant(cfg, generator=gen)
        if not self._assistants:
            raise ConfigError("no app to serve: pass --app DIR at least once")
        self._ready = threading.Event()
        self._ingest_lock = threading.Lock()  # one writer per process; KB writes are serialized anyway

    def app_names(self) -> list[str]:
        return list(self._assistants)

    def _assistant(self, app: str):
        try:
            return self._assistants[app]
        except KeyError:
            raise UnknownAppError(f"unknown app {app!r}; this server has: {', '.join(self._assistants)}") from None

    def load(self) -> None:
        if self._batchers:
            shorter_gil_turns()
        for name, a in self._assistants.items():
            t = time.perf_counter()
            a.warm_up()
            if self.batching.batch_max_size > 1:
                a.generator.warm_up()  # a generator passed in (batched) is not warmed up by the assistant
            log.info("app %s loaded in %.1fs", name, time.perf_counter() - t)
        self._ready.set()

    def ready(self) -> bool:
        return self._ready.is_set()

    def batch_stats(self) -> dict[str, dict[str, Any]]:
        """Per batched app, what its batcher did (batches, rows, sizes, cancelled rows); {} unbatched."""
        return {name: gen.stats.as_dict() for name, gen in self._batchers.items()}

    def apps_info(self) -> list[dict[str, Any]]:
        from hybrid.strategies import strategy_names

        out = []
        for name, a in self._assistants.items():
            app = a.app
            excluded = a.excluded() if self.ready() else {}
            card = None
            card_path = app.adapter_path / "adapter_card.json"
            if card_path.is_file():
                try:
                    card = json.loads(card_path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError) as e:
                    card = {"error": f"unreadable adapter card: {e}"}
            kb_stats = None
            if self.ready() and a.knowledge_base is not None:
                kb_stats = _jsonable(a.knowledge_base.stats())
                kb_stats.pop("path", None)  # server paths are nobody's business
            out.append({
                "name": name, "title": app.title or name, "description": app.description,
                "strategies": [s for s in strategy_names() if s not in excluded],
                "excluded": excluded, "router": app.router.kind, "adapter_card": card,
                "knowledge_base": kb_stats,
            })
        return out

    def _for_request(self, req: AskRequest):
        """The app's assistant, or a shallow copy sharing every loaded component with the request's
        overrides (k, sampling) in its config, so one request never changes another's settings."""
        a = self._assistant(req.app)
        gen_over = {k: v for k, v in (("max_new_tokens", req.max_new_tokens), ("temperature", req.temperature),
                                      ("top_p", req.top_p)) if v is not None}
        if not gen_over and req.k is None:
            return a
        app = a.app
        if gen_over:
            app = dataclasses.replace(app, generation=dataclasses.replace(app.generation, **gen_over))
        if req.k is not None:
            app = dataclasses.replace(app, rag=dataclasses.replace(app.rag, k=req.k))
        clone = copy.copy(a)
        clone.app = app
        return clone

    def ask_stream(self, req: AskRequest, cancel: threading.Event) -> Iterator[str | Answer]:
        if not self.ready():
            raise NotReadyError("still loading models and knowledge bases")
        a = self._for_request(req)
        torch_threads()
        batcher = getattr(self, "_batchers", {}).get(req.app)  # (tests build bare backends with __new__)
        # while retrieval runs, the app's batcher knows this answer is coming and may hold a batch for
        # it; with a prep limit, this thread first waits for its turn to prepare
        with batcher.expect(cancel) if batcher is not None else contextlib.nullcontext():
            if cancel.is_set():
                return
            s = a.stream(req.question, req.history, req.strategy, filters=req.filters)
            tokens = iter(s)
            pieces: list[str] = []
            try:
                for piece in tokens:
                    if cancel.is_set():
                        return
                    pieces.append(piece)
                    yield piece
            finally:
                # Closing the pipeline's token generator drops the model's stream, which cancels
                # generation within one token (hybrid.generation.GenerationStream).
                close = getattr(tokens, "close", None)
                if close is not None:
                    close()
        if cancel.is_set() or s.answer is None:
            return
        yield _count_completion(s.answer, "".join(pieces), a)

    def ask(self, req: AskRequest, cancel: threading.Event) -> Answer:
        # Through the stream, so a deadline or a disconnect can stop generation midway.
        return collect(self.ask_stream(req, cancel))

    def search(self, app: str, query: str, k: int, mode: str = "hybrid") -> list[Hit]:
        if not self.ready():
            raise NotReadyError("still loading models and knowledge bases")
        a = self._assistant(app)
        kb = a.knowledge_base
        if kb is None:
            return []
        from hybrid.pipeline import kb_size

        n = kb_size(kb)
        if n == 0:
            return []
        # The KB refuses k above its size; for an HTTP client "up to k" is the useful meaning.
        return list(kb.search(query, min(k, n) if n > 0 else k, mode=mode))

    def ingest_files(self, app: str, paths: Sequence[Path], progress: Progress) -> dict[str, Any]:
        a = self._assistant(app)
        progress("loading files", 0.05)
        from connectors import ingest

        result = ingest([str(p) for p in paths], None)
        docs = list(result.documents)
        report = _jsonable(getattr(result, "report", {}))
        if isinstance(report, dict) and isinstance(report.get("sources"), list):
            report["sources"] = [Path(p).name for p in report["sources"]]  # no server paths in replies
        progress(f"indexing {len(docs)} document(s)", 0.5)
        with self._ingest_lock:
            kb = a.knowledge_base
            if kb is None:
                raise ConfigError(f"app {app!r} has no knowledge base to add documents to")
            # Retriever.sync without prune: the uploads are added or refreshed, the rest of the KB stays
            sync = _jsonable(kb.sync(docs, prune=False))
        progress("done", 1.0)
        return {"documents": len(docs), "load": report, "sync": sync}


def _count_completion(ans: Answer, text: str, assistant) -> Answer:
    """Streamed answers count text pieces, not tokens; with the model's tokenizer at hand, count
    tokens, and say when the answer hit max_new_tokens (OpenAI clients read it as finish_reason)."""
    tok = getattr(assistant.generator, "tokenizer", None)
    if tok is None or not text or ans.strategy is None:
        return ans
    try:
        n = len(tok.encode(text, add_special_tokens=False))
    except Exception:  # noqa: BLE001 - a tokenizer without encode(): keep the pipeline's count
        return ans
    ans.usage["completion_tokens"] = n
    limit = assistant.app.generation.max_new_tokens
    if n >= limit and not any("max_new_tokens" in x for x in ans.notices):
        ans.notices.append(f"answer cut at max_new_tokens={limit}")
    return ans


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, Path):
        return str(x)
    return str(x)


# ------------------------------------------------------------------------------------------------
# The fake, for fast HTTP tests
# ------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


class FakeBackend:
    """Keyword search over in-memory documents and a scripted token stream. For HTTP-layer tests.

    >>> b = FakeBackend({"legal": ["Deposits are capped at two months of rent."]})
    >>> b.load(); b.search("legal", "deposit cap", 3)[0].chunk.text
    'Deposits are capped at two months of rent.'

    ``reply(question, hits) -> str`` scripts answers; ``token_delay`` slows the stream so tests can
    disconnect midway; ``load_delay`` keeps ``ready()`` False for a while.
    """

    def __init__(self, apps: dict[str, Sequence[str]], *, reply: Callable[[str, list[Hit]], str] | None = None,
                 token_delay: float = 0.0, load_delay: float = 0.0):
        self._docs: dict[str, list[Document]] = {
            name: [Document.create(t, {"source": f"{name}-doc{i}.txt", "page": None}) for i, t in enumerate(texts)]
            for name, texts in apps.items()}
        self.reply = reply or _default_reply
        self.token_delay = token_delay
        self.load_delay = load_delay
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.active = 0  # streams currently generating (tests watch it drop after a disconnect)
        self.finished: list[str] = []  # "done" | "cancelled" per stream, in order
        self.ingested: list[str] = []

    def app_names(self) -> list[str]:
        return list(self._docs)

    def load(self) -> None:
        if self.load_delay:
            time.sleep(self.load_delay)
        self._ready.set()

    def ready(self) -> bool:
        return self._ready.is_set()

    def batch_stats(self) -> dict[str, dict[str, Any]]:
        """Per batched app, what its batcher did (batches, rows, sizes, cancelled rows); {} unbatched."""
        return {name: gen.stats.as_dict() for name, gen in self._batchers.items()}

    def _check(self, app: str) -> list[Document]:
        if app not in self._docs:
            raise UnknownAppError(f"unknown app {app!r}; this server has: {', '.join(self._docs)}")
        if not self.ready():
            raise NotReadyError("still loading")
        return self._docs[app]

    def apps_info(self) -> list[dict[str, Any]]:
        return [{"name": n, "title": n, "description": f"fake {n}", "strategies": ["few_shot", "rag"],
                 "excluded": {"tuned": "no adapter", "tuned_rag": "no adapter"}, "router": "rules",
                 "adapter_card": None, "knowledge_base": {"documents": len(d), "chunks": len(d)}}
                for n, d in self._docs.items()]

    def search(self, app: str, query: str, k: int, mode: str = "hybrid") -> list[Hit]:
        docs = self._check(app)
        q = {w.lower() for w in _WORD.findall(query)}
        scored = []
        for d in docs:
            words = {w.lower() for w in _WORD.findall(d.text)}
            s = len(q & words) / (len(q) or 1)
            if s > 0:
                scored.append((s, d))
        scored.sort(key=lambda x: -x[0])
        return [Hit(Chunk(d.id + "-0", d.id, d.text, dict(d.metadata)), s, rank=i, scores={"bm25": s})
                for i, (s, d) in enumerate(scored[:k])]

    def ask_stream(self, req: AskRequest, cancel: threading.Event) -> Iterator[str | Answer]:
        t0 = time.perf_counter()
        hits = self.search(req.app, req.question, req.k or 3)
        if req.filters:  # equality filters only, enough to show scoping in tests
            hits = [h for h in hits if all(h.chunk.metadata.get(f) == v for f, v in req.filters.items())]
        top = hits[0].score if hits else 0.0
        if req.strategy != "auto":
            strategy, reason = req.strategy, f"forced by the request: {req.strategy}"
        elif top >= 0.3:
            strategy, reason = "rag", f"retrieval found relevant text (top score {top:.2f} >= 0.30)"
        else:
            strategy, reason = "few_shot", f"nothing relevant retrieved (top score {top:.2f} < 0.30)"
        cites = [Citation(i + 1, h.chunk.id, h.chunk.metadata.get("source", ""), None, h.chunk.text[:200], h.score)
                 for i, h in enumerate(hits)] if strategy in ("rag", "tuned_rag") else []
        text = self.reply(req.question, hits if cites else [])
        pieces = re.findall(r"\S+\s*", text)[: req.max_new_tokens or 10**9]
        with self._lock:
            self.active += 1
        outcome = "cancelled"
        try:
            for p in pieces:
                if cancel.is_set():
                    return
                if self.token_delay:
                    cancel.wait(self.token_delay)
                    if cancel.is_set():
                        return
                yield p
            outcome = "done"
        finally:
            with self._lock:
                self.active -= 1
                self.finished.append(outcome)
        decision = Decision(strategy, {"rag": round(top, 3), "few_shot": round(1 - top, 3)}, 0.8, reason,
                            {"tuned": "no adapter", "tuned_rag": "no adapter"})
        yield Answer("".join(pieces).strip(), strategy, decision, cites,
                     {"total": round(time.perf_counter() - t0, 4)},
                     {"prompt_tokens": len(req.question.split()), "completion_tokens": len(pieces)})

    def ask(self, req: AskRequest, cancel: threading.Event) -> Answer:
        return collect(self.ask_stream(req, cancel))

    def ingest_files(self, app: str, paths: Sequence[Path], progress: Progress) -> dict[str, Any]:
        docs = self._check(app)
        added, skipped = 0, []
        for i, p in enumerate(paths):
            progress(f"reading {p.name}", (i + 0.5) / max(1, len(paths)))
            try:
                text = p.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                skipped.append({"file": p.name, "reason": "not UTF-8 text"})
                continue
            with self._lock:
                docs.append(Document.create(text, {"source": p.name, "page": None}))
                self.ingested.append(p.name)
            added += 1
        progress("done", 1.0)
        return {"documents": added, "skipped": skipped}


def _default_reply(question: str, hits: list[Hit]) -> str:
    if hits:
        return f"According to the sources, {hits[0].chunk.text} [1]"
    return f"You asked: {question}"
