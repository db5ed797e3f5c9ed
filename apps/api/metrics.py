"""Prometheus metrics, one registry per server instance (tests start many servers in one process),
and the middleware that counts and times every HTTP response."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from apps.api.service import Service

# Seconds: CPU answers take from ~0.1 s (fake, direct answers) to a minute (long generations).
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class Metrics:
    """The service's counters. ``render()`` is the ``/metrics`` body.

    >>> m = Metrics(); m.requests.labels("/v1/ask", "POST", "200").inc()
    >>> b"hybrid_requests_total" in m.render()
    True
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("hybrid_requests", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("hybrid_request_seconds", "HTTP request latency by route",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.answer_seconds = Histogram("hybrid_answer_seconds", "answer latency by app and strategy",
                                        ["app", "strategy"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft_seconds = Histogram("hybrid_time_to_first_token_seconds", "streaming time to first token",
                                      ["app"], buckets=LATENCY_BUCKETS, registry=r)
        self.routes = Counter("hybrid_routes", "strategies chosen per app", ["app", "strategy"], registry=r)
        self.tokens = Counter("hybrid_tokens", "tokens processed", ["app", "kind"], registry=r)
        self.rejected = Counter("hybrid_rejected", "requests refused before work started", ["reason"], registry=r)
        self.cancelled = Counter("hybrid_cancelled", "answers stopped early", ["reason"], registry=r)
        self.queue_depth = Gauge("hybrid_queue_depth", "requests waiting for the generator", registry=r)
        self.in_flight = Gauge("hybrid_generations_in_flight", "answers being generated", registry=r)
        self.jobs = Counter("hybrid_ingest_jobs", "upload ingest jobs by outcome", ["status"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
            path = getattr(route, "path", None) or scope.get("hybrid.route") or (
                "static" if scope.get("path", "").startswith("/static") else "other")
            m = self.service.metrics
            m.requests.labels(path, scope.get("method", ""), str(status[0])).inc()
            m.request_seconds.labels(path).observe(time.perf_counter() - t0)
