"""BM25 query building and scoring on a small FTS5 table, without a knowledge base around it."""

from __future__ import annotations

import sqlite3

import pytest

from core.errors import InputError
from indexes.bm25 import bm25_search, match_expression, query_terms
from indexes.filters import filter_sql


def test_query_terms_drop_stopwords_and_duplicates_and_keep_order():
    assert query_terms("What is the notice period for the Notice?", 64) == ["notice", "period"]
    assert query_terms("what is it", 64) == ["what", "is", "it"]  # only stopwords: keep them all
    assert query_terms("alpha beta gamma delta", 2) == ["alpha", "beta"]
    assert query_terms("?! ...", 64) == []


def test_match_expression_quotes_every_term():
    assert match_expression(["notice", "period"]) == '"notice" OR "period"'
    assert match_expression(['a"b']) == '"a""b"'


@pytest.fixture
def db():
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE chunks (vid INTEGER PRIMARY KEY, text TEXT, metadata TEXT)")
    con.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='vid', "
                "tokenize='porter unicode61 remove_diacritics 2')")
    rows = [(1, "The tenant must give notice before ending the lease.", '{"source": "lease.md"}'),
            (2, "Court fees are waived on legal aid; filing fees apply otherwise.", '{"source": "fees.csv"}'),
            (3, "Late rent carries a fee.", '{"source": "lease.md"}'),
            (4, "Bake the bread at 220 degrees.", '{"source": "recipes.txt"}')]
    con.executemany("INSERT INTO chunks VALUES (?, ?, ?)", rows)
    con.executemany("INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)", [(v, t) for v, t, _ in rows])
    return con


def test_scores_are_positive_and_descending(db):
    hits = bm25_search(db, "fees", depth=10, max_terms=64)
    assert [v for v, _ in hits] == [2, 3]  # porter stemming: "fee" matches too; two mentions rank first
    assert hits[0][1] > hits[1][1] > 0


def test_depth_limits_and_no_terms_means_no_hits(db):
    assert len(bm25_search(db, "fees", depth=1, max_terms=64)) == 1
    assert bm25_search(db, "...", depth=10, max_terms=64) == []
    assert bm25_search(db, "xylophone", depth=10, max_terms=64) == []


def test_fts5_syntax_in_the_query_is_plain_text(db):
    assert [v for v, _ in bm25_search(db, 'notice" OR NEAR(bread', depth=10, max_terms=64)] in ([1, 4], [4, 1])


def test_where_filter_applies_in_the_same_query(db):
    where = filter_sql({"source": "lease.md"}, {"source"})
    assert [v for v, _ in bm25_search(db, "fees", depth=10, max_terms=64, where=where)] == [3]


def test_sqlite_errors_become_input_errors(db):
    with pytest.raises(InputError, match="cannot run BM25 for query 'fees'"):
        bm25_search(db, "fees", depth=10, max_terms=64, where=("no_such_column = 1", []))
