"""Running the service under uvicorn with a draining shutdown (used by ``hybrid serve``)."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

log = logging.getLogger("hybrid.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM meaning: flip readiness, let in-flight requests and upload ingest jobs
    finish (up to ``grace`` seconds), then stop.

    uvicorn re-raises a captured signal after shutdown (the process would die of SIGTERM); a
    drained shutdown is a clean one, so it is not recorded and the exit code is 0.
    """

    def __init__(self, config, service, grace: float):
        super().__init__(config)
        self.service = service
        self.grace = grace
        self._draining = False

    def handle_exit(self, sig, frame) -> None:  # called from the signal handler
        if self._draining:
            self.force_exit = True
            self.should_exit = True
            return
        self._draining = True
        self.service.draining = True
        log.info("signal %s: draining (%d in flight, %d upload job(s), grace %.0fs)", sig,
                 *self.service.pending(), self.grace)
        threading.Thread(target=self._drain, name="hybrid-drain", daemon=True).start()

    def _drain(self) -> None:
        end = time.monotonic() + self.grace
        # A short pause even when idle lets load balancers see /readyz 503 before the port closes.
        time.sleep(min(0.5, self.grace))
        requests, jobs = wait_idle(self.service, max(0.0, end - time.monotonic()))
        if requests or jobs:
            log.warning("drain grace over with %d request(s) and %d upload job(s) still running", requests, jobs)
        self.should_exit = True


def wait_idle(service, grace: float, poll: float = 0.05) -> tuple[int, int]:
    """Wait up to ``grace`` seconds until no request is in flight and no upload job is queued or
    running (an ingest cut midway is an upload lost); what was still pending, (0, 0) when idle."""
    end = time.monotonic() + grace
    while True:
        pending = service.pending()
        if not any(pending) or time.monotonic() >= end:
            return pending
        time.sleep(poll)
