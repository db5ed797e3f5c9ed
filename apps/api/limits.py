"""Back-pressure and fairness: the generator gate (bounded queue), per-key rate limits, body caps.

The model is compute-bound, so more parallel generations only make each one slower. The gate lets
``concurrency`` requests generate and ``queue_size`` wait; the next one is refused at once with 429
and ``Retry-After`` instead of piling up until every client times out.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Callable


class QueueFull(Exception):
    """The generator gate has no room (HTTP 429)."""


class Gate:
    """An asyncio semaphore with a bounded waiting room.

    >>> gate = Gate(concurrency=1, queue_size=2)
    >>> async def handler():
    ...     gate.reserve()               # raises QueueFull when 1 is running and 2 are waiting
    ...     await gate.acquire()         # or: await gate.acquire_within(seconds)
    ...     try:
    ...         ...
    ...     finally:
    ...         gate.release()
    """

    def __init__(self, concurrency: int, queue_size: int):
        self.concurrency = concurrency
        self.queue_size = queue_size
        self._sem = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.running = 0
        self.incoming = 0  # answer requests let in by ShedMiddleware that have not reserved yet

    def full(self) -> bool:
        """Every slot taken and the waiting room full: ``reserve()`` would raise ``QueueFull``."""
        return self.waiting >= self.queue_size and self._sem.locked()

    def crowded(self) -> bool:
        """``full()``, or no place left once the requests on their way in (``incoming``) take theirs."""
        return self.full() or (self.incoming > 0 and
                               self.running + self.waiting + self.incoming >= self.concurrency + self.queue_size)

    def reserve(self) -> None:
        """Take a place in the waiting room, or raise ``QueueFull`` at once."""
        if self.full():
            raise QueueFull(f"the generator queue is full ({self.running} running, {self.waiting} waiting)")
        self.waiting += 1

    async def acquire(self) -> None:
        """After ``reserve()``: wait for a generator slot (the reservation is given back either way)."""
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    async def acquire_within(self, timeout: float) -> None:
        """After ``reserve()``: a slot within ``timeout`` seconds, else ``asyncio.TimeoutError``; the
        reservation is given back either way. A free slot is taken without yielding to the event loop."""
        try:
            if self._sem.locked():
                await asyncio.wait_for(self._sem.acquire(), timeout)
            else:
                await self._sem.acquire()  # returns at once: nothing to wait for
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._sem.release()


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, then ``per_minute`` on average.

    >>> rl = RateLimiter(per_minute=60, burst=2)
    >>> rl.check("k"), rl.check("k"), rl.check("k") > 0   # third call waits about a second
    (0.0, 0.0, True)

    Memory stays bounded: a bucket idle long enough to refill is the same as no bucket, so those are
    dropped on a sweep (at most once per refill time, or when there are ``max_buckets``). Past
    ``max_buckets`` even after a sweep, the longest-idle buckets go first: one of those keys gets a
    fresh burst, which is the price of a bound that holds however many keys (or client addresses,
    without auth) there are.
    """

    def __init__(self, per_minute: float, burst: int, *, max_buckets: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last seen); oldest first
        self._lock = threading.Lock()
        self._refill = self.burst / self.rate if self.rate > 0 else math.inf
        self._next_sweep = clock() + self._refill

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str) -> float:
        """0.0 when allowed (and counted), else the seconds until the next request would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep or (key not in self._buckets and len(self._buckets) >= self.max_buckets):
                self._sweep(now, key)
            tokens, last = self._buckets.pop(key, (self.burst, now))  # re-inserted last: dict order = idle order
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _sweep(self, now: float, key: str) -> None:
        """Drop refilled buckets, then the longest-idle ones while over the cap (lock held)."""
        self._next_sweep = now + self._refill
        full = [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        excess = len(self._buckets) - self.max_buckets + (key not in self._buckets)  # room for ``key``
        for k in list(self._buckets)[:max(0, excess)]:
            del self._buckets[k]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class BodyTooLarge(Exception):
    """Raised by code that reads a body past its cap (HTTP 413)."""


class BodyLimitMiddleware:
    """Pure ASGI middleware: refuse bodies over the cap with 413, by Content-Length up front and by
    counting bytes as they arrive (a chunked upload cannot sneak past)."""

    def __init__(self, app, *, json_limit: int, upload_limit: int, upload_paths: tuple[str, ...] = ("/v1/documents",)):
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.upload_paths = upload_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope.get("path") in self.upload_paths else self.json_limit
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return await _send_error(send, 400, "invalid Content-Length header")
                if size > limit:
                    return await _send_error(send, 413, f"request body is {size} bytes; the limit is {limit}")
                # With a Content-Length the server enforces the framing: no body can be longer.
                return await self.app(scope, receive, send)
        # No Content-Length (chunked): read the body here, counting, before any handler sees it.
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client went away mid-body
            body = msg.get("body", b"")
            seen += len(body)
            if seen > limit:
                return await _send_error(send, 413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ShedMiddleware:
    """Pure ASGI middleware: while the generator queue is full, refuse answer requests with 429 from
    their headers alone, before the body is read or any route, dependency or validation runs.

    Under overload the event loop answers every refusal itself, while the admitted answers' threads
    hold the GIL; the fewer steps a refusal takes in the loop, the sooner it goes out. The service
    decides (``Service.shed``): only a caller with a valid key, within its rate limit, is refused
    here; anyone else takes the full path and gets its own status (401, 429 for the rate limit, 503).
    A refused request's body is never looked at, so a malformed one gets the 429 rather than a 422.
    The route is recorded in ``scope["hybrid.route"]`` for the metrics middleware.

    In a burst, many requests are ready in one turn of the event loop. A request let in counts as
    ``gate.incoming`` and yields once before its full path (routing, validation, starting its
    answer), so the refusals that arrived with it go out first instead of queueing behind the
    admitted requests' work.
    """

    def __init__(self, app, *, service, paths: tuple[str, ...] = ("/v1/ask", "/v1/chat/completions")):
        self.app = app
        self.service = service
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        gate = self.service.gate
        if gate.crowded():
            auth = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
            client = scope.get("client")
            refusal = self.service.shed(auth, client[0] if client else None)
            if refusal is not None:
                scope["hybrid.route"] = scope["path"]
                return await _send_error(send, refusal.status, refusal.message, refusal.kind, refusal.headers)
            return await self.app(scope, receive, send)
        gate.incoming += 1
        try:
            await asyncio.sleep(0)  # the requests ready in this turn of the loop are refused first
        finally:
            gate.incoming -= 1
        return await self.app(scope, receive, send)


async def _send_error(send, status: int, message: str, kind: str | None = None,
                      headers: dict[str, str] | None = None) -> None:
    import json

    kind = kind or {400: "invalid_request", 413: "request_too_large"}.get(status, "error")
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
