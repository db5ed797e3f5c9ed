"""Batched serving: the settings, the backend wiring, and a real server batching real-model answers.

Nothing set means nothing changes: one answer at a time, the app's own generator, no batcher.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from pydantic import ValidationError

from tests.api.conftest import AUTH, wait_until


def test_defaults_are_todays_one_at_a_time_service(monkeypatch):
    from apps.api.settings import ServiceSettings

    for var in ("HYBRID_API_BATCH_MAX_SIZE", "HYBRID_API_BATCH_WINDOW_MS", "HYBRID_API_CONCURRENCY"):
        monkeypatch.delenv(var, raising=False)
    s = ServiceSettings()
    assert (s.batch_max_size, s.concurrency, s.batching) == (1, 1, False)


def test_batching_opens_one_slot_per_row_unless_concurrency_is_given(monkeypatch):
    from apps.api.settings import ServiceSettings

    monkeypatch.delenv("HYBRID_API_CONCURRENCY", raising=False)
    assert ServiceSettings(batch_max_size=8).concurrency == 8
    assert ServiceSettings(batch_max_size=8, concurrency=2).concurrency == 2
    monkeypatch.setenv("HYBRID_API_BATCH_MAX_SIZE", "4")
    monkeypatch.setenv("HYBRID_API_BATCH_WINDOW_MS", "20")
    s = ServiceSettings()
    assert (s.batch_max_size, s.batch_window_ms, s.concurrency) == (4, 20.0, 4)


def test_one_answer_prepares_its_prompt_at_a_time_unless_told(monkeypatch):
    from apps.api.settings import ServiceSettings

    monkeypatch.delenv("HYBRID_API_BATCH_PREP_CONCURRENCY", raising=False)
    assert ServiceSettings(batch_max_size=8).batch_prep_concurrency == 1
    monkeypatch.setenv("HYBRID_API_BATCH_PREP_CONCURRENCY", "0")  # 0: no limit, as before
    assert ServiceSettings(batch_max_size=8).batch_prep_concurrency == 0


@pytest.mark.parametrize("field,value,msg", [
    ("batch_max_size", 0, "greater than or equal to 1"),
    ("batch_max_size", 65, "less than or equal to 64"),
    ("batch_window_ms", -1, "greater than or equal to 0"),
    ("batch_window_ms", "soon", "valid number"),
    ("batch_max_wait_ms", 6000, "less than or equal to 5000"),
    ("batch_prep_concurrency", -1, "greater than or equal to 0"),
])
def test_bad_batch_settings_are_refused(field, value, msg):
    from apps.api.settings import ServiceSettings

    with pytest.raises(ValidationError, match=msg):
        ServiceSettings(**{field: value})


def test_nothing_set_leaves_the_apps_generators_alone(tiny_apps, monkeypatch):
    from apps.api.backend import RealBackend

    monkeypatch.delenv("HYBRID_API_BATCH_MAX_SIZE", raising=False)
    b = RealBackend(tiny_apps)
    b.load()
    assert b.batching.batch_max_size == 1 and b.batch_stats() == {}
    assert {type(b._assistant(n).generator).__name__ for n in b.app_names()} == {"ScriptedGenerator"}


def test_batching_skips_a_backend_it_cannot_batch_with_a_warning(tiny_apps, caplog):
    from apps.api.backend import RealBackend
    from apps.api.settings import BatchingSettings

    with caplog.at_level(logging.WARNING, logger="apps.api.backend"):
        b = RealBackend(tiny_apps[:1], batching=BatchingSettings(batch_max_size=4))
    assert b.batch_stats() == {}
    assert "batched serving needs the transformers backend; ScriptedGenerator answers one at a time" in caplog.text


def _stream(url: str, question: str, out: dict, i: int, disconnect_after_first: bool = False) -> None:
    import httpx

    body = {"app": "legal", "question": question, "strategy": "rag", "stream": True, "max_new_tokens": 48}
    events: list[str] = []
    with httpx.Client(headers=AUTH, timeout=600) as c, c.stream("POST", url + "/v1/ask", json=body) as r:
        out[i] = {"status": r.status_code, "events": events}
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
                if disconnect_after_first and line == "event: token":
                    return  # leaving the block closes the connection mid-answer
            elif line.startswith("data: ") and events and events[-1] == "final":
                out[i]["answer"] = json.loads(line[6:])


@pytest.mark.slow
def test_a_real_server_batches_concurrent_answers_and_drops_a_disconnected_row(live, real_model_app):
    """Three concurrent streamed rag answers from the real model ride one batch (the window is huge,
    so the batch starts only when all three are in); one client leaves after its first token: its row
    stops (counted) and the two others still get whole answers."""
    from apps.api.backend import RealBackend
    from apps.api.settings import BatchingSettings

    # a 10-minute window is past the 1 s the setting allows: built unvalidated, for this test only
    backend = RealBackend([real_model_app],
                          batching=BatchingSettings.model_construct(batch_max_size=3, batch_window_ms=600_000))
    srv = live(backend, concurrency=3, queue_size=2, request_timeout=600)
    out: dict = {}
    qs = ["How much can a deposit be?", "How much notice must a landlord give?",
          "Explain the deposit rules and the notice periods in detail, step by step."]
    threads = [threading.Thread(target=_stream, args=(srv.url, q, out, i, i == 2)) for i, q in enumerate(qs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert [out[i]["status"] for i in range(3)] == [200, 200, 200]
    for i in (0, 1):
        assert out[i]["events"][0] == "token" and out[i]["events"][-1] == "final", out[i]["events"]
        assert out[i]["answer"]["strategy"] == "rag" and out[i]["answer"]["answer"].strip()
    assert "answer" not in out[2]
    # the server notices the disconnect on its next write; the row then stops at the next step
    wait_until(lambda: backend.batch_stats()["legal"]["cancelled_rows"] == 1, "the disconnected row to stop", 300)
    stats = backend.batch_stats()["legal"]
    assert stats["sizes"] == {"3": 1} and stats["rows"] == 3
