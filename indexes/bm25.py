"""BM25 over the SQLite FTS5 table ``chunks_fts``: turning a question into a MATCH query, and scoring.

    from indexes.bm25 import bm25_search

    hits = bm25_search(db, "notice period for termination", depth=50, max_terms=64)
    # [(vid, score), ...], best first; score = -bm25(chunks_fts), so higher is more relevant

The query is lower-cased and split into word tokens; duplicates are dropped and common English
stopwords removed (unless that would leave nothing), then at most ``max_terms`` are kept. The terms
are ORed as quoted FTS5 strings, so no user text is ever parsed as FTS5 syntax. The table's own
tokenizer (porter stemming by default, set when the generation is written) does the rest.

A metadata filter, compiled by ``indexes.filters.filter_sql`` over the ``chunks`` table aliased
``c``, may be passed as ``where``; it is applied inside the same SQL query.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from core.errors import InputError

# Common English words carry almost no BM25 weight but make FTS5 walk huge posting lists.
STOPWORDS = frozenset("a an and are as at be by for from has have how i in is it its of on or that the "
                      "this to was were what when where which who why will with".split())


def query_terms(query: str, max_terms: int) -> list[str]:
    """The distinct lower-case word tokens of ``query`` worth matching, in order, at most ``max_terms``."""
    terms = list(dict.fromkeys(t for t in re.findall(r"\w+", query.lower())))
    content = [t for t in terms if t not in STOPWORDS] or terms
    return content[:max_terms]


def match_expression(terms: list[str]) -> str:
    """An FTS5 MATCH expression that ORs ``terms``, each quoted as a literal string."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def bm25_search(db: sqlite3.Connection, query: str, depth: int, max_terms: int,
                where: tuple[str, list[Any]] | None = None) -> list[tuple[int, float]]:
    """Up to ``depth`` ``(vid, score)`` pairs for ``query``, best first; ``[]`` when it has no word tokens."""
    terms = query_terms(query, max_terms)
    if not terms:
        return []
    sql = "SELECT f.rowid, -bm25(chunks_fts) AS s FROM chunks_fts f"
    args: list[Any] = [match_expression(terms)]
    cond = "chunks_fts MATCH ?"
    if where is not None:
        fsql, fargs = where
        sql += " JOIN chunks c ON c.vid = f.rowid"
        cond += f" AND {fsql}"
        args += fargs
    sql += f" WHERE {cond} ORDER BY bm25(chunks_fts) LIMIT ?"
    args.append(depth)
    try:
        return [(int(v), float(s)) for v, s in db.execute(sql, args)]
    except sqlite3.OperationalError as e:
        raise InputError(f"cannot run BM25 for query {query[:60]!r}: {e}") from None
