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
import json
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from apps.api import schemas as S
from apps.api.backend import AskRequest, Backend
from apps.api.errors import ERRORS, ApiError, error_json, errs, install_error_handlers
from apps.api.jobs import JobStore, safe_filename
from apps.api.limits import BodyLimitMiddleware, retry_after_header
from apps.api.metrics import MetricsMiddleware
from apps.api.service import Service
from apps.api.settings import ServiceSettings
from hybrid.types import Answer

STATIC = Path(__file__).parent / "static"


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


def create_app(settings: ServiceSettings, backend: Backend) -> FastAPI:
    """The FastAPI app for ``backend`` (load starts in the background when the server starts)."""
    svc = Service(settings, backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.start()
        app.state.load_task = asyncio.get_running_loop().run_in_executor(None, svc.load)
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

