"""Every bad input from issue 3: a clear error, and the knowledge base is left exactly as it was."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.errors import CorruptKnowledgeBaseError, InputError, KnowledgeBaseError, LockedError, ModelError
from core.types import Document
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from tests.conftest import ROOT
from tests.indexes.conftest import snapshot


def assert_unchanged(kb, before, query="tenant notice"):
    assert snapshot(kb.path) == before
    with KnowledgeBase.open(kb.path, embedder=HashEmbedder()) as again:
        assert again.stats()["documents"] == 6
        assert again.search(query, k=1)[0].chunk.metadata["source"] == "lease.md"


@pytest.mark.parametrize("query,msg", [
    ("", "query is empty"),
    ("   \n\t", "query is empty"),
    ("x" * (1 << 20), "1,048,576 characters"),
    (None, "query must be a string"),
])
def test_bad_queries(kb, query, msg):
    before = snapshot(kb.path)
    for mode in ("dense", "bm25", "hybrid"):
        with pytest.raises(InputError, match=msg):
            kb.search(query, k=3, mode=mode)
    with pytest.raises(InputError, match=msg):
        kb.search_batch(["fine", query], k=3)
    assert_unchanged(kb, before)


@pytest.mark.parametrize("k,msg", [(0, "k must be > 0, got 0"), (-3, "k must be > 0, got -3"),
                                   (10_000, "k=10000 is larger than the knowledge base"),
                                   (2.5, "k must be an integer")])
def test_bad_k(kb, k, msg):
    before = snapshot(kb.path)
    with pytest.raises(InputError, match=msg):
        kb.search("lease", k=k)
    assert_unchanged(kb, before)


def test_searching_an_empty_kb_says_so(tmp_path, cfg):
    with KnowledgeBase.create(tmp_path / "empty", cfg, embedder=HashEmbedder()) as kb:
        with pytest.raises(InputError, match="is empty; sync documents into it first"):
            kb.search("anything", k=1)


def test_unknown_filter_field_and_operator(kb):
    before = snapshot(kb.path)
    with pytest.raises(InputError, match=r"unknown filter field 'author'.*known fields: .*source"):
        kb.search("lease", k=2, filters={"author": "x"})
    with pytest.raises(InputError, match="unknown filter operator 'like'"):
        kb.search("lease", k=2, filters={"source": {"like": "%"}})
    with pytest.raises(InputError, match="unknown filter field"):
        kb.search("lease", k=2, filters={"source') OR 1=1 --": "x"})  # not an injection vector either
    with pytest.raises(InputError, match="unknown mode|mode must be"):
        kb.search("lease", k=2, mode="sparse")
    assert_unchanged(kb, before)


class BrokenEmbedder(HashEmbedder):
    """The hash embedder's identity, with a fault injected into its output."""

    def __init__(self, fault: str):
        super().__init__(64)
        self.fault = fault

    def embed(self, texts, *, batch_size=64, progress=False):
        out = super().embed(texts)
        if self.fault == "dim":
            return out[:, :32]
        if self.fault == "rows":
            return out[:-1]
        out[len(out) // 2, 3] = np.nan
        return out


@pytest.mark.parametrize("fault,msg", [("dim", r"returned shape \(\d+, 32\), expected \(\d+, 64\)"),
                                       ("rows", "returned shape"), ("nan", "NaN or infinite")])
def test_bad_embeddings_write_nothing(kb, fault, msg):
    kb.close()
    before = snapshot(kb.path)
    broken = KnowledgeBase.open(kb.path, embedder=BrokenEmbedder(fault))
    new = [Document.create("A brand new clause about parking spaces and bicycles.", {"source": "parking.md"})]
    with pytest.raises(ModelError, match=msg):
        broken.sync(new)
    if fault == "nan":  # also at query time
        with pytest.raises(ModelError, match="NaN"):
            broken.search_batch(["a", "b", "c"], k=1, mode="dense")
    broken.close()
    assert_unchanged(kb, before)


def test_duplicate_id_with_different_text(kb, docs):
    before = snapshot(kb.path)
    twin = Document(docs[0].id, "completely different text", dict(docs[0].metadata))
    with pytest.raises(InputError, match=f"duplicate document id '{docs[0].id}' with different text"):
        kb.sync([*docs, twin])
    assert_unchanged(kb, before)
    # an identical copy is not an error: it is counted once
    assert kb.sync([*docs, docs[0]]).duplicates == 1


def test_non_document_input(kb):
    with pytest.raises(InputError, match="expects Document objects, got dict"):
        kb.sync([{"id": "x", "text": "y"}])


HOLD_LOCK = """
import sys, time
from indexes.kb import _WriteLock
from pathlib import Path
with _WriteLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_writer_fails_fast_and_readers_keep_working(kb, docs):
    before = snapshot(kb.path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(kb.path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match="being written by another process"):
            kb.sync([Document.create("new text", {"source": "n.md"})])
        with pytest.raises(LockedError):
            kb.delete([docs[0].id])
        assert holder.poll() is None  # both refused while the holder still held the lock: no waiting
        # reading needs no lock
        with KnowledgeBase.open(kb.path, embedder=HashEmbedder(), readonly=True) as reader:
            assert reader.search("ethics hotline", k=1)[0].chunk.metadata["source"] == "whistleblowing.md"
    finally:
        holder.kill()
        holder.wait()
    assert_unchanged(kb, before)
    # once the other writer is gone, writing works again
    assert kb.sync([Document.create("new text about parking", {"source": "n.md"})]).added == 1


def test_truncated_index_file(kb):
    kb.close()
    manifest = json.loads((kb.path / "manifest.json").read_text())
    f = kb.path / manifest["files"]["faiss"]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptKnowledgeBaseError, match=r"truncated or replaced.*hybrid index rebuild"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder())
    # same size but garbage inside: FAISS itself refuses it
    f.write_bytes(b"\x00" * len(data))
    with pytest.raises(CorruptKnowledgeBaseError, match=r"cannot read vector index.*hybrid index rebuild"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder())
    # rebuild from the (intact) stored documents repairs it
    fixed, rep = KnowledgeBase.rebuild(kb.path, embedder=HashEmbedder())
    with fixed:
        assert rep.added == 6 and fixed.search("ethics hotline", k=1)[0].chunk.metadata["source"] == "whistleblowing.md"


def test_metadata_db_from_another_generation(kb, docs):
    first = json.loads((kb.path / "manifest.json").read_text())["files"]["sqlite"]
    old_db = (kb.path / first).read_bytes()
    kb.sync(docs[:3], prune=True)  # generation 2
    kb.close()
    current = json.loads((kb.path / "manifest.json").read_text())
    target = kb.path / current["files"]["sqlite"]
    target.write_bytes(old_db)
    # make the size match so only the generation stamp can tell
    current["sizes"]["sqlite"] = len(old_db)
    (kb.path / "manifest.json").write_text(json.dumps(current))
    with pytest.raises(CorruptKnowledgeBaseError, match=r"belongs to generation 1 but manifest.json names generation 2"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder())


def test_vector_count_mismatch_and_missing_or_broken_manifest(kb, tmp_path):
    kb.close()
    man_path = kb.path / "manifest.json"
    good = man_path.read_text()
    man_path.write_text(good[:40])
    with pytest.raises(CorruptKnowledgeBaseError, match="unreadable.*hybrid index rebuild"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder())
    man_path.unlink()
    with pytest.raises(CorruptKnowledgeBaseError, match="no manifest.json"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder())
    with pytest.raises(KnowledgeBaseError, match="no knowledge base in"):
        KnowledgeBase.open(tmp_path / "empty-dir", embedder=HashEmbedder())
    man_path.write_text(good)
    # a FAISS file with fewer vectors than metadata rows (e.g. copied from elsewhere)
    import faiss

    m = json.loads(good)
    f = kb.path / m["files"]["faiss"]
    ix = faiss.read_index(str(f))
    ix.remove_ids(np.array([faiss.vector_to_array(ix.id_map)[0]], dtype=np.int64))
    faiss.write_index(ix, str(f))
    m["sizes"]["faiss"] = f.stat().st_size
    man_path.write_text(json.dumps(m))
    with pytest.raises(CorruptKnowledgeBaseError, match=r"vectors but \d+ chunk rows"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder())
