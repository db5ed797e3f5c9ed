"""SQLite rows become documents; the database is opened read-only."""

from __future__ import annotations

import sqlite3

import pytest

import connectors
from connectors.report import IngestReport


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "faq.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE faq (id INTEGER PRIMARY KEY, title TEXT, body TEXT, lang TEXT)")
    con.executemany("INSERT INTO faq (title, body, lang) VALUES (?, ?, ?)", [
        ("Returns", "Items can be returned within 30 days.", "en"),
        ("Shipping", "Orders ship within two working days.", "en"),
    ])
    con.commit()
    con.close()
    return path


def test_rows_become_documents_with_metadata(db):
    docs = list(connectors.load(f"sqlite:///{db}", query="SELECT id, title, body, lang FROM faq ORDER BY id",
                                text_column="body"))
    assert [d.text for d in docs] == ["Items can be returned within 30 days.", "Orders ship within two working days."]
    meta = docs[0].metadata
    assert meta["title"] == "Returns" and meta["lang"] == "en" and meta["row"] == 1 and meta["id"] == 1
    assert meta["uri"] == db.resolve().as_uri() and len(meta["sha256"]) == 64 and meta["modified"]
    assert docs[0].id != docs[1].id


def test_without_text_column_every_column_is_a_line(db):
    (doc, _) = connectors.load(f"sqlite:///{db}", query="SELECT title, body FROM faq ORDER BY id")
    assert doc.text == "title: Returns\nbody: Items can be returned within 30 days."


@pytest.mark.parametrize("query,column,reason", [
    ("SELECT * FROM nope", "", "query_error"),
    ("DELETE FROM faq", "", "query_error"),  # read-only connection
    ("SELECT title FROM faq", "body", "bad_column"),
    ("", "", "no_query"),
])
def test_bad_queries_are_skips_and_the_database_is_untouched(db, query, column, reason):
    report = IngestReport()
    assert list(connectors.load(f"sqlite:///{db}", query=query, text_column=column, report=report)) == []
    assert [s.reason for s in report.skipped] == [reason]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM faq").fetchone() == (2,)


def test_missing_database_is_a_skip(tmp_path):
    report = IngestReport()
    assert list(connectors.load(f"sqlite:///{tmp_path}/none.db", query="SELECT 1", report=report)) == []
    assert report.skipped[0].reason == "not_found"


def test_walk_gives_rows_as_documents_and_files_as_raw_bytes(db, tmp_path):
    """``connectors.walk`` is the reading both ingest paths share (the parse pool and Ray tasks):
    a row source's rows come out as documents, counted as loaded; a folder's files come out unparsed,
    counted as seen, with walk-level skips recorded."""
    from connectors.base import Raw
    from connectors.config import IngestConfig
    from core.types import Document

    cfg = IngestConfig(sql_query="SELECT id, title, body, lang FROM faq ORDER BY id", sql_text_column="body")
    report = IngestReport()
    rows = list(connectors.walk(f"sqlite:///{db}", cfg, report))
    assert [type(r) for r in rows] == [Document, Document] and rows[1].text == "Orders ship within two working days."
    assert report.loaded == 2 and report.files_seen == 1

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha text.")
    (folder / "b.md").write_text("# Beta\n\nBeta text.")
    (folder / "huge.txt").write_text("x" * 2000)
    report = IngestReport()
    items = list(connectors.walk(folder, IngestConfig(max_file_bytes=1000), report))
    assert sorted(i.name for i in items) == ["a.txt", "b.md"] and all(isinstance(i, Raw) for i in items)
    assert report.files_seen == 3 and report.loaded == 0
    assert [(s.source, s.reason) for s in report.skipped] == [("huge.txt", "too_large")]
