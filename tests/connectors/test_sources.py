"""The source-kind registry: a source is read by the kind that claims its URL prefix (or by the path
kind); unknown schemes are one-line errors listing the known kinds; duplicates are refused."""

from __future__ import annotations

import sqlite3

import pytest

import connectors
from connectors.config import IngestConfig
from connectors.sources import SOURCES, SourceKind, source_kind
from core.errors import InputError


def test_source_kinds_are_registered_by_name(tmp_path):
    assert SOURCES.names() == ["files", "sql", "web"]
    assert source_kind("https://example.org/a") == "web"
    assert source_kind("HTTP://example.org/a") == "web"
    assert source_kind("sqlite:///shop.db") == "sql"
    assert source_kind(tmp_path) == "files"
    assert SOURCES.get("sql").rows and not SOURCES.get("files").rows


def test_each_kind_reads_its_source(tmp_path):
    (tmp_path / "a.txt").write_text("hello there", encoding="utf-8")
    items = list(SOURCES.get("files").read(tmp_path, IngestConfig()))
    assert [i.name for i in items] == ["a.txt"]
    db = tmp_path / "x.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (body TEXT)")
        con.execute("INSERT INTO t VALUES ('a row')")
    rows = list(SOURCES.get("sql").read(f"sqlite:///{db}", IngestConfig(sql_query="SELECT body FROM t",
                                                                         sql_text_column="body")))
    assert rows[0][0] == "a row"
    assert [d.text for d in connectors.load(f"sqlite:///{db}", query="SELECT body FROM t",
                                            text_column="body")] == ["a row"]


def test_unknown_scheme_is_one_line_listing_the_known_kinds():
    with pytest.raises(InputError) as e:
        source_kind("ftp://example.org/x")
    msg = str(e.value)
    assert msg.startswith("unsupported source 'ftp://example.org/x'") and "\n" not in msg
    for name in ("files", "sql", "web"):
        assert f"({name})" in msg
    with pytest.raises(InputError, match="unknown source kind 'ftp'; known: files, sql, web"):
        SOURCES.get("ftp")


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        source_kind(tmp_path / "nope")


def test_duplicate_source_kind_is_refused():
    web = SOURCES.get("web")
    with pytest.raises(ValueError, match="source kind 'web' is already registered"):
        SOURCES.add("web", SourceKind(("gopher://",), web.read))
    assert SOURCES.get("web") is web
