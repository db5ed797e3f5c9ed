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

Pure functions: no database connection, no knowledge-base state.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any, Collection

from core.errors import InputError

FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


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
