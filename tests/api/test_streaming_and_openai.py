"""Streaming (SSE), client disconnects, and the OpenAI-compatible endpoint driven by the real
``openai`` client against a server on 127.0.0.1."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.api.conftest import AUTH, KEY, fake_backend, wait_until

ASK = {"app": "legal", "question": "Are deposits capped?", "stream": True}


def parse_sse(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        out.append((name, json.loads(data)))
    return out


def test_sse_streams_tokens_then_one_final_event_with_route_and_citations(client):
    r = client.post("/v1/ask", json=ASK, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    names = [n for n, _ in events]
    assert names[-1] == "final" and set(names[:-1]) == {"token"} and len(names) > 3
    final = events[-1][1]
    assert "".join(d["text"] for n, d in events[:-1]).strip() == final["answer"]
    assert final["strategy"] == "rag" and final["decision"]["reason"]
    assert final["citations"][0]["source"] == "legal-doc0.txt" and final["citations"][0]["n"] == 1
    assert final["request_id"] == r.headers["X-Request-ID"]


# 10,000 tokens at 0.05 s: over 8 minutes if nothing stops it. A generation that ends as
# "cancelled" within the test's bound was stopped by the disconnect, however slow the machine.
ENDLESS = {"token_delay": 0.05, "reply": lambda q, hits: "word " * 10_000}


def test_client_disconnect_mid_stream_stops_generation(live):
    backend = fake_backend(**ENDLESS)
    srv = live(backend)
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", srv.url + "/v1/ask", json=ASK, headers=AUTH) as r:
            got = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got += 1
                if got == 5:
                    break
            assert backend.active == 1
        # leaving the block closes the connection mid-stream
    wait_until(lambda: backend.finished, "the generation to stop after the disconnect")
    assert backend.finished == ["cancelled"] and backend.active == 0
    svc = srv.app.state.service
    wait_until(lambda: svc.in_flight == 0 and svc.gate.running == 0, "the slot to be released")
    # the slot is free again: the next request is served, not queued behind a ghost
    backend.reply = lambda q, hits: "short answer"
    backend.token_delay = 0.0
    assert httpx.post(srv.url + "/v1/ask", json={**ASK, "stream": False}, headers=AUTH, timeout=60).status_code == 200


def test_abrupt_socket_close_mid_stream(live):
    backend = fake_backend(**ENDLESS)
    srv = live(backend)
    body = json.dumps(ASK).encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    s.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
              + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while b"event: token" not in received:  # as many reads as it takes; the socket timeout bounds a hang
        chunk = s.recv(4096)
        assert chunk, f"connection closed before the first token: {received!r}"
        received += chunk
    s.close()
    wait_until(lambda: backend.finished, "the generation to stop after the socket closed")
    # cancelled, not run to the end of its 10,000 tokens: the close stopped it
    assert backend.active == 0 and backend.finished == ["cancelled"]


def test_openai_client_non_streaming(live):
    openai = pytest.importorskip("openai")
    srv = live()
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    resp = client.chat.completions.create(model="legal", messages=[
        {"role": "system", "content": "ignored: the app's prompt governs"},
        {"role": "user", "content": "Are deposits capped?"}])
    assert resp.model == "legal" and resp.object == "chat.completion"
    assert "Deposits are capped" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    ext = resp.model_extra["hybrid"]  # the route info rides in an extension field
    assert ext["strategy"] == "rag" and ext["decision"]["reason"] and ext["citations"][0]["n"] == 1
    assert [m.id for m in client.models.list()] == ["legal", "shop"]


def test_openai_client_streaming_and_strategy_override(live):
    openai = pytest.importorskip("openai")
    srv = live()
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(model="shop", stream=True, max_tokens=3,
                                            messages=[{"role": "user", "content": "ship to Norway?"}],
                                            extra_body={"hybrid": {"strategy": "few_shot"}})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() == "You asked: ship"  # three tokens: max_tokens is honoured
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].model_extra["hybrid"]["strategy"] == "few_shot"


def test_openai_client_errors(live):
    openai = pytest.importorskip("openai")
    srv = live()
    bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong-key-123456", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="legal", messages=[{"role": "user", "content": "x"}])
    good = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="unknown app 'criminal'"):
        good.chat.completions.create(model="criminal", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError, match="last message must have role 'user'"):
        good.chat.completions.create(model="legal", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError, match="n"):
        good.chat.completions.create(model="legal", n=2, messages=[{"role": "user", "content": "x"}])


def test_langchain_chat_openai_if_installed(live):
    lc = pytest.importorskip("langchain_openai")
    srv = live()
    llm = lc.ChatOpenAI(base_url=srv.url + "/v1", api_key=KEY, model="legal", max_retries=0)
    assert "Deposits are capped" in llm.invoke("Are deposits capped?").content
