"""kill -9 at random moments during sync: afterwards the knowledge base opens with the old or the new content."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from indexes.config import IndexConfig
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from tests.conftest import ROOT

N_STATIC = 600  # unchanged documents: they make each generation's files big, so file writes take time
N_DOCS = 6  # documents rewritten by every sync

WRITER = """
import sys
from core.types import Document
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase

STATIC = [Document(f"static{j}", f"Appendix {j} lists furniture item {j} and its condition. " * 4,
                   {"source": f"a{j}.md"}) for j in range(%d)]

def docs(v):
    return STATIC + [Document(f"doc{j}", f"Clause {j} of the contract, version v{v}. " * 3, {"source": f"s{j}.md"})
                     for j in range(%d)]

kb = KnowledgeBase.open(sys.argv[1], embedder=HashEmbedder())
v = int(sys.argv[2])
from indexes.chunking import chunk_documents  # warm the imports, so kills land in syncs, not in imports
chunk_documents(STATIC[:1], kb.cfg, kb.embedder)
print("ready", flush=True)
while True:
    v += 1
    kb.sync(docs(v))
    print(v, flush=True)
""" % (N_STATIC, N_DOCS)


def versions(kb: KnowledgeBase) -> set[str]:
    import re

    return {re.search(r"version (v\d+)", d.text).group(1) for d in kb.documents() if d.id.startswith("doc")}


@pytest.mark.slow
def test_kill_9_during_sync_never_leaves_a_mix(tmp_path):
    path = tmp_path / "kb"
    cfg = IndexConfig(embedder="hash", chunk_size=40, chunk_overlap=0)
    # the first (big) sync happens here, so every writer below only rewrites the few changing documents
    with KnowledgeBase.create(path, cfg, embedder=HashEmbedder()) as kb:
        ns: dict = {}
        exec(WRITER.split("kb = KnowledgeBase.open")[0], ns)  # the writer's own document builder
        kb.sync(ns["docs"](0))
    rng = random.Random(1234)
    start_version = 0
    kills = mid_write = 0
    seen_versions = set()
    while kills < 50:
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start_version)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        # evidence the kill landed inside a write: temp files or a generation the manifest does not name yet
        names = {f.name for f in path.iterdir()}
        with KnowledgeBase.open(path, embedder=HashEmbedder(), readonly=True) as kb:
            current = set(kb.manifest["files"].values())
            newer = [n for n in names if n.startswith("gen-") and int(n[4:10]) > kb.generation]
            if any(n.endswith(".tmp") for n in names) or newer:
                mid_write += 1
            s = kb.stats()
            assert current <= names
            if s["documents"]:
                v = versions(kb)
                assert len(v) == 1, f"kill {kills}: a mix of versions {v}"
                assert s["documents"] == N_STATIC + N_DOCS and s["chunks"] == s["vectors"]
                hit = kb.search("clause of the contract version", k=3, filters={"source": [f"s{j}.md" for j in range(N_DOCS)]})[0]
                assert f"version {next(iter(v))}." in hit.chunk.text
                seen_versions |= v
                start_version = int(next(iter(v))[1:]) + 1000 * kills  # next writer writes fresh versions
            else:
                assert s["chunks"] == 0
    print(f"{kills} kills, {mid_write} inside a write, {len(seen_versions)} distinct versions seen")
    assert kills >= 50
    assert mid_write >= 1, "no kill landed during a write; the test proved nothing"
    assert len(seen_versions) > 5  # syncs really completed between kills


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("step", ["copy", "faiss", "rename", "manifest"])
def test_failure_at_each_write_step_keeps_the_old_generation(tmp_path, monkeypatch, step):
    """Deterministic companion of the kill loop: fail at each step of publishing a generation."""
    import shutil

    from core.types import Document
    from indexes import store
    from indexes.vectors import VectorIndex

    path = tmp_path / "kb"
    cfg = IndexConfig(embedder="hash")
    old = [Document(f"d{i}", f"Clause {i}, version old.", {"source": f"s{i}"}) for i in range(5)]
    new = [Document(f"d{i}", f"Clause {i}, version new.", {"source": f"s{i}"}) for i in range(5)]
    with KnowledgeBase.create(path, cfg, embedder=HashEmbedder()) as kb:
        kb.sync(old)

        def boom(*a, **k):
            raise Boom(step)

        target = {"copy": (shutil, "copyfile"), "faiss": (VectorIndex, "save"),
                  "rename": (store.os, "replace"), "manifest": (store, "atomic_write_text")}[step]
        with monkeypatch.context() as m:
            m.setattr(*target, boom)
            with pytest.raises(Boom):
                kb.sync(new)
        # the same object and a fresh one both still serve the old generation
        for k in (kb, KnowledgeBase.open(path, embedder=HashEmbedder())):
            assert {d.text.split("version ")[1] for d in k.documents()} == {"old."}
            assert "version old" in k.search("clause version", k=1)[0].chunk.text
        assert not [f for f in path.iterdir() if f.name.endswith(".tmp")]  # temp files cleaned up
        # and the next sync goes through
        assert kb.sync(new).updated == 5
        assert {d.text.split("version ")[1] for d in kb.documents()} == {"new."}
