"""Overload: while the generator queue is full, answer requests are refused with 429 from their
headers alone (``ShedMiddleware``), before any body parsing, route or dependency runs; callers
without a valid key, or over their rate limit, still get their own status.

The queue is filled by holding the gate's one slot from the test (concurrency 1, no waiting room):
no thread, no timing.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.api.conftest import AUTH

ASK = {"app": "legal", "question": "How much can a deposit be?"}
CHAT = {"model": "legal", "messages": [{"role": "user", "content": "How much can a deposit be?"}]}


@pytest.fixture
def full(make_client):
    """A client whose generator queue is full until ``release()``: (client, release)."""
    c = make_client(concurrency=1, queue_size=0, retry_after=3)
    gate = c.app.state.service.gate
    gate.reserve()
    asyncio.run(gate.acquire_within(5))  # the one slot is free: taken at once
    assert gate.full()
    return c, gate.release


@pytest.mark.parametrize("path,body", [("/v1/ask", ASK), ("/v1/ask", {**ASK, "stream": True}),
                                       ("/v1/chat/completions", CHAT)])
def test_a_full_queue_refuses_answers_with_429_and_retry_after(full, path, body):
    c, _ = full
    r = c.post(path, json=body, headers=AUTH)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["type"] == "rate_limit" and "queue is full" in r.json()["error"]["message"]


def test_a_refusal_is_counted_under_its_route(full):
    c, _ = full
    assert c.post("/v1/ask", json=ASK, headers=AUTH).status_code == 429
    metrics = c.get("/metrics", headers=AUTH).text
    assert 'hybrid_rejected_total{reason="queue_full"} 1.0' in metrics
    assert 'hybrid_requests_total{method="POST",route="/v1/ask",status="429"} 1.0' in metrics


def test_the_body_of_a_refused_request_is_never_read(full):
    """The price of refusing from the headers: a malformed body gets the 429, not a 422."""
    c, release = full
    bad = {"content": b"{not json", "headers": {**AUTH, "Content-Type": "application/json"}}
    assert c.post("/v1/ask", **bad).status_code == 429
    release()
    assert c.post("/v1/ask", **bad).status_code == 422


def test_without_a_valid_key_the_answer_is_still_401(full):
    c, _ = full
    assert c.post("/v1/ask", json=ASK).status_code == 401
    assert c.post("/v1/ask", json=ASK, headers={"Authorization": "Bearer wrong-key-123456"}).status_code == 401


def test_routes_without_a_generator_slot_are_not_refused(full):
    c, _ = full
    assert c.get("/v1/search", params={"app": "legal", "q": "deposit"}, headers=AUTH).status_code == 200
    assert c.get("/healthz").status_code == 200


def test_a_caller_over_its_rate_limit_gets_the_rate_limit_429(make_client):
    from apps.api.limits import RateLimiter

    c = make_client(concurrency=1, queue_size=0, rate_limit=60, rate_burst=1)
    svc = c.app.state.service
    svc.rate = RateLimiter(60, 1, clock=lambda: 1000.0)  # a frozen clock: one request, then no refill
    svc.gate.reserve()
    asyncio.run(svc.gate.acquire_within(5))
    first = c.post("/v1/ask", json=ASK, headers=AUTH)  # spends the key's one token, then meets the full queue
    assert first.status_code == 429 and "queue is full" in first.json()["error"]["message"]
    second = c.post("/v1/ask", json=ASK, headers=AUTH)
    assert second.status_code == 429 and "rate limit" in second.json()["error"]["message"]


def test_once_a_slot_frees_the_same_request_is_answered(full):
    c, release = full
    assert c.post("/v1/ask", json=ASK, headers=AUTH).status_code == 429
    release()
    r = c.post("/v1/ask", json=ASK, headers=AUTH)
    assert r.status_code == 200 and r.json()["answer"]


def test_requests_arriving_together_are_refused_before_the_admitted_one_starts(make_client):
    """A burst puts many requests in one turn of the event loop. The one let in yields once before
    its full path, so the refusals that came with it go out first rather than queueing behind its
    routing, validation and start (``ShedMiddleware``, ``Gate.incoming``)."""
    import json

    c = make_client(concurrency=1, queue_size=0)
    svc = c.app.state.service
    order: list = []
    ask_request = svc.ask_request

    def admitted(*a, **kw):
        order.append("admitted")
        return ask_request(*a, **kw)

    svc.ask_request = admitted
    body = json.dumps(ASK).encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in AUTH.items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def one(port: int) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/ask", "raw_path": b"/v1/ask", "root_path": "",
                 "query_string": b"", "headers": headers, "client": ("127.0.0.1", port),
                 "server": ("testserver", 80)}
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)  # the client stays connected (cancelled when the answer is done)

        async def send(msg):
            if msg["type"] == "http.response.start":
                order.append(msg["status"])

        await c.app(scope, receive, send)

    async def burst():
        await asyncio.gather(one(5001), one(5002), one(5003))

    c.portal.call(burst)
    assert order == [429, 429, "admitted", 200]
    assert svc.gate.incoming == 0 and svc.gate.running == 0 and svc.gate.waiting == 0
