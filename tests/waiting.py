"""One bounded wait for every test that must see something happen: generous limits, because a slow
machine is not a failure, while a hang still fails with what was awaited."""

from __future__ import annotations

import time


def wait_until(condition, what: str, timeout: float = 60.0, interval: float = 0.01):
    """Poll ``condition()`` until it returns something truthy, and return that; ``AssertionError``
    naming ``what`` after ``timeout`` seconds. ``condition`` may itself assert (e.g. that a child
    process is still alive), which ends the wait at once with its own message."""
    end = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(interval)
