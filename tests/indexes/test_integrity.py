"""Issue 14: damaged files are detected and explained, never searched silently.

- a garbage SQLite page becomes ``CorruptKnowledgeBaseError`` (with the rebuild hint), on open when the
  manifest has checksums, at query time when it has none (an older manifest) or the file is too big
  for the full check;
- the manifest records a checksum of each generation's files and opening verifies it;
- a dense score outside [-1-eps, 1+eps] is an error, not a result;
- a manifest written before checksums existed keeps opening and gets them on the next sync.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core.errors import CorruptKnowledgeBaseError
from core.types import Document
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from tests.indexes.conftest import make_docs, snapshot

PAGE = 4096  # SQLite's default page size, which the generations use


def _integrity():
    # imported per test, so that each test of this file fails on its own on code without the module
    from indexes import integrity

    return integrity


def extra_docs(n: int = 60) -> list[Document]:
    """Enough text that the SQLite file spans a few hundred KB (so 'offset 64 KiB' is inside it)."""
    return [Document.create(f"Document {i} about topic {i % 17}: "
                            + " ".join(f"word{(i * 7 + j) % 501}" for j in range(120)), {"source": f"d{i}.md"})
            for i in range(n)]


def build(path: Path, **cfg) -> Path:
    with KnowledgeBase.create(path, IndexConfig(embedder="hash", chunk_size=24, chunk_overlap=4, **cfg),
                              embedder=HashEmbedder()) as kb:
        kb.sync(make_docs() + extra_docs())
    return path


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def file_of(path: Path, kind: str) -> Path:
    return path / manifest(path)["files"][kind]


def forget_checksums(path: Path) -> None:
    """Make the manifest look like one written before checksums were recorded."""
    m = manifest(path)
    m.pop("checksums", None)
    (path / "manifest.json").write_text(json.dumps(m, indent=2))


def root_page(db: Path, name: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (name,)).fetchone()[0])
    finally:
        con.close()


def smash(f: Path, offset: int, n: int = PAGE, seed: int = 1) -> None:
    """Overwrite ``n`` bytes at ``offset`` with random garbage, keeping the file's size."""
    size = f.stat().st_size
    assert offset + n <= size
    with open(f, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(seed).bytes(n))
    assert f.stat().st_size == size


def smash_vectors(f: Path, value: float = 1e18) -> None:
    """Replace the stored vectors of a flat FAISS file with huge floats (same size, header intact)."""
    size = f.stat().st_size
    vals = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * np.float32(value)
    with open(f, "r+b") as fh:
        fh.seek(2000)
        fh.write(vals.tobytes())
    assert f.stat().st_size == size


@pytest.fixture
def built(tmp_path) -> Path:
    return build(tmp_path / "kb")


def open_kb(path: Path) -> KnowledgeBase:
    return KnowledgeBase.open(path, embedder=HashEmbedder())


# -- SQLite pages ----------------------------------------------------------------------------------
def test_garbage_sqlite_page_at_64k_is_caught_on_open_by_the_checksum(built):
    db = file_of(built, "sqlite")
    assert db.stat().st_size > 2 * 65536
    smash(db, 65536)
    with pytest.raises(CorruptKnowledgeBaseError, match=r"checksum.*hybrid index rebuild"):
        open_kb(built)


@pytest.mark.parametrize("page_of,call", [
    ("chunks", lambda kb: kb.search("appeal court fees", k=3)),                 # chunk rows of the hits
    ("chunks_fts_data", lambda kb: kb.search("appeal court fees", k=3, mode="bm25")),  # the FTS5 index
    ("documents_source_key", lambda kb: kb.stats()),                            # COUNT(*) reads this index
    ("documents", lambda kb: kb.documents()),
    ("documents", lambda kb: kb.sync([Document.create("A new note on parking.", {"source": "p.md"})])),
])
def test_garbage_sqlite_page_at_query_time_is_corrupt_error(built, page_of, call):
    # No checksums (an older manifest): the page is only met by the query that reads it.
    forget_checksums(built)
    db = file_of(built, "sqlite")
    smash(db, (root_page(db, page_of) - 1) * PAGE)
    before = snapshot(built)
    with open_kb(built) as kb:
        with pytest.raises(CorruptKnowledgeBaseError, match=r"gen-\d+\.sqlite is damaged \(.+\); run `hybrid index rebuild"):
            call(kb)
    assert snapshot(built) == before  # nothing was written, not even a failed generation


def test_rebuild_repairs_a_damaged_sqlite_page(built):
    forget_checksums(built)
    db = file_of(built, "sqlite")
    smash(db, (root_page(db, "chunks") - 1) * PAGE)
    # the documents table is intact, so rebuild salvages the stored documents
    kb, report = KnowledgeBase.rebuild(built, embedder=HashEmbedder())
    with kb:
        assert report.added == 66
        assert kb.search("ethics hotline", k=1)[0].chunk.metadata["source"] == "whistleblowing.md"


# -- FAISS -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1e18, float("nan")])
def test_same_size_garbage_faiss_is_caught_on_open_by_the_checksum(built, value):
    smash_vectors(file_of(built, "faiss"), value)
    with pytest.raises(CorruptKnowledgeBaseError, match=r"gen-\d+\.faiss.*checksum.*hybrid index rebuild"):
        open_kb(built)


# (NaN vectors are not in this list: FAISS never ranks a NaN score, so they drop out of the results
# rather than reach them; the checksum test above covers them.)
@pytest.mark.parametrize("value", [1e18, 3.0])
@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_dense_scores_outside_cosine_range_are_an_error(built, value, mode):
    forget_checksums(built)  # so the file opens and only the score check stands between it and a result
    smash_vectors(file_of(built, "faiss"), value)
    with open_kb(built) as kb:
        with pytest.raises(CorruptKnowledgeBaseError, match=r"outside \[-1, 1\].*hybrid index rebuild"):
            kb.search("word5 topic", k=3, mode=mode)
        # BM25 does not read the vectors and still answers
        assert kb.search("ethics hotline", k=1, mode="bm25")[0].chunk.metadata["source"] == "whistleblowing.md"


@pytest.mark.parametrize("kind,extra", [("flat", {}), ("hnsw", {}),
                                        ("ivfpq", {"ivf_m": 8, "ivf_nbits": 6, "ivf_nlist": 4, "ivf_nprobe": 4})])
def test_healthy_indexes_stay_inside_the_score_bound(tmp_path, kind, extra):
    """No false alarm: every dense score of a healthy index of each kind is inside its bound."""
    path = build(tmp_path / kind, index=kind, **extra)
    queries = [f"word{i} topic {i % 17}" for i in range(0, 500, 7)] + ["tenant notice", "court fees appeal"]
    with open_kb(path) as kb:
        slack = _integrity().score_slack(kind)
        for hits in kb.search_batch(queries, k=10, mode="dense"):
            assert hits
            assert all(-1 - slack <= h.score <= 1 + slack for h in hits)


# -- checksums in the manifest ---------------------------------------------------------------------
def sha256(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def assert_checksums_match(path: Path) -> None:
    m = manifest(path)
    assert set(m["checksums"]) == set(m["files"].values())  # keyed by the file names of this generation
    for name in m["files"].values():
        assert m["checksums"][name]["sha256"] == sha256(path / name)
        assert m["checksums"][name]["sampled_sha256"] == _integrity().sampled_digest(path / name)


def test_every_write_records_checksums_of_its_files(built):
    assert_checksums_match(built)  # create + sync
    with open_kb(built) as kb:
        kb.delete([make_docs()[0].id])
    assert_checksums_match(built)
    KnowledgeBase.rebuild(built, embedder=HashEmbedder())[0].close()  # rebuild renumbers and rewrites the SQLite file
    assert_checksums_match(built)


def test_manifest_without_checksums_opens_and_gets_them_on_next_sync(built):
    forget_checksums(built)
    gen = manifest(built)["generation"]
    with open_kb(built) as kb:
        assert kb.search("ethics hotline", k=1)[0].chunk.metadata["source"] == "whistleblowing.md"
        # a sync with nothing to do writes no generation, but records the missing checksums
        report = kb.sync(make_docs() + extra_docs())
        assert not report.changed and report.generation == gen
    assert manifest(built)["generation"] == gen
    assert_checksums_match(built)
    with open_kb(built) as kb:  # and they verify
        kb.sync([Document.create("A new note on parking.", {"source": "p.md"})])
    assert manifest(built)["generation"] == gen + 1
    assert_checksums_match(built)
    open_kb(built).close()


@pytest.mark.parametrize("bad", ["not-a-dict", {"sha256": 7}, {}])
def test_a_checksum_of_the_wrong_shape_is_a_corrupt_manifest(built, bad):
    m = manifest(built)
    m["checksums"][m["files"]["faiss"]] = bad
    (built / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptKnowledgeBaseError, match=r"no valid checksum for gen-\d+\.faiss.*hybrid index rebuild"):
        open_kb(built)
    m["checksums"] = ["not", "a", "mapping"]
    (built / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptKnowledgeBaseError, match=r"checksums that are not a mapping.*hybrid index rebuild"):
        open_kb(built)


def test_checksums_of_other_files_from_an_older_writer_are_ignored_then_replaced(built):
    """An older hybrid syncing a newer knowledge base copies the previous manifest's fields, so the
    checksums it leaves name the previous generation's files: they must not fail the open."""
    m = manifest(built)
    m["checksums"] = {name.replace("gen-000001", "gen-000000"): v for name, v in m["checksums"].items()}
    (built / "manifest.json").write_text(json.dumps(m))
    with open_kb(built) as kb:
        assert kb.search("ethics hotline", k=1)[0].chunk.metadata["source"] == "whistleblowing.md"
        kb.sync(make_docs() + extra_docs())  # nothing to do, but the checksums are recorded
    assert_checksums_match(built)


def test_above_the_full_check_limit_a_sampled_checksum_still_runs(built, monkeypatch):
    """Big knowledge bases get the sampled check on open; damage between the samples is left to the
    score bound and the SQLite error translation at query time."""
    integrity = _integrity()
    monkeypatch.setattr(integrity, "FULL_VERIFY_MAX_BYTES", 0)
    db = file_of(built, "sqlite")
    page = (root_page(db, "chunks") - 1) * PAGE
    sampled = integrity.sample_offsets(db.stat().st_size)
    assert all(page + PAGE <= o or o + integrity.SAMPLE_BLOCK <= page for o in sampled)  # between samples
    smash(db, page)
    with open_kb(built) as kb:  # not seen on open...
        with pytest.raises(CorruptKnowledgeBaseError, match="is damaged"):
            kb.search("appeal court fees", k=3)  # ...but at the first query that reads the page
    # vectors overwritten over a stretch of the file (header intact, so FAISS reads it) are seen by the samples
    smash_vectors(file_of(built, "faiss"))
    with pytest.raises(CorruptKnowledgeBaseError, match=r"sampled checksum.*hybrid index rebuild"):
        open_kb(built)
    monkeypatch.setattr(integrity, "FULL_VERIFY_MAX_BYTES", 1 << 40)
    with pytest.raises(CorruptKnowledgeBaseError, match=r"\bchecksum"):
        open_kb(built)
