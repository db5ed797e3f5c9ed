"""Fixtures for the API tests: the fake backend behind TestClient (fast), a live uvicorn on
127.0.0.1 in a thread (real sockets, for streaming/disconnect/OpenAI-client tests), and a tiny
real app directory (real KnowledgeBase + pipeline; hash embedder and scripted generator by default)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until  # noqa: F401 - the API tests import it from here

ROOT_DIR = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}

LEGAL = ["Deposits are capped at two months of rent under the Tenancy Act.",
         "A landlord must give two months notice before ending a periodic tenancy."]
SHOP = ["Shipping to Norway takes five working days.",
        "Returns are accepted within 30 days with the receipt."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(**kw):
    from apps.api.settings import ServiceSettings

    kw.setdefault("api_keys", [KEY])
    kw.setdefault("rate_limit", 0)
    return ServiceSettings(**kw)


def fake_backend(**kw):
    from apps.api.backend import FakeBackend

    return FakeBackend({"legal": LEGAL, "shop": SHOP}, **kw)


@pytest.fixture
def make_client(tmp_path):
    """make_client(backend=None, **settings) -> a started TestClient (backend loaded)."""
    from fastapi.testclient import TestClient

    from apps.api.server import create_app

    clients = []

    def make(backend=None, wait_ready=True, **settings):
        settings.setdefault("upload_dir", str(tmp_path / "uploads"))
        b = backend or fake_backend()
        app = create_app(make_settings(**settings), b)
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        if wait_ready:
            wait_until(b.ready, "the backend to load")
        c.backend = b
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


class LiveServer:
    """uvicorn on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "the test server to start")
        if not self.server.started:
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(tmp_path):
    """live(backend=None, **settings) -> a running LiveServer."""
    from apps.api.server import create_app

    servers = []

    def start(backend=None, **settings):
        settings.setdefault("upload_dir", str(tmp_path / "uploads"))
        b = backend or fake_backend()
        s = LiveServer(create_app(make_settings(**settings), b)).__enter__()
        s.backend = b
        servers.append(s)
        wait_until(b.ready, "the backend to load")
        return s

    yield start
    for s in servers:
        s.__exit__(None, None, None)


# -- a tiny real app: real KnowledgeBase, real pipeline, real router --------------------------------

APP_YAML = """\
name: {name}
title: {title}
description: {description}
system_prompt: "You are {{app_name}}. Answer from the sources, briefly, and cite them like [1]."
knowledge_base:
  path: kb
  embedder: {embedder}
examples:
  path: examples.jsonl
router:
  kind: rules
generation:
  model: {model}
  max_new_tokens: {max_new_tokens}
"""


def write_app(root: Path, name: str, docs: dict[str, str], examples: list[tuple[str, str]], *,
              embedder: str = "hash", model: str = "scripted", max_new_tokens: int = 48,
              title: str | None = None, description: str = "") -> Path:
    """An app directory with its knowledge base already built from ``docs`` (file name -> text)."""
    import json

    from core.types import Document
    from indexes.config import IndexConfig
    from indexes.embed import get_embedder
    from indexes.kb import KnowledgeBase

    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "app.yaml").write_text(APP_YAML.format(name=name, title=title or name.title(), embedder=embedder,
                                                model=model, max_new_tokens=max_new_tokens,
                                                description=description or f"{name} test app"))
    (d / "examples.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in examples))
    emb = get_embedder(embedder)
    kb = KnowledgeBase.create(d / "kb", IndexConfig(embedder=embedder, chunk_size=64, chunk_overlap=8), embedder=emb)
    kb.sync([Document.create(text, {"source": fname, "uri": f"file:///{name}/{fname}", "title": fname})
             for fname, text in docs.items()])
    kb.close()
    return d


LEGAL_DOCS = {
    "tenancy-act.md": "Tenancy Act section 4. A deposit may not exceed two months of rent. The landlord "
                      "must return the deposit within 14 days after the tenancy ends.",
    "notice.md": "Notice periods. A landlord must give at least two months notice to end a periodic tenancy; "
                 "a tenant must give one month.",
}
SHOP_DOCS = {
    "shipping.md": "Fernhollow ships to Norway, Sweden and Denmark. Delivery to Norway takes five working days.",
    "returns.md": "Returns are accepted within 30 days of delivery with the receipt. Refunds take 5 days.",
}
LEGAL_EX = [("What is the deposit cap?", "Two months of rent."), ("Who can end a tenancy?", "Either party, with notice.")]
SHOP_EX = [("Do you ship abroad?", "Yes, to the Nordic countries."), ("Can I return boots?", "Within 30 days.")]


@pytest.fixture(scope="session")
def tiny_apps(tmp_path_factory):
    """Two real app dirs (legal, shop) with hash-embedder KBs and the scripted generator."""
    import os

    os.environ.setdefault("HYBRID_CACHE", str(Path(__file__).resolve().parents[2] / ".cache" / "test-cache"))
    root = tmp_path_factory.mktemp("apps")
    return [write_app(root, "legal", LEGAL_DOCS, LEGAL_EX), write_app(root, "shop", SHOP_DOCS, SHOP_EX)]


# -- `hybrid serve` as a real subprocess ------------------------------------------------------------

@pytest.fixture(scope="session")
def real_model_app(tmp_path_factory):
    """A tiny app dir with the real embedded models (MiniLM embedder, SmolLM2 generator)."""
    import os

    os.environ.setdefault("HYBRID_CACHE", str(Path(__file__).resolve().parents[2] / ".cache" / "test-cache"))
    root = tmp_path_factory.mktemp("real-apps")
    return write_app(root, "legal", LEGAL_DOCS, LEGAL_EX, embedder="sentence-transformers/all-MiniLM-L6-v2",
                     model="embedded", max_new_tokens=48, title="Vellmar Legal (test)",
                     description="Deposits and notice periods, from two made-up statute excerpts")


class ChildServer:
    """A server in a subprocess, its output in ``log_path``; ready when ``ready_url`` answers 200."""

    name = "server"
    ready_url = ""
    ready_headers: dict = {}

    def _start(self, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None) -> None:
        import os
        import subprocess

        self.log_path = log_path
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})

    def wait_ready(self, timeout: float = 300.0):
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.ready_url, headers=self.ready_headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:  # noqa: BLE001 - last resort for a hung server in a failed test
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class ServeProcess(ChildServer):
    """``hybrid serve`` in a subprocess on a free loopback port; ``wait_ready()`` polls /readyz."""

    name = "hybrid serve"

    def __init__(self, apps: list[Path], *args: str, env: dict | None = None, key: bool = True):
        import os
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_url = self.url + "/readyz"
        root = Path(__file__).resolve().parents[2]
        cmd = [sys.executable, "-m", "hybrid", "serve", "--port", str(self.port), *args]
        if key:
            cmd += ["--api-key", KEY]
        for a in apps:
            cmd += ["--app", str(a)]
        self._start(cmd, Path(os.environ.get("HYBRID_CACHE", "/tmp")) / f"serve-{self.port}.log", env, root)
