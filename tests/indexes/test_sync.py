"""Sync diffing on its own: which documents are added, updated, kept or deleted, and which chunks are re-embedded."""

from __future__ import annotations

import pytest

from core.errors import InputError
from core.types import Chunk, Document
from indexes.sync import SyncReport, content_hash, dedupe_documents, diff_chunks, diff_documents, source_key


def doc(did: str, text: str, **meta) -> Document:
    return Document(did, text, meta)


def stored_of(*docs: Document) -> dict[str, tuple[str | None, str]]:
    return {d.id: (source_key(d), content_hash(d)) for d in docs}


def test_dedupe_counts_identical_copies_and_refuses_conflicts():
    report = SyncReport()
    got = dedupe_documents([doc("a", "x"), doc("b", "y"), doc("a", "x")], report)
    assert list(got) == ["a", "b"] and report.duplicates == 1
    with pytest.raises(InputError, match="duplicate document id 'a' with different text"):
        dedupe_documents([doc("a", "x"), doc("a", "z")], SyncReport())
    with pytest.raises(InputError, match="sync expects Document objects, got str"):
        dedupe_documents(["a"], SyncReport())


def test_new_changed_unchanged_and_prune():
    a, b, c = doc("a", "one", source="a.md"), doc("b", "two", source="b.md"), doc("c", "three", source="c.md")
    stored = stored_of(a, b, c)
    b2 = doc("b", "two, edited", source="b.md")
    d = doc("d", "four", source="d.md")
    report = SyncReport()
    upserts, to_delete = diff_documents(stored, {"a": a, "b": b2, "d": d}, False, report)
    assert [x.id for x in upserts] == ["b", "d"] and to_delete == set()
    assert (report.added, report.updated, report.unchanged, report.deleted) == (1, 1, 1, 0)

    report = SyncReport()
    upserts, to_delete = diff_documents(stored, {"a": a}, True, report)
    assert upserts == [] and to_delete == {"b", "c"} and report.deleted == 2


def test_metadata_change_is_a_change():
    a = doc("a", "one", source="a.md", page=1)
    report = SyncReport()
    upserts, _ = diff_documents(stored_of(a), {"a": doc("a", "one", source="a.md", page=1, tag="x")}, False, report)
    assert [x.id for x in upserts] == ["a"] and report.updated == 1


def test_new_id_from_the_same_source_unit_replaces_the_old_document():
    old = doc("old", "v1", source="lease.md", page=1)
    new = doc("new", "v2", source="lease.md", page=1)
    report = SyncReport()
    upserts, to_delete = diff_documents(stored_of(old), {"new": new}, False, report)
    assert [x.id for x in upserts] == ["new"] and to_delete == {"old"}
    assert (report.added, report.updated) == (0, 1)
    # another page of the same file is another source unit: an addition, nothing replaced
    report = SyncReport()
    upserts, to_delete = diff_documents(stored_of(old), {"p2": doc("p2", "v1", source="lease.md", page=2)},
                                        False, report)
    assert to_delete == set() and report.added == 1
    # two inputs from one unit: ambiguous, so both are added and the old one stays (unless pruned)
    report = SyncReport()
    two = {"n1": doc("n1", "x", source="lease.md", page=1), "n2": doc("n2", "y", source="lease.md", page=1)}
    upserts, to_delete = diff_documents(stored_of(old), two, False, report)
    assert to_delete == set() and report.added == 2


def test_diff_chunks_keeps_same_chunks_and_removes_the_rest():
    new = [Chunk(id="c1", doc_id="a", text="t1"), Chunk(id="c2", doc_id="a", text="t2"),
           Chunk(id="c3", doc_id="b", text="t3")]
    old_rows = {"c1": (11, "a"), "c3": (13, "other"), "c9": (19, "a")}
    keep, to_embed, remove = diff_chunks(new, old_rows)
    assert keep == {"c1"}
    assert [c.id for c in to_embed] == ["c2", "c3"]  # c3 is stored, but for another document
    assert sorted(remove) == [13, 19]
