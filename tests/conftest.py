"""Shared fixtures. Every test runs with outbound network blocked: only loopback is allowed."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HYBRID_SHARED", ROOT.parent / "shared"))
DOCS = SHARED / "data" / "docs"
EDGE = DOCS / "edge"


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guard_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guard_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _block_network(monkeypatch):
    """Fail any outbound connection that is not to loopback."""
    monkeypatch.setattr(socket.socket, "connect", _guard_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guard_connect_ex)
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each session shares one cache dir (converted models are reused), never the user's."""
    if "HYBRID_CACHE" not in os.environ:
        cache = ROOT / ".cache" / "test-cache"
        cache.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("HYBRID_CACHE", str(cache))
    yield


@pytest.fixture
def shared_docs() -> Path:
    if not DOCS.is_dir():
        pytest.skip(f"shared sample documents not found at {DOCS}")
    return DOCS
