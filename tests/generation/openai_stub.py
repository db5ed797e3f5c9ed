"""A tiny OpenAI-compatible server on loopback (``http.server`` in a thread) whose replies a test
scripts: for the failure cases a real server cannot be told to produce on demand (a 500, a 429, a
slow answer, a stream that breaks). The real-server tests start ``hybrid serve`` instead.

    with StubServer(models=["base", "legal"]) as stub:
        stub.script = lambda req: Reply(500, {"error": {"message": "boom"}})   # every chat request
        ...
        stub.requests[-1].body     # what the client sent
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict (sent as JSON) or, with ``events``, ignored
    events: list[Any] | None = None  # server-sent events: dicts (JSON), raw strings ("[DONE]"), a float (a
    # pause in seconds) or a threading.Event (a pause until it is set)
    headers: dict[str, str] = field(default_factory=dict)
    wait: threading.Event | None = None  # block until set (a slow server), then answer


def completion(text: str, *, prompt_tokens: int = 7, completion_tokens: int = 3, finish: str = "stop",
               model: str = "base") -> dict:
    return {"id": "cmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def chunks(pieces: list[str], *, usage: dict | None = None, finish: str = "stop") -> list[Any]:
    out: list[Any] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    out += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    out.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        out.append({"choices": [], "usage": usage})
    return out + ["[DONE]"]


class StubServer:
    def __init__(self, models: list[str] | None = None):
        self.models: list[str] | None = list(models or ["base"])  # None: no GET /models (404)
        self.requests: list[Request] = []
        self.script: Callable[[Request], Reply] = self.default
        self.release = threading.Event()  # set on exit: frees handlers blocked in a slow reply
        self.client_left = threading.Event()  # set when a client closed the connection mid-reply
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                req = Request(method, self.path, dict(self.headers), json.loads(raw) if raw else None)
                stub.requests.append(req)
                if method == "GET" and self.path.endswith("/models"):
                    reply = Reply(404, {"detail": "Not Found"}) if stub.models is None else \
                        Reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
                else:
                    reply = stub.script(req)
                if reply.wait is not None:
                    reply.wait.wait(60)
                try:
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    stub.client_left.set()  # the client left (a deadline, a closed stream)

            def _send(self, reply: Reply) -> None:
                if reply.events is None:
                    data = json.dumps(reply.body if reply.body is not None else {}).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for ev in reply.events:
                    if isinstance(ev, threading.Event):  # pause mid-stream until released
                        ev.wait(60)
                        continue
                    if isinstance(ev, float):  # pace the stream like a generating model
                        time.sleep(ev)
                        continue
                    payload = ev if isinstance(ev, str) else json.dumps(ev)
                    self.wfile.write(f"data: {payload}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def default(self, req: Request) -> Reply:
        if req.body and self.models is not None and req.body.get("model") not in self.models:
            return Reply(404, {"error": {"message": f"The model `{req.body.get('model')}` does not exist."}})
        if req.body and req.body.get("stream"):
            return Reply(events=chunks(["Two ", "months", "."], usage={"prompt_tokens": 9, "completion_tokens": 3}))
        return Reply(body=completion("Two months."))

    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
