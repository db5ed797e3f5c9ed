"""Per-server state and the work behind every route: auth, admission, the generator gate, running
answers (whole or streamed) in worker threads under the request deadline, and recording metrics.

Routes reach the one ``Service`` of their app as ``request.app.state.service``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

from fastapi import Request

from apps.api.backend import AskRequest, Backend
from apps.api.errors import ApiError, to_api_error
from apps.api.jobs import JobStore
from apps.api.limits import Gate, QueueFull, RateLimiter, retry_after_header
from apps.api.metrics import Metrics
from apps.api.settings import ServiceSettings
from core.types import Answer

log = logging.getLogger("hybrid.api")


class Service:
    """Per-server state: settings, backend, gate, rate limiter, jobs, metrics, drain flag."""

    def __init__(self, settings: ServiceSettings, backend: Backend):
        self.settings = settings
        self.backend = backend
        self.metrics = Metrics()
        self.gate = Gate(settings.concurrency, settings.queue_size)
        self.rate = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.jobs: JobStore | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.start()
        self.draining = False
        self.load_error: str | None = None
        self.in_flight = 0  # requests doing work (answers, searches, uploads); drain waits for 0
        self._keys = [hashlib.sha256(k.encode()).digest() for k in settings.api_keys]

    def start(self) -> None:
        """(Re)create the worker pools; the lifespan may run more than once (test clients)."""
        self.draining = False
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.settings.concurrency + 2,
                                           thread_name_prefix="hybrid-answer")
        if self.jobs is None:
            self.jobs = JobStore(on_finish=lambda j: self.metrics.jobs.labels(j.status).inc())

    def stop(self) -> None:
        self.draining = True
        if self.jobs is not None:
            self.jobs.shutdown()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.jobs = self.pool = None

    def pending(self) -> tuple[int, int]:
        """(requests in flight, upload jobs queued or running): what a draining shutdown waits for."""
        return self.in_flight, (self.jobs.active() if self.jobs is not None else 0)

    def load(self) -> None:
        """Load the backend (the lifespan runs this in a worker thread). A failure is kept for
        /readyz and admission to report; the server stays up for probes."""
        try:
            self.backend.load()
        except Exception as e:  # noqa: BLE001 - kept, not raised
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("loading failed: %s", self.load_error)

    # -- auth ----------------------------------------------------------------------------------
    def check_key(self, header: str | None) -> str:
        """The caller's identity for rate limiting; raises 401 unless the bearer key is valid."""
        if not self._keys:
            return "anonymous"
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error",
                           {"WWW-Authenticate": "Bearer"})
        # Hash first so every comparison is over 32 bytes, and compare with every key so the time
        # taken says nothing about which key (or how much of one) matched.
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        ok = False
        for k in self._keys:
            ok |= hmac.compare_digest(digest, k)
        if not ok:
            raise ApiError(401, "invalid API key", "authentication_error", {"WWW-Authenticate": "Bearer"})
        return "key:" + digest.hex()[:16]

    # -- request admission ---------------------------------------------------------------------
    def admit(self, app: str | None = None) -> None:
        if self.draining:
            raise ApiError(503, "the server is shutting down; retry on another instance", "unavailable",
                           {"Retry-After": retry_after_header(self.settings.retry_after)})
        if not self.backend.ready():
            msg = (f"failed to load: {self.load_error}" if self.load_error
                   else "still loading models and knowledge bases")
            raise ApiError(503, msg, "unavailable", {"Retry-After": retry_after_header(self.settings.retry_after)})
        if app is not None and app not in self.backend.app_names():
            raise ApiError(404, f"unknown app {app!r}; this server has: {', '.join(self.backend.app_names())}",
                           "not_found")

    def ask_request(self, app: str, question: str, history: list[dict[str, str]], strategy: str,
                    k: int | None, max_new_tokens: int | None, temperature: float | None,
                    top_p: float | None = None, stop: list[str] | None = None,
                    filters: dict[str, Any] | None = None) -> AskRequest:
        s = self.settings
        if not question.strip():
            raise ApiError(422, "question is empty: ask something")
        if len(question) > s.max_question_chars:
            raise ApiError(422, f"question is {len(question)} characters; the limit is {s.max_question_chars}")
        if len(history) > s.max_history:
            raise ApiError(422, f"history has {len(history)} messages; the limit is {s.max_history}")
        for i, turn in enumerate(history):
            if len(turn["content"]) > s.max_question_chars:
                raise ApiError(422, f"history[{i}] is {len(turn['content'])} characters; "
                                    f"the limit is {s.max_question_chars}")
        if k is not None and k > s.max_k:
            raise ApiError(422, f"k must be <= {s.max_k}, got {k}")
        if max_new_tokens is not None and max_new_tokens > s.max_new_tokens:
            raise ApiError(422, f"max_new_tokens must be <= {s.max_new_tokens}, got {max_new_tokens}")
        self.admit(app)
        return AskRequest(app=app, question=question, history=history, strategy=strategy, k=k,
                          max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop or [],
                          filters=filters or None)

    # -- running answers -----------------------------------------------------------------------
    def reserve(self) -> None:
        """A place in the generator queue, or the queue-full 429 at once (counted)."""
        try:
            self.gate.reserve()
        except QueueFull as e:
            raise self.queue_full(str(e)) from None
        self.metrics.queue_depth.set(self.gate.waiting)

    def queue_full(self, why: str | None = None) -> ApiError:
        """Count a queue-full refusal; the 429 (with Retry-After) to answer."""
        self.metrics.rejected.labels("queue_full").inc()
        why = why or f"the generator queue is full ({self.gate.running} running, {self.gate.waiting} waiting)"
        return ApiError(429, f"{why}; retry shortly", "rate_limit",
                        {"Retry-After": retry_after_header(self.settings.retry_after)})

    def shed(self, authorization: str | None, client_host: str | None) -> ApiError | None:
        """The queue-full 429 for an answer request, decided from its headers alone (``ShedMiddleware``):
        only while the queue is full (counting the requests being let in: ``Gate.crowded``), the server
        ready and not draining, and the caller's key valid and within its rate limit. Otherwise None,
        and the request takes the full path, which answers with its own status (401, rate-limit 429,
        503, or the queue-full 429 after all)."""
        if not self.gate.crowded() or self.draining or not self.backend.ready():
            return None
        try:
            who = self.check_key(authorization)
        except ApiError:
            return None
        if who == "anonymous" and client_host is not None:
            who = f"ip:{client_host}"
        if self.rate.check(who):  # over its rate limit: the full path says so
            return None
        return self.queue_full()

    async def take_slot(self, *, count_deadline: bool) -> None:
        """Take a place in the queue (429 at once when full, before anything is awaited), count the
        request in flight and wait for a generator slot within the request deadline (504 when none
        frees up; ``count_deadline`` also records that as a deadline cancellation). The caller
        releases the gate and both in-flight counts when done."""
        self.reserve()
        self.in_flight += 1
        try:
            await self.gate.acquire_within(self.settings.request_timeout)
            self.metrics.queue_depth.set(self.gate.waiting)
        except asyncio.TimeoutError:
            self.in_flight -= 1
            if count_deadline:
                self.metrics.cancelled.labels("deadline").inc()
            raise ApiError(504, f"no generator slot within the {self.settings.request_timeout:g}s deadline",
                           "timeout") from None
        except BaseException:
            self.in_flight -= 1
            raise
        self.metrics.in_flight.inc()

    def free_slot(self) -> None:
        """Undo ``take_slot``: release the generator slot and both in-flight counts."""
        self.gate.release()
        self.metrics.in_flight.dec()
        self.in_flight -= 1

    def deadline_passed(self, cancel: threading.Event, what: str) -> ApiError:
        """Stop the worker and count a deadline cancellation; the 504 to answer or to stream."""
        cancel.set()
        self.metrics.cancelled.labels("deadline").inc()
        return ApiError(504, f"no {what} within the {self.settings.request_timeout:g}s deadline", "timeout")

    async def answer(self, req: AskRequest, request: Request) -> Answer:
        """Non-streaming: the answer runs in a worker thread; deadline and disconnect cancel it."""
        deadline = time.monotonic() + self.settings.request_timeout
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        await self.take_slot(count_deadline=True)
        fut = loop.run_in_executor(self.pool, self.backend.ask, req, cancel)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.deadline_passed(cancel, "answer")
                done, _ = await asyncio.wait({fut}, timeout=min(left, 0.25))
                if done:
                    return fut.result()
                if await request.is_disconnected():
                    cancel.set()
                    self.metrics.cancelled.labels("disconnect").inc()
                    raise ApiError(499, "client went away", "cancelled")
        finally:
            cancel.set()
            if not fut.done():  # give the worker a moment to notice, so the slot is really free
                await asyncio.wait({fut}, timeout=2.0)
            self.free_slot()

    async def stream(self, req: AskRequest) -> tuple[AsyncIterator[tuple[str, Any]], Any]:
        """Streaming: enter the gate now (so 429 is a real status), then yield ("token", str) ...
        ("answer", Answer) or ("error", ApiError). Cancelled (client gone) -> generation stops."""
        await self.take_slot(count_deadline=False)
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        queue: asyncio.Queue = asyncio.Queue()
        deadline = time.monotonic() + self.settings.request_timeout

        def put(kind: str, item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def produce() -> None:
            try:
                for item in self.backend.ask_stream(req, cancel):
                    put("answer" if isinstance(item, Answer) else "token", item)
                    if cancel.is_set():
                        break
            except BaseException as e:  # noqa: BLE001 - handed to the event loop as an error event
                put("error", e)
            finally:
                put("end", None)

        fut = loop.run_in_executor(self.pool, produce)

        released = False

        async def release(reason: str | None = None) -> None:
            """Free the slot once the worker has really stopped (within a token of cancel). Idempotent:
            called by the event loop below and, if the body never started, by the response itself."""
            nonlocal released
            if released:
                return
            released = True
            if reason and not cancel.is_set():
                self.metrics.cancelled.labels(reason).inc()
            cancel.set()
            try:
                await asyncio.wait({fut}, timeout=2.0)
            except BaseException:  # noqa: BLE001 - cancelled while waiting: still release below
                pass
            self.free_slot()

        async def events() -> AsyncIterator[tuple[str, Any]]:
            finished = False
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        yield "error", self.deadline_passed(cancel, "complete answer")
                        return
                    try:
                        kind, item = await asyncio.wait_for(queue.get(), timeout=left)
                    except asyncio.TimeoutError:
                        continue
                    if kind == "end":
                        finished = True
                        return
                    if kind == "error":
                        finished = True
                        yield "error", to_api_error(item)
                        return
                    yield kind, item
            finally:
                await release(None if finished else "disconnect")

        return events(), release

    def record(self, app: str, ans: Answer, seconds: float) -> None:
        m = self.metrics
        m.routes.labels(app, ans.strategy).inc()
        m.answer_seconds.labels(app, ans.strategy).observe(seconds)
        m.tokens.labels(app, "prompt").inc(int(ans.usage.get("prompt_tokens", 0)))
        m.tokens.labels(app, "completion").inc(int(ans.usage.get("completion_tokens", 0)))
