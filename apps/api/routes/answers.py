"""/v1/ask: one answer as JSON, or streamed as Server-Sent Events (``token`` ... ``final``)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from apps.api import schemas as S
from apps.api.errors import errs
from apps.api.routes.deps import AUTHED, Svc
from apps.api.streaming import sse, stream_answer
from core.types import Answer

router = APIRouter(tags=["answers"])


def new_request_id() -> str:
    return "req_" + secrets.token_hex(6)


def answer_payload(ans: Answer, request_id: str) -> dict[str, Any]:
    """The /v1/ask answer body (also the ``final`` event, and the source of the OpenAI ``hybrid`` field)."""
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


@router.post("/v1/ask", response_model=S.AskOut, dependencies=AUTHED,
             summary="answer a question (JSON, or Server-Sent Events with stream=true)",
             responses={**errs(404, 413, 503, 504),
                        200: {"content": {"text/event-stream": {"example": (
                            'event: token\ndata: {"text": "Two "}\n\n'
                            'event: token\ndata: {"text": "months [1]."}\n\n'
                            'event: final\ndata: {"answer": "Two months [1].", "strategy": "rag", ...}\n\n')}}}})
async def ask(body: S.AskIn, request: Request, svc: Svc):
    req = svc.ask_request(body.app, body.question, [t.model_dump() for t in body.history], body.strategy,
                          body.k, body.max_new_tokens, body.temperature, filters=body.filters)
    rid = new_request_id()
    t0 = time.perf_counter()
    if not body.stream:
        ans = await svc.answer(req, request)
        svc.record(req.app, ans, time.perf_counter() - t0)
        return JSONResponse(answer_payload(ans, rid), headers={"X-Request-ID": rid})
    return await stream_answer(svc, req, rid, t0, token=lambda text: sse("token", {"text": text}),
                               final=lambda a: sse("final", answer_payload(a, rid)),
                               error=lambda e: sse("error", e.body()))
