"""The one token loop behind both streaming routes (``apps.api.streaming.stream_answer``): the same
events in each route's framing, including a failure midway, and the generator slot freed after."""

from __future__ import annotations

import json

from apps.api.backend import FakeBackend
from core.errors import InputError
from tests.api.conftest import AUTH, LEGAL, SHOP
from tests.api.test_streaming_and_openai import parse_sse


class FailingBackend(FakeBackend):
    """Streams two tokens, then fails the way a generator can (a HybridError midway)."""

    def ask_stream(self, req, cancel):
        yield "Deposits "
        yield "are "
        raise InputError("the prompt no longer fits the context window")


def failing():
    return FailingBackend({"legal": LEGAL, "shop": SHOP})


def metric(client, name: str) -> float:
    text = client.get("/metrics", headers=AUTH).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_ask_stream_ends_with_an_error_event_after_the_tokens(make_client):
    c = make_client(backend=failing())
    r = c.post("/v1/ask", json={"app": "legal", "question": "Are deposits capped?", "stream": True}, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert [n for n, _ in events] == ["token", "token", "error"]
    assert "".join(d["text"] for _, d in events[:2]) == "Deposits are "
    assert events[-1][1] == {"error": {"message": "the prompt no longer fits the context window",
                                       "type": "invalid_request", "code": 422}}
    assert c.app.state.service.in_flight == 0 and c.app.state.service.gate.running == 0
    assert metric(c, "hybrid_time_to_first_token_seconds_count") == 1
    assert metric(c, "hybrid_routes_total") == 0  # no answer, nothing recorded


def test_chat_stream_sends_the_error_chunk_then_done(make_client):
    c = make_client(backend=failing())
    r = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "legal", "stream": True, "messages": [{"role": "user", "content": "Are deposits capped?"}]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = [b[len("data: "):] for b in r.text.strip().split("\n\n")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [ch["choices"][0]["delta"]["content"] for ch in chunks[1:3]] == ["Deposits ", "are "]
    assert chunks[3] == {"error": {"message": "the prompt no longer fits the context window",
                                   "type": "invalid_request", "code": 422}}
    assert len(chunks) == 4
    assert c.app.state.service.in_flight == 0 and c.app.state.service.gate.running == 0
    assert metric(c, "hybrid_time_to_first_token_seconds_count") == 1


def test_both_routes_stream_the_same_tokens_and_record_the_same_way(client):
    q = "Are deposits capped?"
    ask = parse_sse(client.post("/v1/ask", json={"app": "legal", "question": q, "stream": True},
                                     headers=AUTH).text)
    chat = client.post("/v1/chat/completions", headers=AUTH, json={
        "model": "legal", "stream": True, "messages": [{"role": "user", "content": q}]}).text
    chunks = [json.loads(b[len("data: "):]) for b in chat.strip().split("\n\n")[:-1]]
    ask_tokens = [d["text"] for n, d in ask if n == "token"]
    chat_tokens = [ch["choices"][0]["delta"]["content"] for ch in chunks[1:-1]]
    assert ask_tokens == chat_tokens and ask_tokens
    assert ask[-1][1]["citations"] == chunks[-1]["hybrid"]["citations"]
    assert metric(client, "hybrid_time_to_first_token_seconds_count") == 2
    assert metric(client, 'hybrid_routes_total{app="legal"') == 2
