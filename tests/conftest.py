"""Shared fixtures. Every test runs with outbound network blocked: only loopback is allowed."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: each worker (and the servers it starts) takes one
    # thread, so OpenMP threads of two workers never spin against each other on a 2-core machine
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]


class _SharedPath(type(Path())):
    """A path into the shared data (``../shared`` or $HYBRID_SHARED). Listing or opening it when it
    is absent skips, with the reason, whatever asked: a test, a fixture, or a module at import time
    (which then skips whole instead of failing collection). ``exists``/``is_file`` still answer."""

    def _missing(self) -> None:
        if not self.exists():
            pytest.skip(f"shared data not found: {self} (set HYBRID_SHARED to its folder)", allow_module_level=True)

    def iterdir(self):
        self._missing()
        return super().iterdir()

    def glob(self, pattern):
        self._missing()
        return super().glob(pattern)

    def rglob(self, pattern):
        self._missing()
        return super().rglob(pattern)

    def open(self, *args, **kwargs):  # read_text and read_bytes go through here
        self._missing()
        return super().open(*args, **kwargs)


SHARED = _SharedPath(os.environ.get("HYBRID_SHARED", ROOT.parent / "shared"))
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


_SHARED_NAMES = {"SHARED", "DOCS", "EDGE"}


def _reads_shared(func, module, seen: set) -> bool:
    """Whether ``func``, or a function of its own module that it calls, names SHARED/DOCS/EDGE."""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names, stack = set(), [code]
    while stack:  # nested functions, lambdas and comprehensions have code objects of their own
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, type(code)))
    if names & _SHARED_NAMES:
        return True
    return any(_reads_shared(getattr(module, n), module, seen) for n in names
               if getattr(getattr(module, n, None), "__module__", None) == module.__name__)


@pytest.fixture(autouse=True)
def _skip_without_shared_data(request):
    """Without the shared folder, a test that reads it (itself, through a helper of its module, or
    through a fixture) skips with the reason instead of erroring on a missing file."""
    if DOCS.parent.is_dir():
        return
    funcs = [request.function]
    for name, defs in request.node._fixtureinfo.name2fixturedefs.items():  # every fixture the test uses
        if name not in ("_skip_without_shared_data", "shared_docs"):  # these name the paths to check them
            funcs.extend(d.func for d in defs)
    seen: set = set()
    if any(_reads_shared(f, sys.modules.get(getattr(f, "__module__", "")) or request.module, seen) for f in funcs):
        pytest.skip(f"shared data not found at {SHARED} ({request.node.name} reads it; "
                    "set HYBRID_SHARED to its folder)")


@pytest.fixture
def shared_docs() -> Path:
    if not DOCS.is_dir():
        pytest.skip(f"shared sample documents not found at {DOCS}")
    return DOCS
