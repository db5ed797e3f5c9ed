"""Auth, caps and bad input against the HTTP layer (fake backend: milliseconds per test)."""

from __future__ import annotations

import json
import re
import threading

import pytest

from apps.api.backend import FakeBackend
from tests.api.conftest import AUTH, KEY, fake_backend, wait_until

ASK = {"app": "legal", "question": "What is the deposit cap?"}
AUTHED = [
    ("POST", "/v1/ask", {"json": ASK}),
    ("POST", "/v1/chat/completions", {"json": {"model": "legal", "messages": [{"role": "user", "content": "hi"}]}}),
    ("GET", "/v1/search", {"params": {"app": "legal", "q": "deposit"}}),
    ("POST", "/v1/documents", {"data": {"app": "legal"}, "files": [("files", ("a.txt", b"text"))]}),
    ("GET", "/v1/jobs/job_0000", {}),
    ("GET", "/v1/apps", {}),
    ("GET", "/v1/models", {}),
    ("GET", "/metrics", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/docs", {}),
    ("GET", "/redoc", {}),
]


@pytest.mark.parametrize("method,path,kw", AUTHED, ids=[p for _, p, _ in AUTHED])
@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer wrong-key-123456", f"Basic {KEY}",
                                    f"Bearer {KEY}x", f"bearer{KEY}"],
                         ids=["missing", "empty", "scheme-only", "empty-token", "wrong", "basic", "longer", "no-space"])
def test_every_route_but_health_needs_a_valid_key(client, method, path, kw, header):
    headers = {} if header is None else {"Authorization": header}
    r = client.request(method, path, headers=headers, **kw)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in r.json()["error"]["message"]
    assert client.backend.finished == [] and client.backend.ingested == []  # nothing ran


def test_health_needs_no_key_and_valid_key_works(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    r = client.post("/v1/ask", json=ASK, headers=AUTH)
    assert r.status_code == 200 and r.json()["answer"]
    assert client.post("/v1/ask", json=ASK, headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_second_key_works_too(make_client):
    c = make_client(api_keys=[KEY, "another-key-abcdef"])
    assert c.get("/v1/apps", headers={"Authorization": "Bearer another-key-abcdef"}).status_code == 200


def test_no_key_means_loopback_only():
    from apps.api.settings import ServiceSettings

    s = ServiceSettings(host="0.0.0.0", api_keys=[])
    assert s.host == "127.0.0.1" and s.forced_loopback == "0.0.0.0"
    assert ServiceSettings(host="0.0.0.0", api_keys=[KEY]).host == "0.0.0.0"


def test_keys_from_environment(monkeypatch):
    from apps.api.settings import ServiceSettings

    monkeypatch.setenv("HYBRID_API_KEYS", "first-key-123, second-key-456")
    monkeypatch.setenv("HYBRID_API_MAX_K", "7")
    s = ServiceSettings()
    assert s.api_keys == ["first-key-123", "second-key-456"] and s.max_k == 7


def test_short_key_is_refused():
    from pydantic import ValidationError

    from apps.api.settings import ServiceSettings

    with pytest.raises(ValidationError, match="at least 8"):
        ServiceSettings(api_keys=["abc"])


# -- caps and bad values ------------------------------------------------------------------------

@pytest.mark.parametrize("k,msg", [(0, "greater than or equal to 1 (got 0)"), (-1, "(got -1)"),
                                   (10**9, "less than or equal to 100 (got 1000000000)"), (50, "k must be <= 20, got 50")])
def test_bad_k_is_422_with_the_value(client, k, msg):
    r = client.post("/v1/ask", json={**ASK, "k": k}, headers=AUTH)
    assert r.status_code == 422 and msg in r.json()["error"]["message"]
    r = client.get("/v1/search", params={"app": "legal", "q": "deposit", "k": k}, headers=AUTH)
    assert r.status_code == 422 and str(k) in r.json()["error"]["message"]


def test_temperature_nan_and_inf_are_422(client):
    for raw in (b"NaN", b"Infinity", b"-1"):
        body = b'{"app": "legal", "question": "x", "temperature": ' + raw + b"}"
        r = client.post("/v1/ask", content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert "temperature" in r.json()["error"]["message"]
    body = b'{"model": "legal", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'
    r = client.post("/v1/chat/completions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "NaN" in r.json()["error"]["message"]


def test_oversize_body_is_413_by_header_and_by_count(make_client):
    c = make_client(max_body_bytes=4096)
    big = {"app": "legal", "question": "x" * 10_000}
    r = c.post("/v1/ask", json=big, headers=AUTH)
    assert r.status_code == 413 and "limit is 4096" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the middleware must count
        for _ in range(10):
            yield b"x" * 1000

    r = c.post("/v1/ask", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert c.backend.finished == []


def test_oversize_upload_is_413(make_client):
    c = make_client(max_upload_bytes=2048)
    r = c.post("/v1/documents", data={"app": "legal"}, files=[("files", ("a.txt", b"a" * 5000))], headers=AUTH)
    assert r.status_code == 413
    assert c.backend.ingested == []


def test_invalid_utf8_and_invalid_json(client):
    r = client.post("/v1/ask", content=b'{"app": "legal", "question": "\xff\xfe caf\xe9"}',
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and "UTF-8" in r.json()["error"]["message"]
    r = client.post("/v1/ask", content=b'{"app": "legal", ', headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post("/v1/ask", content=b"\x00\x01\x02", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code in (400, 422)


def test_question_caps(make_client):
    c = make_client(max_question_chars=50, max_new_tokens=16)
    r = c.post("/v1/ask", json={**ASK, "question": "y" * 51}, headers=AUTH)
    assert r.status_code == 422 and "51 characters; the limit is 50" in r.json()["error"]["message"]
    r = c.post("/v1/ask", json={**ASK, "question": "   "}, headers=AUTH)
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"]
    r = c.post("/v1/ask", json={**ASK, "max_new_tokens": 17}, headers=AUTH)
    assert r.status_code == 422 and "max_new_tokens must be <= 16, got 17" in r.json()["error"]["message"]
    r = c.post("/v1/chat/completions", json={"model": "legal", "max_tokens": 100,
                                              "messages": [{"role": "user", "content": "x"}]}, headers=AUTH)
    assert r.status_code == 422 and "got 100" in r.json()["error"]["message"]


def test_unknown_fields_and_bad_strategy(client):
    r = client.post("/v1/ask", json={**ASK, "strategy": "magic"}, headers=AUTH)
    assert r.status_code == 422 and "strategy" in r.json()["error"]["message"]
    r = client.post("/v1/ask", json={**ASK, "quesiton": "typo"}, headers=AUTH)
    assert r.status_code == 422 and "quesiton" in r.json()["error"]["message"]


@pytest.mark.parametrize("method,path,kw", [
    ("POST", "/v1/ask", {"json": {**ASK, "app": "nope"}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}),
    ("GET", "/v1/search", {"params": {"app": "nope", "q": "x"}}),
    ("POST", "/v1/documents", {"data": {"app": "nope"}, "files": [("files", ("a.txt", b"x"))]}),
])
def test_unknown_app_is_404_naming_the_known_ones(client, method, path, kw):
    r = client.request(method, path, headers=AUTH, **kw)
    assert r.status_code == 404
    assert "unknown app 'nope'" in r.json()["error"]["message"] and "legal, shop" in r.json()["error"]["message"]


def test_forced_strategy_reaches_the_backend(client):
    r = client.post("/v1/ask", json={**ASK, "strategy": "few_shot"}, headers=AUTH).json()
    assert r["strategy"] == "few_shot" and "forced" in r["decision"]["reason"]


# -- back-pressure, deadline, rate limit, readiness ---------------------------------------------

def test_full_queue_answers_429_with_retry_after_at_once(live):
    import httpx

    release = threading.Event()

    def held(question, hits):  # the answer waits, in the worker thread, until the test releases it
        release.wait(120)
        return "held answer"

    srv = live(fake_backend(reply=held), concurrency=1, queue_size=1, retry_after=3)
    gate = srv.app.state.service.gate
    results = []

    def ask():
        results.append(httpx.post(srv.url + "/v1/ask", json=ASK, headers=AUTH, timeout=120).status_code)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        # the server's own counters say when one request generates and one waits
        wait_until(lambda: gate.running == 1 and gate.waiting == 1, "one running and one waiting request")
        r = httpx.post(srv.url + "/v1/ask", json=ASK, headers=AUTH, timeout=60)
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
        assert "queue is full" in r.json()["error"]["message"]
        assert results == []  # answered while both held requests were still held: not queued behind them
    finally:
        release.set()
        for t in threads:
            t.join(120)
    assert results == [200, 200]
    metrics = httpx.get(srv.url + "/metrics", headers=AUTH).text
    assert 'hybrid_rejected_total{reason="queue_full"} 1.0' in metrics


def test_deadline_answers_504_and_stops_generation(make_client):
    b = fake_backend(token_delay=120)  # the first token would take 2 minutes: only the deadline ends it
    c = make_client(b, request_timeout=0.5)
    r = c.post("/v1/ask", json={**ASK, "question": "a b c d e f g h i j"}, headers=AUTH)
    assert r.status_code == 504 and "deadline" in r.json()["error"]["message"]
    wait_until(lambda: b.finished, "the generation to stop")
    assert b.finished == ["cancelled"] and b.active == 0


def test_per_key_rate_limit(make_client):
    from apps.api.limits import RateLimiter

    c = make_client(rate_limit=60, rate_burst=3, api_keys=[KEY, "second-key-xyz"])
    now = [1000.0]  # the limiter's clock, moved by the test: the test's own pace does not matter
    c.app.state.service.rate = RateLimiter(60, 3, clock=lambda: now[0])
    codes = [c.get("/v1/apps", headers=AUTH).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = c.get("/v1/apps", headers=AUTH)
    assert int(r.headers["Retry-After"]) >= 1 and "rate limit" in r.json()["error"]["message"]
    # another key has its own bucket
    assert c.get("/v1/apps", headers={"Authorization": "Bearer second-key-xyz"}).status_code == 200
    now[0] += 1.0  # one token back after a second at 60 per minute
    assert [c.get("/v1/apps", headers=AUTH).status_code for _ in range(2)] == [200, 429]
    metrics = c.get("/metrics", headers={"Authorization": "Bearer second-key-xyz"}).text
    assert 'hybrid_rejected_total{reason="rate_limit"} 4.0' in metrics


class GatedLoadBackend(FakeBackend):
    """Loading waits for the test to say so: 'not ready yet' is a state, not a race against a timer."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.loaded = threading.Event()

    def load(self) -> None:
        self.loaded.wait(120)
        super().load()


def test_not_ready_until_loaded(make_client):
    from tests.api.conftest import LEGAL, SHOP

    b = GatedLoadBackend({"legal": LEGAL, "shop": SHOP})
    c = make_client(b, wait_ready=False)
    try:
        r = c.get("/readyz")
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        assert c.post("/v1/ask", json=ASK, headers=AUTH).status_code == 503
        assert c.get("/healthz").status_code == 200  # liveness answers at once
    finally:
        b.loaded.set()
    wait_until(lambda: c.get("/readyz").status_code == 200, "readiness after the load")
    assert c.post("/v1/ask", json=ASK, headers=AUTH).status_code == 200


def test_draining_refuses_new_work(client):
    client.app.state.service.draining = True
    assert client.get("/readyz").status_code == 503
    r = client.post("/v1/ask", json=ASK, headers=AUTH)
    assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"] and r.headers["Retry-After"]


def test_metrics_are_prometheus_text(client):
    strategy = client.post("/v1/ask", json=ASK, headers=AUTH).json()["strategy"]
    client.post("/v1/ask", json={**ASK, "stream": True}, headers=AUTH)
    r = client.get("/metrics", headers=AUTH)
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for needle in ('hybrid_requests_total{method="POST",route="/v1/ask",status="200"} 2.0',
                   f'hybrid_routes_total{{app="legal",strategy="{strategy}"}} 2.0',
                   'hybrid_answer_seconds_bucket{app="legal",le=',
                   'hybrid_tokens_total{app="legal",kind="completion"}',
                   'hybrid_time_to_first_token_seconds_count{app="legal"} 1.0',
                   "hybrid_queue_depth 0.0"):
        assert needle in text, needle


def test_openapi_documents_every_endpoint_with_an_example(client):
    spec = client.get("/openapi.json", headers=AUTH).json()
    expected = {("post", "/v1/ask"), ("post", "/v1/chat/completions"), ("get", "/v1/search"),
                ("post", "/v1/documents"), ("get", "/v1/jobs/{job_id}"), ("get", "/v1/apps"), ("get", "/v1/models"),
                ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
    found = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= found
    text_of = {}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            blob = json.dumps(op)
            for ref in re.findall(r'"#/components/schemas/([^"]+)"', blob):
                blob += json.dumps(spec["components"]["schemas"][ref])
            text_of[(method, path)] = blob
    for key in expected:
        assert '"example' in text_of[key], f"{key} has no example"
    assert spec["paths"]["/v1/ask"]["post"]["responses"]["429"]
