"""Streaming answers: the one token loop behind every streaming route, SSE framing, and a streaming
response that always frees its generator slot.

``stream_answer`` is shared by /v1/ask (``event: token`` ... ``event: final``) and
/v1/chat/completions (``chat.completion.chunk`` ... ``[DONE]``); only the framing differs.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from fastapi.responses import StreamingResponse

if TYPE_CHECKING:
    from apps.api.backend import AskRequest
    from apps.api.errors import ApiError
    from apps.api.service import Service
    from core.types import Answer

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


async def stream_answer(svc: Service, req: AskRequest, request_id: str, t0: float, *,
                        token: Callable[[str], str], final: Callable[[Answer], str],
                        error: Callable[[ApiError], str], head: str = "", tail: str = "") -> ManagedStream:
    """Stream the answer to ``req`` as ``text/event-stream``, framed by the caller.

    The generator gate is entered before the response exists, so a full queue is a real 429 status
    rather than an event. Then each token becomes ``token(text)`` (the first one also records the
    time to first token since ``t0``), the finished answer ``final(answer)`` (after its route, latency
    and usage are recorded) and a failure ``error(api_error)``, the last event. ``head`` is sent
    before the first token and ``tail`` after the last event, when given.
    """
    events, release = await svc.stream(req)

    async def body() -> AsyncIterator[str]:
        if head:
            yield head
        first = True
        async for kind, item in events:
            if kind == "token":
                if first:
                    svc.metrics.ttft_seconds.labels(req.app).observe(time.perf_counter() - t0)
                    first = False
                yield token(item)
            elif kind == "answer":
                svc.record(req.app, item, time.perf_counter() - t0)
                yield final(item)
            else:
                yield error(item)
        if tail:
            yield tail

    return ManagedStream(body(), release, media_type="text/event-stream",
                         headers={**SSE_HEADERS, "X-Request-ID": request_id})
