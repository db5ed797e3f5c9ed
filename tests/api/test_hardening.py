"""Issue 14's API defects, one test (or more) each: unsafe text in any string field, the schema and
docs behind the key, broken JSON explained, strict numbers, bounded rate-limit memory, upload names
that clash with the knowledge base, and a drain that waits for upload jobs."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from tests.api.conftest import AUTH, KEY, fake_backend

JSON = {**AUTH, "Content-Type": "application/json"}
ASK = {"app": "legal", "question": "What is the deposit cap?"}
CHAT = {"model": "legal", "messages": [{"role": "user", "content": "What is the deposit cap?"}]}
BAD_TEXT = {"surrogate": ("\ud800", "a lone surrogate (U+D800)"),
            "low-surrogate": ("ok \udfff", "a lone surrogate (U+DFFF)"),
            "nul": ("a\x00b", "a NUL character (U+0000)")}

# (route, body with BAD where the unsafe string goes, the path the message must name)
BODY_FIELDS = [
    ("/v1/ask", {**ASK, "question": "BAD"}, "question"),
    ("/v1/ask", {**ASK, "app": "BAD"}, "app"),
    ("/v1/ask", {**ASK, "strategy": "BAD"}, "strategy"),
    ("/v1/ask", {**ASK, "history": [{"role": "user", "content": "BAD"}]}, "history.0.content"),
    ("/v1/ask", {**ASK, "filters": {"source": "BAD"}}, "filters.source"),
    ("/v1/ask", {**ASK, "filters": {"source": {"in": ["a.txt", "BAD"]}}}, "filters.source.in.1"),
    ("/v1/ask", {**ASK, "filters": {"BAD": "x"}}, "filters key"),
    ("/v1/chat/completions", {**CHAT, "model": "BAD"}, "model"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "BAD"}]}, "messages.0.content"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "system", "content": "BAD"}, *CHAT["messages"]]},
     "messages.0.content"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "BAD"}]}]},
     "messages.0.content.0.text"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x", "name": "BAD"}]},
     "messages.0.name"),
    ("/v1/chat/completions", {**CHAT, "stop": "BAD"}, "stop"),
    ("/v1/chat/completions", {**CHAT, "stop": ["ok", "BAD"]}, "stop.1"),
    ("/v1/chat/completions", {**CHAT, "user": "BAD"}, "user"),  # an OpenAI extra we ignore: still refused
    ("/v1/chat/completions", {**CHAT, "hybrid": {"strategy": "BAD"}}, "hybrid.strategy"),
]


def _with(body, text):
    return json.loads(json.dumps(body).replace('"BAD"', json.dumps(text)))


@pytest.mark.parametrize("kind", list(BAD_TEXT))
@pytest.mark.parametrize("path,body,field", BODY_FIELDS, ids=[f"{p}:{f}" for p, _, f in BODY_FIELDS])
def test_unsafe_text_in_any_body_field_is_422_naming_it(client, path, body, field, kind):
    text, what = BAD_TEXT[kind]
    # json.dumps escapes a lone surrogate as \ud800, exactly what a client library sends
    r = client.post(path, content=json.dumps(_with(body, text)).encode(), headers=JSON)
    assert r.status_code == 422, r.text
    msg = r.json()["error"]["message"]
    assert msg.startswith(f"{field} contains {what}") and "send valid Unicode text" in msg, msg
    assert client.backend.finished == []  # nothing reached the backend


def test_nul_in_query_form_and_path_is_422(client):
    # a lone surrogate cannot reach these at all: it has no UTF-8 (percent or multipart) encoding
    r = client.get("/v1/search", params={"app": "legal", "q": "a\x00b"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("q contains a NUL character")
    r = client.get("/v1/search", params={"app": "leg\x00al", "q": "deposit"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("app contains a NUL character")
    r = client.get("/v1/jobs/job_%00", headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("job_id contains a NUL character")
    r = client.post("/v1/documents", data={"app": "legal\x00"}, files=[("files", ("a.txt", b"x"))], headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("app contains a NUL character")
    assert client.backend.ingested == []


def test_lone_surrogate_in_chat_on_the_real_pipeline_is_422_and_keeps_the_connection(live, tiny_apps):
    """The reported crash: the real tokenizer raised TypeError, the server answered 500, logged a
    traceback and dropped the keep-alive connection. Now: 422, and the same socket serves the next
    request."""
    from apps.api.backend import RealBackend

    srv = live(RealBackend(tiny_apps))
    bad = b'{"model":"legal","messages":[{"role":"user","content":"\\ud800"}]}'
    good = json.dumps({"model": "legal", "messages": [{"role": "user", "content": "deposit?"}]}).encode()

    def request(body: bytes) -> bytes:
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body)

    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as s:
        f = s.makefile("rb")
        for body, status in ((bad, b"422"), (good, b"200"), (bad, b"422")):
            s.sendall(request(body))
            head = f.readline()
            assert head.split()[1] == status, head
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = json.loads(f.read(length))
            if status == b"422":
                assert payload["error"]["message"].startswith("messages.0.content contains a lone surrogate")
            else:
                assert payload["choices"][0]["message"]["content"]


# -- the schema and its viewers need the key ------------------------------------------------------

@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_schema_and_docs_need_the_key_when_auth_is_on(make_client, path):
    c = make_client()
    r = c.get(path)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in r.json()["error"]["message"]
    assert c.get(path, headers={"Authorization": "Bearer wrong-key-123456"}).status_code == 401
    r = c.get(path, headers=AUTH)
    assert r.status_code == 200
    if path == "/openapi.json":
        assert "/v1/ask" in r.json()["paths"] and "/docs" not in r.json()["paths"]
    else:
        assert "/openapi.json" in r.text
    open_server = make_client(api_keys=[])  # no key configured (loopback only): open, like every route
    assert open_server.get(path).status_code == 200


# -- broken JSON -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,expect", [
    (b'{"app": "legal", ', "Expecting property name enclosed in double quotes at character 17 (line 1, column 18)"),
    (b'{"app": "legal",\n "question": "x",}', "Expecting property name enclosed in double quotes at character 34 "
                                               "(line 2, column 18)"),
    (b'{"app": "legal" "question": "x"}', "Expecting ',' delimiter at character 16 (line 1, column 17)"),
    (b'{"app": ', "Expecting value at character 8 (line 1, column 9)"),
])
def test_broken_json_says_where_and_what_was_expected(client, raw, expect):
    r = client.post("/v1/ask", content=raw, headers=JSON)
    assert r.status_code == 422
    msg = r.json()["error"]["message"]
    assert msg.startswith("request body is not valid JSON: " + expect), msg
    assert "(got {})" not in msg and "\n" not in msg


# -- strict numbers and booleans -------------------------------------------------------------------

@pytest.mark.parametrize("path,field,value", [
    ("/v1/ask", "k", True), ("/v1/ask", "k", 2.0), ("/v1/ask", "k", "3"), ("/v1/ask", "max_new_tokens", True),
    ("/v1/ask", "temperature", True), ("/v1/ask", "stream", "yes"), ("/v1/ask", "stream", 1),
    ("/v1/chat/completions", "max_tokens", True), ("/v1/chat/completions", "n", True),
    ("/v1/chat/completions", "top_p", True), ("/v1/chat/completions", "stream", "true"),
    ("/v1/chat/completions", "hybrid", {"k": True}),
])
def test_booleans_strings_and_floats_are_not_integers(client, path, field, value):
    body = {**(ASK if path == "/v1/ask" else CHAT), field: value}
    r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    msg = r.json()["error"]["message"]
    assert msg.startswith(field) and "Input should be a valid" in msg, msg
    assert client.backend.finished == []


def test_integers_and_floats_still_pass(client):
    r = client.post("/v1/ask", json={**ASK, "k": 2, "temperature": 1, "max_new_tokens": 5, "stream": False},
                    headers=AUTH)
    assert r.status_code == 200, r.text
    r = client.post("/v1/chat/completions", json={**CHAT, "temperature": 0.5, "top_p": 1, "n": 1,
                                                  "hybrid": {"k": 2}}, headers=AUTH)
    assert r.status_code == 200, r.text


# -- rate-limit memory -----------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_rate_limit_buckets_are_evicted():
    from apps.api.limits import RateLimiter

    clock = Clock()
    rl = RateLimiter(per_minute=60, burst=2, clock=clock)  # refills in 2 s
    for i in range(500):
        assert rl.check(f"key-{i}") == 0.0
    assert len(rl) == 500
    clock.now += 1.0  # half refilled: nothing may be forgotten yet (that would hand out a fresh burst)
    rl.check("busy")
    assert len(rl) == 501
    rl.check("busy")
    clock.now += 1.5  # key-* refilled, "busy" not yet
    assert rl.check("busy") == 0.0
    assert len(rl) == 1  # only the bucket that still remembers something
    assert rl.check("busy") > 0  # and it is still enforced: no fresh burst from the sweep


def test_rate_limit_buckets_are_capped_however_fast_new_keys_come():
    from apps.api.limits import RateLimiter

    clock = Clock()
    rl = RateLimiter(per_minute=1, burst=5, max_buckets=100, clock=clock)  # refill takes 5 minutes
    for i in range(10_000):
        rl.check(f"ip:{i}")
        assert len(rl) <= 100
    assert rl.check("ip:9999") == 0.0  # the most recent keys are the ones kept
    assert len(rl) == 100


# -- uploads named like a document of the app -------------------------------------------------------

def test_upload_named_like_a_kb_document_is_409_and_stores_nothing(client, tmp_path):
    r = client.post("/v1/documents", data={"app": "legal"}, headers=AUTH,
                    files=[("files", ("new.txt", b"fresh text")), ("files", ("legal-doc0.txt", b"shadow"))])
    assert r.status_code == 409, r.text
    msg = r.json()["error"]["message"]
    assert "already has a document named 'legal-doc0.txt'" in msg and "rename the file" in msg
    assert not list((tmp_path / "uploads").rglob("*.txt")) and client.backend.ingested == []
    # the same name in another app is fine: names clash per app
    r = client.post("/v1/documents", data={"app": "shop"}, files=[("files", ("legal-doc0.txt", b"x"))], headers=AUTH)
    assert r.status_code == 202


def test_second_upload_of_one_name_is_409_even_while_the_first_is_pending(client):
    first = client.post("/v1/documents", data={"app": "legal"}, files=[("files", ("gift.txt", b"Gift cards."))],
                        headers=AUTH)
    assert first.status_code == 202
    # at once: the first job may still be queued, its document not in the KB yet
    r = client.post("/v1/documents", data={"app": "legal"}, files=[("files", ("gift.txt", b"other"))], headers=AUTH)
    assert r.status_code == 409 and "'gift.txt'" in r.json()["error"]["message"]
    assert client.app.state.service.jobs.wait(first.json()["id"], 30).status == "done"
    r = client.post("/v1/documents", data={"app": "legal"}, files=[("files", ("gift.txt", b"other"))], headers=AUTH)
    assert r.status_code == 409
    assert client.backend.ingested == ["gift.txt"]


def test_upload_named_like_a_corpus_file_is_409_on_the_real_pipeline(make_client, tiny_apps):
    from apps.api.backend import RealBackend

    c = make_client(RealBackend(tiny_apps))
    r = c.post("/v1/documents", data={"app": "legal"}, files=[("files", ("tenancy-act.md", b"# Forged\n"))],
               headers=AUTH)
    assert r.status_code == 409 and "'tenancy-act.md'" in r.json()["error"]["message"]
    r = c.get("/v1/search", params={"app": "legal", "q": "deposit", "k": 5}, headers=AUTH)
    assert sorted({h["source"] for h in r.json()["hits"]}) == ["notice.md", "tenancy-act.md"]


# -- SIGTERM drain waits for upload jobs -----------------------------------------------------------

def test_drain_waits_for_a_running_upload_job(make_client):
    from apps.api.runner import wait_idle

    c = make_client()
    svc = c.app.state.service
    started, release = threading.Event(), threading.Event()

    def slow_ingest(progress):
        started.set()
        release.wait(60)
        return {"documents": 1}

    job = svc.jobs.submit("legal", ["big.pdf"], slow_ingest)
    assert started.wait(30)
    assert wait_idle(svc, grace=0.2) == (0, 1)  # bounded: the grace ends with the job still running
    waiter_result = []
    waiter = threading.Thread(target=lambda: waiter_result.append(wait_idle(svc, grace=120)))
    waiter.start()
    release.set()
    waiter.join(60)
    assert waiter_result == [(0, 0)]  # returned because the job finished, long before its grace
    assert svc.jobs.get(job.id).status == "done"


def test_drain_counts_a_queued_job_too(make_client):
    from apps.api.runner import wait_idle

    svc = make_client().app.state.service
    gate = threading.Event()
    first = svc.jobs.submit("legal", ["a.txt"], lambda progress: gate.wait(60) and {})
    second = svc.jobs.submit("legal", ["b.txt"], lambda progress: {})  # queued behind the first
    assert wait_idle(svc, grace=0.1) == (0, 2)
    gate.set()
    assert wait_idle(svc, grace=120) == (0, 0)
    assert svc.jobs.get(first.id).status == svc.jobs.get(second.id).status == "done"


def test_sigterm_drain_of_the_server_waits_for_the_upload_job(make_client):
    """DrainingServer's drain thread (what SIGTERM starts): the server stays up while an upload job
    runs, however many times the drain looks, and stops once the job is done."""
    import uvicorn

    from apps.api.runner import DrainingServer
    from tests.api.conftest import wait_until

    c = make_client()
    svc = c.app.state.service
    release = threading.Event()
    job = svc.jobs.submit("legal", ["big.pdf"], lambda progress: release.wait(120) and {"documents": 1})
    looks = []
    real_pending = svc.pending
    svc.pending = lambda: looks.append(1) or real_pending()
    server = DrainingServer(uvicorn.Config(c.app), svc, grace=120)
    drain = threading.Thread(target=server._drain)
    drain.start()
    try:
        wait_until(lambda: len(looks) >= 5, "the drain to look at the pending work a few times")
        assert not server.should_exit and svc.jobs.get(job.id).status == "running"
    finally:
        release.set()
    drain.join(120)
    assert server.should_exit and svc.jobs.get(job.id).status == "done"
