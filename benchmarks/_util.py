"""Helpers shared by the benchmarks: timing, percentiles, peak RSS, machine facts, child processes.

Peak RSS is taken from the kernel, not sampled: ``ru_maxrss`` of a process is its high-water mark.
For one system per child process, ``run_child`` reads the child's own ``ru_maxrss`` through
``os.wait4``, so each system's figure is its own and no system inherits another's memory.
Within one process (the scale benchmark) ``RssSampler`` samples RSS in a thread to give the peak
growth of one phase over its starting point.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_MACHINE_NOTE = (
    "timings taken on a shared 2-core machine (other jobs were running at the same time); "
    "compare systems within one run, not across runs"
)


def now() -> float:
    return time.perf_counter()


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    """``with timed(t, "build"): ...`` stores the elapsed seconds in ``t["build"]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = time.perf_counter() - t0


def percentile(values: Sequence[float], q: float, *, method: str = "linear") -> float:
    """The ``q``-th percentile (0-100) by ``np.percentile``: every benchmark's one percentile.

    ``method="linear"`` (numpy's default) interpolates between neighbours; ``"nearest"`` picks the
    nearest observed value (index rounded half to even), what the serving and pipeline figures use.
    """
    if not len(values):
        raise ValueError("percentile of no values")
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q, method=method))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds."""
    return {"p50_ms": round(percentile(seconds, 50) * 1000, 3),
            "p95_ms": round(percentile(seconds, 95) * 1000, 3),
            "mean_ms": round(statistics.fmean(seconds) * 1000, 3),
            "n": len(seconds)}


def self_peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return self_peak_rss_mb()


class RssSampler:
    """Peak RSS growth of a phase, sampled every ``interval`` seconds in a daemon thread.

        with RssSampler() as s:
            build()
        s.peak_delta_mb
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def __enter__(self) -> "RssSampler":
        self.start_mb = self.peak_mb = current_rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())

    @property
    def peak_delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so the next phase's RSS growth starts
    from a true floor instead of reusing memory a previous phase freed."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_child(args: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None,
              nice: int = 0) -> tuple[int, str, str, float, float]:
    """Run a child process; return (exit code, stdout, stderr, its own peak RSS in MiB, wall seconds).

    ``os.wait4`` hands back the child's rusage, so the RSS is that child's high-water mark alone.
    """
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, env=env,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                usage.ru_maxrss / 1024.0, time.perf_counter() - t0)


def machine_info() -> dict[str, Any]:
    """Facts that make a result interpretable later."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "note": SHARED_MACHINE_NOTE}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="ignore")
        m = re.search(r"model name\s*:\s*(.+)", cpuinfo)
        info["cpu"] = m.group(1).strip() if m else None
        info["cpu_bf16_flags"] = sorted(set(re.findall(r"\b(amx_bf16|avx512_bf16)\b", cpuinfo)))
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for mod in ("torch", "faiss", "sentence_transformers", "transformers", "numpy",
                "langchain_core", "langchain_community", "langchain_huggingface", "langchain_classic", "rank_bm25"):
        try:
            from importlib.metadata import version

            dist = {"faiss": "faiss-cpu", "sentence_transformers": "sentence-transformers"}.get(mod, mod.replace("_", "-"))
            info.setdefault("versions", {})[mod] = version(dist)
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    return info


def write_json(path: Path, data: Any) -> None:
    """Results are small; write them atomically so an interrupted run never leaves half a file."""
    sys.path.insert(0, str(ROOT))
    from core.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
