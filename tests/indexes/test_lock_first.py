"""Issue 14: the writer's lock is taken before the work that needs it.

A second ``hybrid index sync`` used to run its whole ingest before it met the lock. These tests make
the ingest fail in a recognisable way (a broken docs.jsonl row): if the error is the ingest's, the
ingest ran first; the fixed code answers with the lock's one line and never reads the sources.
No timing: the holder signals on stdout once it has the lock, and threads wait on events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from core.errors import LockedError
from core.io import write_jsonl
from core.types import Document
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from tests.conftest import ROOT
from tests.indexes.conftest import make_docs, snapshot

HOLD_LOCK = """
import sys
from pathlib import Path
from indexes.kb import _WriteLock
with _WriteLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()   # hold until the test closes our stdin
"""


@pytest.fixture
def holder(kb):
    """Another process holding the knowledge base's lock (yields its pid)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(kb.path)], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        yield p.pid
        assert p.poll() is None  # it still held the lock while the test ran
    finally:
        p.stdin.close()
        p.wait(timeout=60)


def broken_docs(tmp_path):
    f = tmp_path / "docs.jsonl"
    write_jsonl(f, [make_docs()[0].to_dict(), {"id": "x", "text": "y", "metadata": "not a dict"}])
    return f


def hybrid(*args):
    return subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("command", [["index", "sync"], ["index", "build", "--set", "embedder=hash",
                                                         "--set", "chunk_size=24", "--set", "chunk_overlap=4"]])
def test_second_sync_fails_on_the_lock_before_reading_its_sources(kb, holder, tmp_path, command):
    before = snapshot(kb.path)
    r = hybrid(*command, "--kb", str(kb.path), str(broken_docs(tmp_path)), "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: another sync holds the lock on {kb.path} (pid {holder})"), r.stderr
    assert "not a document row" not in r.stderr  # the sources were never read
    assert snapshot(kb.path) == before


def test_rebuild_takes_the_lock_first_and_leaves_nothing_behind(kb, holder):
    before = snapshot(kb.path)
    with pytest.raises(LockedError, match="being written by another process"):
        KnowledgeBase.rebuild(kb.path, embedder=HashEmbedder())
    assert not kb.path.with_name(kb.path.name + ".rebuild").exists()
    assert snapshot(kb.path) == before


def test_the_lock_spans_ingest_and_sync_in_one_thread_and_excludes_other_threads(kb):
    got, release = threading.Event(), threading.Event()
    other: list[BaseException] = []

    def second_writer():
        got.wait(60)
        try:
            kb.sync([Document.create("From another thread.", {"source": "t.md"})])
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
            other.append(e)
        release.set()

    t = threading.Thread(target=second_writer)
    t.start()
    with kb.lock():                        # what the CLI holds while it reads the sources
        got.set()
        assert release.wait(60)
        report = kb.sync(make_docs("2"))   # the holder itself may write (the lock is re-entrant per thread)
    t.join(60)
    assert report.updated == 6
    assert len(other) == 1 and isinstance(other[0], LockedError), other
    # released: the other thread's write goes through now
    assert kb.sync([Document.create("From another thread.", {"source": "t.md"})]).added == 1


def test_cli_sync_still_writes_when_nobody_holds_the_lock(kb, tmp_path):
    f = tmp_path / "docs.jsonl"
    write_jsonl(f, (d.to_dict() for d in make_docs("2")))
    kb.close()
    r = hybrid("index", "sync", "--kb", str(kb.path), str(f), "-q")
    assert r.returncode == 0, r.stderr
    assert "updated 6" in r.stdout
    stats = json.loads(hybrid("index", "stats", "--kb", str(kb.path), "--json").stdout)
    assert stats["documents"] == 6 and stats["generation"] == 2
