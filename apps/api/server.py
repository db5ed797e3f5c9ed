"""The HTTP service: FastAPI routes over a ``Backend``, with auth, caps, back-pressure and metrics.

::

    from apps.api.server import create_app
    from apps.api.backend import RealBackend
    from apps.api.settings import ServiceSettings
    app = create_app(ServiceSettings(api_keys=["s3cret-key"]), RealBackend(["apps/legal"]))
    # uvicorn.run(app) -- or simply: hybrid serve --app apps/legal

Errors become HTTP only in ``apps.api.errors``: every error body is
``{"error": {"message", "type", "code"}}`` (what OpenAI clients expect).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from apps.api import schemas as S
from apps.api.backend import AskRequest, Backend
from apps.api.errors import ERRORS, ApiError, error_json, errs, install_error_handlers, to_api_error
from apps.api.jobs import JobStore, safe_filename
from apps.api.limits import BodyLimitMiddleware, Gate, QueueFull, RateLimiter, retry_after_header
from apps.api.metrics import Metrics
from apps.api.settings import ServiceSettings
from hybrid.types import Answer

log = logging.getLogger("hybrid.api")
STATIC = Path(__file__).parent / "static"


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
            msg = f"failed to load: {self.load_error}" if self.load_error else "still loading models and knowledge bases"
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
    async def enter_gate(self) -> None:
        try:
            self.gate.reserve()
        except QueueFull as e:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, f"{e}; retry shortly", "rate_limit",
                           {"Retry-After": retry_after_header(self.settings.retry_after)}) from None
        self.metrics.queue_depth.set(self.gate.waiting)
        await self.gate.acquire()
        self.metrics.queue_depth.set(self.gate.waiting)

    async def take_slot(self, *, count_deadline: bool) -> None:
        """Count the request in flight and wait for a generator slot within the request deadline
        (504 when none frees up; ``count_deadline`` also records that as a deadline cancellation).
        The caller releases the gate and both in-flight counts when done."""
        self.in_flight += 1
        try:
            await asyncio.wait_for(self.enter_gate(), timeout=self.settings.request_timeout)
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
                    cancel.set()
                    self.metrics.cancelled.labels("deadline").inc()
                    raise ApiError(504, f"no answer within the {self.settings.request_timeout:g}s deadline",
                                   "timeout")
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
            self.gate.release()
            self.metrics.in_flight.dec()
            self.in_flight -= 1

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
            self.gate.release()
            self.metrics.in_flight.dec()
            self.in_flight -= 1

        async def events() -> AsyncIterator[tuple[str, Any]]:
            finished = False
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        cancel.set()
                        self.metrics.cancelled.labels("deadline").inc()
                        yield "error", ApiError(504, f"no complete answer within the "
                                                     f"{self.settings.request_timeout:g}s deadline", "timeout")
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


def new_request_id() -> str:
    return "req_" + secrets.token_hex(6)


def answer_payload(ans: Answer, request_id: str) -> dict[str, Any]:
    d = ans.decision
    return {
        "answer": ans.text, "strategy": ans.strategy,
        "decision": {"strategy": d.strategy if d else ans.strategy, "scores": dict(d.scores) if d else {},
                     "confidence": float(d.confidence) if d else 1.0, "reason": d.reason if d else "",
                     "excluded": dict(d.excluded) if d else {}},
        "citations": [{"n": c.n, "source": c.source, "page": c.page, "chunk_id": c.chunk_id,
                       "snippet": c.snippet, "score": float(c.score)} for c in ans.citations],
        "timings": {k: float(v) for k, v in ans.timings.items()},
        "usage": {k: int(v) for k, v in ans.usage.items()},
        "notices": list(ans.notices), "request_id": request_id,
        "answer_confidence": ans.confidence,
    }


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class ManagedStream(StreamingResponse):
    """A streaming response that always runs ``on_close``, even when the client vanished before the
    first byte (then the body iterator never starts, so its own ``finally`` would never run)."""

    def __init__(self, content, on_close, **kw):
        super().__init__(content, **kw)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.on_close("disconnect")


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class MetricsMiddleware:
    """Counts every response by route template and status, and times it (pure ASGI, so streaming
    and disconnects pass through untouched)."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("static" if scope.get("path", "").startswith("/static") else "other")
            m = self.service.metrics
            m.requests.labels(path, scope.get("method", ""), str(status[0])).inc()
            m.request_seconds.labels(path).observe(time.perf_counter() - t0)


def create_app(settings: ServiceSettings, backend: Backend) -> FastAPI:
    """The FastAPI app for ``backend`` (load starts in the background when the server starts)."""
    svc = Service(settings, backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                backend.load()
            except Exception as e:  # noqa: BLE001 - reported by /readyz, the server stays up for probes
                svc.load_error = f"{type(e).__name__}: {e}"
                log.error("loading failed: %s", svc.load_error)

        svc.start()
        app.state.load_task = loop.run_in_executor(None, load)
        yield
        svc.stop()

    app = FastAPI(
        title="hybrid Q&A API",
        version="0.1.0",
        description=(
            "Answers questions with a domain app (router -> few-shot / RAG / tuned / tuned+RAG), "
            "OpenAI-compatible chat completions, raw knowledge-base search and document upload. "
            "Every route except /healthz and /readyz needs `Authorization: Bearer <key>` when keys are "
            "configured. The chat page at / is a static shell; it asks for the key."),
        lifespan=lifespan,
    )
    app.state.service = svc
    app.add_middleware(BodyLimitMiddleware, json_limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, service=svc)
    install_error_handlers(app)

    # -- dependencies ---------------------------------------------------------------------------
    async def caller(request: Request) -> str:
        who = svc.check_key(request.headers.get("authorization"))
        if who == "anonymous" and request.client is not None:
            who = f"ip:{request.client.host}"
        wait = svc.rate.check(who)
        if wait:
            svc.metrics.rejected.labels("rate_limit").inc()
            raise ApiError(429, f"rate limit of {settings.rate_limit:g} requests/minute reached; "
                                f"retry in {wait:.1f}s", "rate_limit", {"Retry-After": retry_after_header(wait)})
        return who

    authed = [Depends(caller)]

    # -- health ---------------------------------------------------------------------------------
    @app.get("/healthz", response_model=S.Health, tags=["health"], summary="liveness (no auth)",
             responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=S.Health, tags=["health"],
             summary="readiness (no auth): 503 while loading and while draining",
             responses={503: ERRORS[503], 200: {"content": {"application/json": {"example": {"status": "ready"}}}}})
    async def readyz():
        if svc.draining:
            return error_json(503, "draining: the server is shutting down", "unavailable")
        if svc.load_error:
            return error_json(503, f"failed to load: {svc.load_error}", "unavailable")
        if not backend.ready():
            return error_json(503, "loading models and knowledge bases", "unavailable",
                              {"Retry-After": retry_after_header(settings.retry_after)})
        return {"status": "ready"}

    @app.get("/metrics", tags=["health"], dependencies=authed, summary="Prometheus metrics",
             response_class=Response,
             responses={**errs(), 200: {"content": {"text/plain": {"example": "hybrid_requests_total{...} 3.0"}}}})
    async def metrics():
        svc.metrics.queue_depth.set(svc.gate.waiting)
        return Response(svc.metrics.render(), media_type=svc.metrics.content_type)

    # -- Q&A --------------------------------------------------------------------------------------
    @app.post("/v1/ask", response_model=S.AskOut, dependencies=authed, tags=["answers"],
              summary="answer a question (JSON, or Server-Sent Events with stream=true)",
              responses={**errs(404, 413, 503, 504),
                         200: {"content": {"text/event-stream": {"example": (
                             'event: token\ndata: {"text": "Two "}\n\n'
                             'event: token\ndata: {"text": "months [1]."}\n\n'
                             'event: final\ndata: {"answer": "Two months [1].", "strategy": "rag", ...}\n\n')}}}})
    async def ask(body: S.AskIn, request: Request):
        req = svc.ask_request(body.app, body.question, [t.model_dump() for t in body.history], body.strategy,
                              body.k, body.max_new_tokens, body.temperature, filters=body.filters)
        rid = new_request_id()
        t0 = time.perf_counter()
        if not body.stream:
            ans = await svc.answer(req, request)
            svc.record(req.app, ans, time.perf_counter() - t0)
            return JSONResponse(answer_payload(ans, rid), headers={"X-Request-ID": rid})
        events, release = await svc.stream(req)

        async def body_iter() -> AsyncIterator[str]:
            first = True
            async for kind, item in events:
                if kind == "token":
                    if first:
                        svc.metrics.ttft_seconds.labels(req.app).observe(time.perf_counter() - t0)
                        first = False
                    yield sse("token", {"text": item})
                elif kind == "answer":
                    svc.record(req.app, item, time.perf_counter() - t0)
                    yield sse("final", answer_payload(item, rid))
                else:
                    yield sse("error", {"error": {"message": item.message, "type": item.kind, "code": item.status}})

        return ManagedStream(body_iter(), release, media_type="text/event-stream",
                             headers={**SSE_HEADERS, "X-Request-ID": rid})

    @app.post("/v1/chat/completions", response_model=S.ChatOut, dependencies=authed, tags=["answers"],
              summary="OpenAI-compatible chat completions; `model` names the app; route info in `hybrid`",
              responses={**errs(404, 413, 503, 504), 200: {"content": {"text/event-stream": {"example": (
                  'data: {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Two "}}], ...}\n\n'
                  'data: {"object": "chat.completion.chunk", "choices": [{"delta": {}, "finish_reason": "stop"}], '
                  '"hybrid": {"strategy": "rag", ...}}\n\ndata: [DONE]\n\n')}}}})
    async def chat_completions(body: S.ChatIn, request: Request):
        question, history = split_messages(body.messages)
        opts = body.hybrid or S.HybridOptions()
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        max_new = body.max_completion_tokens or body.max_tokens
        req = svc.ask_request(body.model, question, history, opts.strategy, opts.k, max_new,
                              body.temperature, body.top_p, stop)
        rid = new_request_id()
        cid, created, t0 = "chatcmpl-" + rid, int(time.time()), time.perf_counter()
        if not body.stream:
            ans = await svc.answer(req, request)
            svc.record(req.app, ans, time.perf_counter() - t0)
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": req.app,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.text},
                             "finish_reason": finish_reason(ans, req)}],
                "usage": openai_usage(ans), "hybrid": extension(ans, rid)}, headers={"X-Request-ID": rid})
        events, release = await svc.stream(req)

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.app,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

        async def body_iter() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            first = True
            async for kind, item in events:
                if kind == "token":
                    if first:
                        svc.metrics.ttft_seconds.labels(req.app).observe(time.perf_counter() - t0)
                        first = False
                    yield chunk({"content": item})
                elif kind == "answer":
                    svc.record(req.app, item, time.perf_counter() - t0)
                    yield chunk({}, finish_reason(item, req), usage=openai_usage(item), hybrid=extension(item, rid))
                else:
                    yield f"data: {json.dumps({'error': {'message': item.message, 'type': item.kind, 'code': item.status}})}\n\n"
            yield "data: [DONE]\n\n"

        return ManagedStream(body_iter(), release, media_type="text/event-stream",
                             headers={**SSE_HEADERS, "X-Request-ID": rid})

    @app.get("/v1/models", response_model=S.ModelsOut, dependencies=authed, tags=["answers"],
             summary="the apps, as OpenAI models", responses=errs())
    async def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "hybrid"}
                                           for n in backend.app_names()]}

    # -- knowledge base ---------------------------------------------------------------------------
    @app.get("/v1/search", response_model=S.SearchOut, dependencies=authed, tags=["knowledge base"],
             summary="raw knowledge-base search in one app",
             responses=errs(404, 503, 504))
    async def search(app_name: str = Query(..., alias="app", min_length=1, max_length=100),
                     q: str = Query(..., min_length=1, max_length=S.HARD_MAX_QUESTION_CHARS,
                                    examples=["deposit cap"]),
                     k: int = Query(5, ge=1, le=S.HARD_MAX_K),
                     mode: str = Query("hybrid", pattern="^(dense|bm25|hybrid)$")):
        if not q.strip():
            raise ApiError(422, "q is empty: search for something")
        if len(q) > settings.max_question_chars:
            raise ApiError(422, f"q is {len(q)} characters; the limit is {settings.max_question_chars}")
        if k > settings.max_k:
            raise ApiError(422, f"k must be <= {settings.max_k}, got {k}")
        svc.admit(app_name)
        loop = asyncio.get_running_loop()
        svc.in_flight += 1
        try:
            hits = await asyncio.wait_for(loop.run_in_executor(None, backend.search, app_name, q, k, mode),
                                          timeout=settings.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"search took longer than {settings.request_timeout:g}s", "timeout") from None
        finally:
            svc.in_flight -= 1
        return {"app": app_name, "query": q, "hits": [
            {"rank": i, "score": float(h.score), "scores": {k2: float(v) for k2, v in h.scores.items()},
             "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id, "source": str(h.chunk.metadata.get("source", "")),
             "page": _page(h.chunk.metadata.get("page")), "text": h.chunk.text} for i, h in enumerate(hits)]}

    @app.post("/v1/documents", response_model=S.JobOut, status_code=202, dependencies=authed,
              tags=["knowledge base"],
              summary="upload files; they are ingested into the app's knowledge base in the background",
              responses=errs(404, 413, 503))
    async def upload(app_name: str = Form(..., alias="app", min_length=1, max_length=100),
                     files: list[UploadFile] = File(..., description="documents (txt, md, html, pdf, docx, csv...)")):
        svc.admit(app_name)
        if not files:
            raise ApiError(422, "no files in the upload")
        if len(files) > settings.max_upload_files:
            raise ApiError(422, f"{len(files)} files in one upload; the limit is {settings.max_upload_files}")
        job_id = JobStore.new_id()
        # Per app, per job: a directory we name; the client's file name only contributes safe characters.
        root = settings.uploads_for(app_name).resolve()
        dest = root / job_id
        dest.mkdir(parents=True, exist_ok=True)
        saved: list[Path] = []
        used: set[str] = set()
        for i, f in enumerate(files):
            name = safe_filename(f.filename, i)
            while name in used:
                name = f"{i}-{name}"
            used.add(name)
            path = (dest / name).resolve()
            if path.parent != dest:  # belt and braces: never outside this job's directory
                raise ApiError(422, f"unusable file name {f.filename!r}")
            data = await f.read()
            await asyncio.get_running_loop().run_in_executor(None, _write_atomic, path, data)
            saved.append(path)
        job = svc.jobs.submit(app_name, [p.name for p in saved],
                              lambda progress: backend.ingest_files(app_name, saved, progress), job_id=job_id)
        return JSONResponse(job.to_dict(), status_code=202)

    @app.get("/v1/jobs/{job_id}", response_model=S.JobOut, dependencies=authed, tags=["knowledge base"],
             summary="progress of an upload job", responses=errs(404))
    async def job(job_id: str):
        j = svc.jobs.get(job_id)
        if j is None:
            raise ApiError(404, f"unknown job {job_id!r}", "not_found")
        return j.to_dict()

    @app.get("/v1/apps", response_model=S.AppsOut, dependencies=authed, tags=["apps"],
             summary="apps with their strategies, adapter cards and knowledge-base stats", responses=errs())
    async def apps_list():
        loop = asyncio.get_running_loop()
        return {"apps": await loop.run_in_executor(None, backend.apps_info)}

    # -- the chat page (a static shell: no data in it, so no key needed to fetch it) --------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _write_atomic(path: Path, data: bytes) -> None:
    from hybrid.io import atomic_write_bytes

    atomic_write_bytes(path, data)


def _page(v: Any) -> int | None:
    try:
        return int(v) if v is not None and v != "" else None
    except (TypeError, ValueError):
        return None


def split_messages(messages: list[S.ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """OpenAI messages -> (question, history). The app's own system prompt governs, so client
    system/developer messages are not passed on; the last message must be the user's question."""
    turns = []
    for m in messages:
        text = content_text(m.content)
        if m.role in ("user", "assistant"):
            turns.append({"role": m.role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(422, "the last message must have role 'user' (the question)")
    return turns[-1]["content"], turns[:-1]


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if p.get("type") == "text" and isinstance(p.get("text"), str):
            parts.append(p["text"])
        else:
            raise ApiError(422, f"only text content parts are supported, got type {p.get('type')!r}")
    return "".join(parts)


def finish_reason(ans: Answer, req: AskRequest) -> str:
    cut = any("max_new_tokens" in n for n in ans.notices)
    if req.max_new_tokens is not None and ans.usage.get("completion_tokens", 0) >= req.max_new_tokens:
        cut = True
    return "length" if cut else "stop"


def openai_usage(ans: Answer) -> dict[str, int]:
    p, c = int(ans.usage.get("prompt_tokens", 0)), int(ans.usage.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def extension(ans: Answer, rid: str) -> dict[str, Any]:
    d = answer_payload(ans, rid)
    return {k: d[k] for k in ("strategy", "decision", "citations", "timings", "notices", "request_id")}

