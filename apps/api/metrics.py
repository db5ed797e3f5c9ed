"""Prometheus metrics, one registry per server instance (tests start many servers in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
