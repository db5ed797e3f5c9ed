"""Metadata filters compiled to a SQL ``WHERE`` fragment over the ``chunks`` table.

    from indexes.filters import filter_sql

    sql, args = filter_sql({"source": ["a.md", "b.md"], "modified": {"gte": "2024-01-01"}},
                           fields={"source", "modified"})
    # sql:  json_extract(c.metadata, '$."source"') IN (?,?) AND json_extract(c.metadata, '$."modified"') >= ?
    # args: ["a.md", "b.md", "2024-01-01"]

A filter maps a metadata field to a condition:

- a scalar (string, number, bool, date, ``None``) means equality;
- a list, tuple or set means "one of" (``IN``);
- a mapping of operators: ``eq ne gt gte lt lte in``, each optionally written with a ``$`` prefix
  (``{"$gte": 3}``); several operators on one field are ANDed.

Conditions on different fields are ANDed; an empty filter compiles to ``"1"`` (true). Dates become
ISO strings and bools become 0/1, matching how metadata is stored as JSON. Values only ever travel
as SQL parameters. A field name reaches the SQL text only when it is one of the ``fields`` the
knowledge base has stored and matches ``FIELD_RE``, so a filter cannot inject SQL. Anything else
raises ``InputError`` with a message naming the field.

``filter_milvus`` translates the same filters into a Milvus boolean expression over a JSON field
holding the chunk's metadata (the Milvus backend's collections since they have one), or ``None``
when a condition cannot be written so that Milvus agrees with SQLite; the caller then falls back to
the ids SQLite allows. What translates, what does not, and where the two may still differ:

- equality, ``ne``, ``gt gte lt lte`` and ``in`` (as ``==`` joined by ``or``: Milvus Lite 3.2.2
  refuses ``in`` on a JSON path) on strings, dates, bools (as 0/1, which Milvus, like SQLite, finds
  equal to JSON ``true``/``false``) and int64-sized integers and finite floats;
- not translated: a ``None`` value (SQL ``= NULL`` is never true), strings with control characters
  (Milvus's parser knows no ``\\u`` escapes), integers beyond int64, ``in`` lists of more than
  ``MILVUS_MAX_IN`` values;
- a missing key or a JSON ``null`` fails every condition in both (``ne`` included);
- a range comparison across types differs: SQLite orders every number below every string
  (``"x" > 0`` is true), Milvus compares only like types. So on a field whose values mix numbers and
  strings, Milvus may leave out chunks SQLite allows; it never adds any, because the Milvus backend
  checks its hits against the SQL filter (``indexes.search``).

Pure functions: no database connection, no knowledge-base state.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from typing import Any, Collection

from core.errors import InputError

FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MILVUS_OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Longer ``in`` lists are left to the id-list fallback rather than sent as a long ``or`` chain.
MILVUS_MAX_IN = 256
_INT64 = 2 ** 63


def filter_sql(filters: dict[str, Any], fields: Collection[str], alias: str = "c") -> tuple[str, list[Any]]:
    """The ``WHERE`` fragment and its parameters for ``filters``, over the chunks table aliased ``alias``.

    ``fields`` is the set of metadata field names the knowledge base holds; any other field is refused.
    """
    if not isinstance(filters, dict):
        raise InputError(f"filters must be a mapping of field -> value, got {type(filters).__name__}")
    parts: list[str] = []
    args: list[Any] = []
    for fname, cond in filters.items():
        if fname not in fields or not FIELD_RE.match(fname):
            raise InputError(f"unknown filter field {fname!r}; known fields: {', '.join(sorted(fields)) or '(none)'}")
        col = f"json_extract({alias}.metadata, '$.\"{fname}\"')"
        if isinstance(cond, dict):
            if not cond:
                raise InputError(f"filter on {fname!r} has no condition")
            for op, val in cond.items():
                op_n = str(op).lstrip("$")
                if op_n == "in":
                    vals = filter_values(fname, val)
                    parts.append(f"{col} IN ({','.join('?' * len(vals))})")
                    args += vals
                elif op_n in OPERATORS:
                    parts.append(f"{col} {OPERATORS[op_n]} ?")
                    args.append(filter_scalar(fname, val))
                else:
                    raise InputError(f"unknown filter operator {op!r} on {fname!r}; use one of "
                                     f"{', '.join(['in', *OPERATORS])}")
        elif isinstance(cond, (list, tuple, set, frozenset)):
            vals = filter_values(fname, cond)
            parts.append(f"{col} IN ({','.join('?' * len(vals))})")
            args += vals
        else:
            parts.append(f"{col} = ?")
            args.append(filter_scalar(fname, cond))
    return " AND ".join(parts) or "1", args


def filter_scalar(fname: str, v: Any) -> Any:
    """One filter value as a SQL parameter: dates to ISO strings, bools to 0/1; non-finite floats and other types refused."""
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    if isinstance(v, bool):
        return int(v)
    if v is None or isinstance(v, (int, float, str)):
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"filter value for {fname!r} must be finite, got {v!r}")
        return v
    raise InputError(f"filter value for {fname!r} must be a string, number or date, got {type(v).__name__}")


def filter_values(fname: str, vals: Any) -> list[Any]:
    """The values of an ``in`` condition: a non-empty iterable (not a string) of scalars."""
    if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
        raise InputError(f"'in' filter on {fname!r} needs a list, got {vals!r}")
    out = [filter_scalar(fname, v) for v in vals]
    if not out:
        raise InputError(f"'in' filter on {fname!r} has an empty list")
    return out


def filter_milvus(filters: dict[str, Any], fields: Collection[str], column: str = "metadata") -> str | None:
    """``filters`` as a Milvus boolean expression over the JSON field ``column``, or ``None`` when some
    condition cannot be expressed so that Milvus agrees with ``filter_sql`` (see the module docstring).

    >>> filter_milvus({"source": ["a.md", "b.md"], "page": {"gte": 2}}, {"source", "page"})
    '(metadata["source"] == "a.md" or metadata["source"] == "b.md") and metadata["page"] >= 2'

    Bad filters raise the same ``InputError`` as ``filter_sql``.
    """
    filter_sql(filters, fields)  # the same checks and errors, whichever store runs the filter
    parts: list[str] = []
    for fname, cond in filters.items():
        col = f'{column}["{fname}"]'  # FIELD_RE (checked above) admits no quote or backslash
        if isinstance(cond, dict):
            ops = [(str(op).lstrip("$"), val) for op, val in cond.items()]
        elif isinstance(cond, (list, tuple, set, frozenset)):
            ops = [("in", cond)]
        else:
            ops = [("eq", cond)]
        for op, val in ops:
            if op == "in":
                vals = [_milvus_literal(v) for v in filter_values(fname, val)]
                if len(vals) > MILVUS_MAX_IN or None in vals:
                    return None
                parts.append("(" + " or ".join(f"{col} == {v}" for v in vals) + ")")
            else:
                lit = _milvus_literal(filter_scalar(fname, val))
                if lit is None:
                    return None
                parts.append(f"{col} {MILVUS_OPERATORS[op]} {lit}")
    return " and ".join(parts)


def _milvus_literal(v: Any) -> str | None:
    """A ``filter_scalar`` value as a Milvus literal, or ``None`` when Milvus cannot compare it as SQLite does."""
    if v is None or isinstance(v, bool):  # bools are 0/1 by now; None never matches in SQL
        return None
    if isinstance(v, int):
        return str(v) if -_INT64 <= v < _INT64 else None
    if isinstance(v, float):
        return repr(v)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in v):
        return None
    return json.dumps(v, ensure_ascii=False)  # escapes only '"' and '\\' here, both of which Milvus reads
