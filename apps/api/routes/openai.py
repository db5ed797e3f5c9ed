"""The OpenAI-compatible surface: /v1/chat/completions (``model`` names the app, route info in an
extra ``hybrid`` field; JSON or ``chat.completion.chunk`` events) and /v1/models (the apps)."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from apps.api import schemas as S
from apps.api.backend import AskRequest
from apps.api.errors import ApiError, errs
from apps.api.routes.answers import answer_payload, new_request_id
from apps.api.routes.deps import AUTHED, Svc
from apps.api.streaming import stream_answer
from core.types import Answer

router = APIRouter(tags=["answers"])


@router.post("/v1/chat/completions", response_model=S.ChatOut, dependencies=AUTHED,
             summary="OpenAI-compatible chat completions; `model` names the app; route info in `hybrid`",
             responses={**errs(404, 413, 503, 504), 200: {"content": {"text/event-stream": {"example": (
                 'data: {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Two "}}], ...}\n\n'
                 'data: {"object": "chat.completion.chunk", "choices": [{"delta": {}, "finish_reason": "stop"}], '
                 '"hybrid": {"strategy": "rag", ...}}\n\ndata: [DONE]\n\n')}}}})
async def chat_completions(body: S.ChatIn, request: Request, svc: Svc):
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

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.app,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

    return await stream_answer(
        svc, req, rid, t0, head=chunk({"role": "assistant", "content": ""}), tail="data: [DONE]\n\n",
        token=lambda text: chunk({"content": text}),
        final=lambda a: chunk({}, finish_reason(a, req), usage=openai_usage(a), hybrid=extension(a, rid)),
        error=lambda e: f"data: {json.dumps(e.body())}\n\n")


@router.get("/v1/models", response_model=S.ModelsOut, dependencies=AUTHED,
            summary="the apps, as OpenAI models", responses=errs())
async def models(svc: Svc):
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "hybrid"}
                                       for n in svc.backend.app_names()]}


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
