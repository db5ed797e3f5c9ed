"""Server-Sent Events: the framing, and a streaming response that always frees its generator slot."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import StreamingResponse

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
