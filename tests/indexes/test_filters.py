"""The filter-to-SQL compiler on its own: the SQL text and parameters it produces, and what it refuses."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from core.errors import InputError
from indexes.filters import filter_scalar, filter_sql, filter_values

FIELDS = {"source", "page", "modified", "draft", "score"}


def col(name: str, alias: str = "c") -> str:
    return f"json_extract({alias}.metadata, '$.\"{name}\"')"


def test_scalar_means_equality():
    assert filter_sql({"source": "lease.md"}, FIELDS) == (f"{col('source')} = ?", ["lease.md"])
    assert filter_sql({"page": 2}, FIELDS) == (f"{col('page')} = ?", [2])
    assert filter_sql({"page": None}, FIELDS) == (f"{col('page')} = ?", [None])


def test_empty_filter_is_true():
    assert filter_sql({}, FIELDS) == ("1", [])
    assert filter_sql({}, set()) == ("1", [])


def test_list_tuple_and_set_mean_in():
    assert filter_sql({"source": ["a.md", "b.md"]}, FIELDS) == (f"{col('source')} IN (?,?)", ["a.md", "b.md"])
    assert filter_sql({"page": (1, 2, 3)}, FIELDS) == (f"{col('page')} IN (?,?,?)", [1, 2, 3])
    sql, args = filter_sql({"page": {4, 5}}, FIELDS)
    assert sql == f"{col('page')} IN (?,?)" and sorted(args) == [4, 5]
    assert filter_sql({"page": frozenset([7])}, FIELDS) == (f"{col('page')} IN (?)", [7])


def test_operators_with_and_without_dollar_are_anded():
    sql, args = filter_sql({"modified": {"gte": "2024-01-01", "$lt": "2025-01-01"}}, FIELDS)
    assert sql == f"{col('modified')} >= ? AND {col('modified')} < ?"
    assert args == ["2024-01-01", "2025-01-01"]
    for op, sym in [("eq", "="), ("ne", "!="), ("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")]:
        assert filter_sql({"page": {op: 3}}, FIELDS) == (f"{col('page')} {sym} ?", [3])
        assert filter_sql({"page": {"$" + op: 3}}, FIELDS) == (f"{col('page')} {sym} ?", [3])
    assert filter_sql({"source": {"$in": ["x", "y"]}}, FIELDS) == (f"{col('source')} IN (?,?)", ["x", "y"])


def test_several_fields_are_anded_in_order_and_alias_is_used():
    sql, args = filter_sql({"source": "a.md", "page": [1, 2], "modified": {"gt": "2020"}}, FIELDS, alias="ch")
    assert sql == (f"{col('source', 'ch')} = ? AND {col('page', 'ch')} IN (?,?) AND "
                   f"{col('modified', 'ch')} > ?")
    assert args == ["a.md", 1, 2, "2020"]


def test_values_are_normalised_like_stored_json():
    assert filter_sql({"modified": dt.date(2024, 3, 1)}, FIELDS)[1] == ["2024-03-01"]
    assert filter_sql({"modified": {"lt": dt.datetime(2024, 3, 1, 12, 30)}}, FIELDS)[1] == ["2024-03-01T12:30:00"]
    assert filter_sql({"draft": True}, FIELDS)[1] == [1]
    assert filter_sql({"draft": [False, True]}, FIELDS)[1] == [0, 1]
    assert filter_scalar("score", 0.5) == 0.5
    assert filter_values("page", range(3)) == [0, 1, 2]


def test_sql_runs_and_selects_the_right_rows():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE chunks (vid INTEGER PRIMARY KEY, metadata TEXT)")
    rows = [(1, '{"source": "a.md", "page": 1, "modified": "2023-05-01"}'),
            (2, '{"source": "a.md", "page": 2, "modified": "2024-06-01"}'),
            (3, '{"source": "b.md", "page": 1, "modified": "2025-01-10", "draft": true}')]
    db.executemany("INSERT INTO chunks VALUES (?, ?)", rows)

    def vids(filters):
        sql, args = filter_sql(filters, FIELDS)
        return [r[0] for r in db.execute(f"SELECT c.vid FROM chunks c WHERE {sql} ORDER BY c.vid", args)]

    assert vids({}) == [1, 2, 3]
    assert vids({"source": "a.md"}) == [1, 2]
    assert vids({"source": "a.md", "page": 2}) == [2]
    assert vids({"modified": {"gte": dt.date(2024, 1, 1)}}) == [2, 3]
    assert vids({"page": {"ne": 1}}) == [2]
    assert vids({"draft": True}) == [3]
    assert vids({"source": ["b.md", "c.md"]}) == [3]


@pytest.mark.parametrize("filters,fields,msg", [
    ({"author": "x"}, FIELDS, r"unknown filter field 'author'; known fields: draft, modified, page, score, source"),
    ({"author": "x"}, set(), r"unknown filter field 'author'; known fields: \(none\)"),
    # a stored field with a name that could break out of the JSON path is still refused
    ({"a') OR 1=1 --": "x"}, {"a') OR 1=1 --"}, "unknown filter field"),
    ({"bad name": 1}, {"bad name"}, "unknown filter field 'bad name'"),
    ({"source": {"like": "%"}}, FIELDS, r"unknown filter operator 'like' on 'source'; use one of in, eq, ne, gt, gte, lt, lte"),
    ({"source": {}}, FIELDS, "filter on 'source' has no condition"),
    ({"source": []}, FIELDS, "'in' filter on 'source' has an empty list"),
    ({"source": {"in": "a.md"}}, FIELDS, "'in' filter on 'source' needs a list, got 'a.md'"),
    ({"page": {"in": 3}}, FIELDS, "'in' filter on 'page' needs a list, got 3"),
    ({"score": float("nan")}, FIELDS, "filter value for 'score' must be finite, got nan"),
    ({"score": {"gt": float("inf")}}, FIELDS, "must be finite, got inf"),
    ({"source": {"a": 1}}, FIELDS, "unknown filter operator 'a'"),
    ({"source": b"a.md"}, FIELDS, "must be a string, number or date, got bytes"),
    ({"source": [["nested"]]}, FIELDS, "must be a string, number or date, got list"),
])
def test_bad_filters_raise_clear_input_errors(filters, fields, msg):
    with pytest.raises(InputError, match=msg):
        filter_sql(filters, fields)


@pytest.mark.parametrize("filters", [["source", "a.md"], "source=a.md", None])
def test_filters_must_be_a_mapping(filters):
    with pytest.raises(InputError, match=f"filters must be a mapping of field -> value, got {type(filters).__name__}"):
        filter_sql(filters, FIELDS)
