"""`hybrid index ...` and `hybrid search ...` end to end, in subprocesses (the hash embedder keeps them fast)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.io import write_jsonl
from tests.conftest import ROOT
from tests.indexes.conftest import make_docs


def run(*args, ok=True):
    r = subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def built(tmp_path):
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, (d.to_dict() for d in make_docs()))
    kb = tmp_path / "kb"
    r = run("index", "build", "--kb", str(kb), str(docs), "--set", "embedder=hash", "--set", "chunk_size=24", "--set", "chunk_overlap=4", "-q")
    assert "added 6, updated 0, unchanged 0, deleted 0 documents" in r.stdout
    return kb, docs


def test_build_sync_stats_search(built, tmp_path):
    kb, docs = built
    r = run("index", "sync", "--kb", str(kb), str(docs), "-q")
    assert "nothing to do: 6 documents unchanged, embedded 0 chunks" in r.stdout
    stats = json.loads(run("index", "stats", "--kb", str(kb), "--json").stdout)
    assert stats["documents"] == 6 and stats["embedder"] == "hash-embedder" and stats["index"] == "flat"
    r = run("search", "how much does an appeal cost", "--kb", str(kb), "-k", "2")
    first = r.stdout.splitlines()[0]
    assert first.startswith(" 1. ") and "court-fees.csv p.2" in first and "dense=" in first and "bm25=" in first
    hits = json.loads(run("search", "holiday", "--kb", str(kb), "-k", "3", "--json", "--filter", "source=employment.docx|lease.md",
                          "--filter", "modified>=2023-01-01").stdout)
    assert hits and {h["source"] for h in hits} <= {"employment.docx", "lease.md"}
    assert hits[0]["source"] == "employment.docx" and hits[0]["rank"] == 1
    # prune with a smaller docs.jsonl
    small = tmp_path / "small.jsonl"
    write_jsonl(small, (d.to_dict() for d in make_docs()[:2]))
    assert "deleted 4 documents" in run("index", "sync", "--kb", str(kb), str(small), "--prune", "-q").stdout
    # rebuild from the stored documents with another index kind
    r = run("index", "rebuild", "--kb", str(kb), "--set", "index=hnsw", "-q")
    assert "rebuilt: added 2" in r.stdout
    assert json.loads(run("index", "stats", "--kb", str(kb), "--json").stdout)["index"] == "hnsw"


def test_build_from_a_folder_goes_through_the_connectors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.md").write_text("# Parking\n\nVisitors park in bay 7 behind the library.\n")
    (src / "menu.txt").write_text("Soup of the day is tomato with basil.\n")
    kb = tmp_path / "kb"
    r = run("index", "build", "--kb", str(kb), str(src), "--set", "embedder=hash", "-q")
    assert "added 2" in r.stdout
    out = run("search", "where do visitors park", "--kb", str(kb), "-k", "1", "--mode", "bm25").stdout
    assert "notes.md" in out and "bay 7" in out


@pytest.mark.parametrize("args,msg", [
    (["search", "", "-k", "2"], "error: query is empty"),
    (["search", "lease", "-k", "0"], "error: k must be > 0, got 0"),
    (["search", "lease", "-k", "999"], "error: k=999 is larger than the knowledge base"),
    (["search", "lease", "--filter", "author=me"], "error: unknown filter field 'author'"),
    (["search", "lease", "--filter", "author"], "error: filter 'author' must look like"),
])
def test_user_errors_are_one_line_exit_2(built, args, msg):
    kb, _ = built
    r = run(*args, "--kb", str(kb), ok=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(msg), r.stderr


def test_missing_kb_and_changed_settings_are_clear(built, tmp_path):
    kb, docs = built
    r = run("search", "lease", "--kb", str(tmp_path / "nope"), ok=False)
    assert r.returncode == 2 and "no knowledge base in" in r.stderr and "hybrid index build" in r.stderr
    r = run("index", "build", "--kb", str(kb), str(docs), "--set", "embedder=hash", "--set", "chunk_size=100", "-q", ok=False)
    assert r.returncode == 2 and "chunk_size: stored 24, asked 100" in r.stderr and "hybrid index rebuild" in r.stderr
