"""Run each parse in a worker process with a deadline and a memory cap.

Why processes: the parsers are C extensions (PDFium, lxml, zlib) and pure-Python libraries with
loops we do not control. A thread cannot be stopped from outside, and a signal-based alarm does not
fire while C code holds the GIL, so only a separate process can bound a hang: when a document
overruns ``parse_timeout_s`` its worker gets SIGKILL, the document is a counted skip (``timeout``)
and a fresh worker takes its place. Memory is bounded with ``RLIMIT_DATA`` in the worker (heap and
anonymous mappings, i.e. what a decompression bomb grows), so an allocation past the cap raises
``MemoryError`` there (skip ``too_large``) or kills only that worker (skip ``crashed``).

Workers are fresh interpreters (``python -m connectors.isolation``), never forks: the caller may hold
torch or tokenizer threads, and unlike multiprocessing's spawn they do not re-import the caller's
``__main__``. They talk JSON over pipes and live as long as the calling process, so repeated
ingests pay the start-up once.

    pool = ParsePool(workers=2, memory_mb=2048)
    for task_id, outcome in pool.run([(0, b"hello", "a.txt", None)], cfg):
        ...  # outcome is a Parsed or a SkipError
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import IO, Any, Iterable, Iterator

from connectors.config import IngestConfig
from connectors.formats import Parsed, Part
from core.errors import SkipError

log = logging.getLogger(__name__)

Task = tuple[int, bytes, str, "str | None"]  # (task id, raw bytes, name, kind such as '.pdf')

# Messages are a 4-byte big-endian length plus a JSON header; a request is followed by the raw
# bytes. JSON (not pickle) keeps the channel dumb: nothing the worker sends can run code here.
_LEN = struct.Struct(">I")
_STARTUP_TIMEOUT_S = 120.0  # a fresh interpreter on a loaded machine; not a parse budget


def _send(stream: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    blob = json.dumps(header, ensure_ascii=False).encode("utf-8")
    stream.write(_LEN.pack(len(blob)) + blob + payload)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("worker closed its pipe")
        buf += chunk
    return bytes(buf)


def _recv(stream: IO[bytes]) -> dict[str, Any]:
    (n,) = _LEN.unpack(_read_exact(stream, _LEN.size))
    return json.loads(_read_exact(stream, n))


def worker_main(memory_mb: int, allow_torch: bool = False) -> None:
    """Loop over stdin requests and answer on stdout ('ok' or 'skip')."""
    if not allow_torch:
        # spaCy's thinc imports torch when it can, which costs ~180 MB and seconds per worker, yet
        # the small English model runs on numpy. Only the hi-res PDF path needs torch.
        sys.modules["torch"] = None  # type: ignore[assignment]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if memory_mb:
        import resource

        cap = memory_mb * 1024 * 1024
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
        except (ValueError, OSError):  # not permitted here: the deadline still bounds the parse
            pass
    import warnings

    warnings.simplefilter("ignore")  # library chatter would interleave with the CLI's table
    from connectors.formats import parse_bytes

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() in a parser must not corrupt the channel
    _send(stdout, {"ready": True})  # start-up time must not count against the first document
    while True:
        try:
            req = _recv(stdin)
        except EOFError:
            return
        data = _read_exact(stdin, req["size"])
        try:
            parsed = parse_bytes(data, req["name"], IngestConfig(**req["cfg"]), req["kind"])
            reply: dict[str, Any] = {
                "status": "ok",
                "parts": [[p.text, p.meta] for p in parsed.parts],
                "skips": parsed.skips,
                "meta": parsed.meta,
                "notes": parsed.notes,
            }
        except SkipError as e:
            reply = {"status": "skip", "reason": e.reason, "message": str(e)}
        except MemoryError:
            reply = {"status": "skip", "reason": "too_large",
                     "message": f"parsing needed more than parse_memory_mb={memory_mb} MiB"}
        except RecursionError:
            reply = {"status": "skip", "reason": "corrupt", "message": "document nests too deeply to parse"}
        except Exception as e:  # noqa: BLE001 - a parser bug is one skipped document, not a dead batch
            reply = {"status": "skip", "reason": "parse_error", "message": f"{type(e).__name__}: {str(e)[:300]}"}
        del data
        try:
            _send(stdout, {"id": req["id"], **reply})
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, memory_mb: int, allow_torch: bool):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The parent's sys.path (editable installs, test runners) must be visible to the worker.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connectors.isolation", str(memory_mb), "torch" if allow_torch else "no-torch"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.task: int | None = None
        self.deadline = 0.0

    @property
    def out(self) -> IO[bytes]:
        return self.proc.stdout  # type: ignore[return-value]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, task_id: int, data: bytes, name: str, kind: str | None, cfg: dict[str, Any]) -> None:
        _send(self.proc.stdin,  # type: ignore[arg-type]
              {"id": task_id, "name": name, "kind": kind, "cfg": cfg, "size": len(data)}, data)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(5)
        for s in (self.proc.stdin, self.proc.stdout):
            try:
                s.close()  # type: ignore[union-attr]
            except OSError:
                pass


class ParsePool:
    """A small pool of parse workers with per-task deadlines (see the module docstring)."""

    def __init__(self, *, workers: int, memory_mb: int, allow_torch: bool = False):
        self.size = max(1, workers)
        self.memory_mb = memory_mb
        self.allow_torch = allow_torch
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one run at a time: workers are not shared between callers

    def run(self, tasks: Iterable[Task], cfg: IngestConfig) -> Iterator[tuple[int, Parsed | SkipError]]:
        """Yield ``(task_id, Parsed | SkipError)`` as parses finish (not in submission order)."""
        cfg_dict = dataclasses.asdict(cfg)
        pending = iter(tasks)
        with self._lock:
            for w in [w for w in self._workers if not w.alive()]:
                self._drop(w)
            idle: list[_Worker] = list(self._workers)
            busy: dict[Any, _Worker] = {}
            exhausted = False
            try:
                while True:
                    while not exhausted and (idle or len(self._workers) < self.size):
                        nxt = next(pending, None)
                        if nxt is None:
                            exhausted = True
                            break
                        task_id, data, name, kind = nxt
                        w = idle.pop() if idle else self._start()  # workers start on demand
                        try:
                            w.submit(task_id, data, name, kind, cfg_dict)
                        except (BrokenPipeError, OSError):
                            self._drop(w)
                            w = self._start()
                            w.submit(task_id, data, name, kind, cfg_dict)
                        w.task, w.deadline = task_id, time.monotonic() + cfg.parse_timeout_s
                        busy[w.out] = w
                    if not busy:
                        return
                    timeout = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
                    for out in wait(list(busy), timeout=timeout):
                        w = busy.pop(out)
                        task_id = w.task
                        try:
                            reply = _recv(w.out)
                        except (EOFError, OSError, ValueError):
                            code = w.proc.wait(5)
                            self._drop(w)
                            yield task_id, SkipError(  # type: ignore[misc]
                                "crashed", f"parser process died (exit code {code}): memory cap or a parser crash"
                            )
                            continue
                        w.task = None
                        idle.append(w)
                        yield task_id, _from_reply(reply)  # type: ignore[misc]
                    now = time.monotonic()
                    for out, w in list(busy.items()):
                        if now >= w.deadline:
                            busy.pop(out)
                            log.warning("parse of task %s exceeded %.1fs; killing its worker", w.task, cfg.parse_timeout_s)
                            self._drop(w)
                            yield w.task, SkipError(  # type: ignore[misc]
                                "timeout", f"parsing took longer than parse_timeout_s={cfg.parse_timeout_s:g}s"
                            )
            finally:
                # A caller that stops early leaves parses in flight; their late replies must not
                # reach the next run, so those workers are replaced.
                for w in list(busy.values()):
                    self._drop(w)

    def _start(self) -> _Worker:
        w = _Worker(self.memory_mb, self.allow_torch)
        if not wait([w.out], timeout=_STARTUP_TIMEOUT_S):
            w.kill()
            raise RuntimeError(f"parse worker did not start within {_STARTUP_TIMEOUT_S}s")
        try:
            _recv(w.out)  # the ready message
        except (EOFError, OSError, ValueError):
            code = w.proc.wait(5)
            raise RuntimeError(f"parse worker failed to start (exit code {code})") from None
        self._workers.append(w)
        return w

    def _drop(self, w: _Worker) -> None:
        w.kill()
        self._workers = [x for x in self._workers if x is not w]

    def close(self) -> None:
        for w in self._workers:
            try:
                w.proc.stdin.close()  # type: ignore[union-attr]  # EOF: the worker returns
            except OSError:
                pass
        for w in self._workers:
            try:
                w.proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        self._workers = []


def _from_reply(reply: dict[str, Any]) -> Parsed | SkipError:
    if reply["status"] == "ok":
        return Parsed([Part(t, m) for t, m in reply["parts"]], [tuple(s) for s in reply["skips"]], reply["meta"],
                      [tuple(n) for n in reply.get("notes", [])])
    return SkipError(reply["reason"], reply["message"])


_POOLS: dict[tuple[int, bool], ParsePool] = {}


def shared_pool(cfg: IngestConfig, n_tasks: int | None = None) -> ParsePool:
    """The process-wide pool for this config's size and memory cap, created on first use."""
    size = cfg.workers or min(4, os.cpu_count() or 1)
    if n_tasks is not None:
        size = max(1, min(size, n_tasks))
    key = (cfg.parse_memory_mb, cfg.pdf_strategy == "hi_res")
    pool = _POOLS.get(key)
    if pool is None or pool.size < size:
        # Keep at most one live pool: a bigger one or other worker settings replace the old one.
        for old in list(_POOLS):
            _POOLS.pop(old).close()
        pool = _POOLS[key] = ParsePool(workers=size, memory_mb=key[0], allow_torch=key[1])
    return pool


@atexit.register
def _close_pools() -> None:
    for key in list(_POOLS):
        _POOLS.pop(key).close()


if __name__ == "__main__":
    worker_main(int(sys.argv[1]) if len(sys.argv) > 1 else 0, len(sys.argv) > 2 and sys.argv[2] == "torch")
