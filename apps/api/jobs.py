"""Upload jobs: files land in a per-app area under names we choose, then ingest runs in the background.

A client's file name is only ever a hint: ``safe_filename`` keeps a short run of safe characters
from its last component, so ``../../etc/passwd`` or ``C:\\boot.ini`` can never name a path.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 80


def safe_filename(name: str | None, index: int = 0) -> str:
    """A file name safe to join under the upload directory, keeping the extension when it can.

    >>> safe_filename("../../etc/passwd")
    'passwd'
    >>> safe_filename("..\\\\..\\\\boot.ini")
    'boot.ini'
    >>> safe_filename("....", 3)
    'upload-3'
    """
    base = (name or "").replace("\\", "/").split("/")[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = _UNSAFE.sub("_", base).lstrip(".-_")
    if not base or set(base) <= {".", "_", "-"}:
        return f"upload-{index}"
    if len(base) > MAX_NAME:
        stem, dot, ext = base.rpartition(".")
        ext = ext[:10] if dot else ""
        base = (stem or base)[: MAX_NAME - len(ext) - 1] + ("." + ext if ext else "")
    return base


@dataclass
class Job:
    id: str
    app: str
    files: list[str]
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    stage: str = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    """In-memory jobs run one at a time on a background thread (knowledge-base writes are serial).

    >>> store = JobStore()
    >>> job = store.submit("legal", ["a.txt"], lambda progress: {"documents": 1})
    >>> store.wait(job.id, 5).status
    'done'
    """

    def __init__(self, max_jobs: int = 1000, on_finish: Callable[[Job], None] | None = None):
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hybrid-ingest")
        self._done = threading.Condition(self._lock)
        self.max_jobs = max_jobs
        self.on_finish = on_finish

    @staticmethod
    def new_id() -> str:
        return "job_" + secrets.token_hex(8)

    def submit(self, app: str, files: list[str], work: Callable[[Callable[[str, float], None]], dict],
               job_id: str | None = None) -> Job:
        job = Job(job_id or self.new_id(), app, files)
        with self._lock:
            if len(self._jobs) >= self.max_jobs:  # forget the oldest finished jobs
                for jid in [j.id for j in sorted(self._jobs.values(), key=lambda j: j.created)
                            if j.status in ("done", "failed")][: len(self._jobs) - self.max_jobs + 1]:
                    del self._jobs[jid]
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work) -> None:
        def progress(stage: str, fraction: float) -> None:
            with self._lock:
                job.stage, job.progress = stage, round(max(0.0, min(1.0, fraction)), 3)

        with self._lock:
            job.status, job.stage = "running", "starting"
        try:
            report = work(progress)
            with self._lock:
                job.status, job.report, job.progress, job.stage = "done", report, 1.0, "done"
        except Exception as e:  # noqa: BLE001 - a failed job is reported, never crashes the server
            with self._lock:
                job.status, job.error, job.stage = "failed", f"{type(e).__name__}: {e}", "failed"
        finally:
            with self._lock:
                job.finished = time.time()
                self._done.notify_all()
            if self.on_finish:
                self.on_finish(job)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout: float) -> Job | None:
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                job = self._jobs.get(job_id)
                if job is None or job.status in ("done", "failed"):
                    return job
                left = end - time.monotonic()
                if left <= 0:
                    return job
                self._done.wait(left)

    def active(self) -> int:
        """Jobs queued or running: SIGTERM drain waits for these (an ingest cut midway is lost work)."""
        with self._lock:
            return sum(j.status in ("queued", "running") for j in self._jobs.values())

    def files_for(self, app: str) -> set[str]:
        """Stored file names of the app's jobs that are queued, running or done (not failed): the
        names an upload may not reuse, including jobs whose documents are not in the KB yet."""
        with self._lock:
            return {f for j in self._jobs.values() if j.app == app and j.status != "failed" for f in j.files}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
