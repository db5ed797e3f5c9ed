"""SQL: each row of a SQLite query becomes a document (stdlib ``sqlite3``, opened read-only).

    from connectors.sql import rows
    for item in rows("sqlite:///shop.db", IngestConfig(sql_query="SELECT id, body FROM faq",
                                                     sql_text_column="body")):
        ...  # (text, metadata) or Skip

``sql_text_column`` holds the text and the other columns become metadata; without it every column
is written as a ``name: value`` line. A ``title`` column, when present, becomes the title.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from connectors.base import Skip, iso_utc, sha256_hex
from connectors.config import IngestConfig


def db_path(url: str) -> Path:
    """``sqlite:///rel/path.db`` is relative, ``sqlite:////abs/path.db`` absolute (SQLAlchemy style)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"expected sqlite:///path/to.db, got {url!r}")
    return Path(url[len("sqlite:///"):]).expanduser()


def rows(url: str, cfg: IngestConfig) -> Iterator[tuple[str, dict[str, Any]] | Skip]:
    path = db_path(url)
    if not cfg.sql_query.strip():
        yield Skip(url, "no_query", "a sqlite source needs a query (query=... or sql_query)")
        return
    if not path.is_file():
        yield Skip(url, "not_found", f"no database file at {path}")
        return
    abs_path = path.resolve()
    try:
        # mode=ro: a query can never change the user's database, whatever its text says.
        conn = sqlite3.connect(f"{abs_path.as_uri()}?mode=ro", uri=True, timeout=cfg.parse_timeout_s)
    except sqlite3.Error as e:
        yield Skip(url, "unreadable", f"cannot open database: {e}")
        return
    deadline = time.monotonic() + cfg.parse_timeout_s
    # Called every 10k VM steps; returning non-zero aborts a runaway query.
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    modified = iso_utc(abs_path.stat().st_mtime)
    try:
        cur = conn.execute(cfg.sql_query)
        cols = [d[0] for d in cur.description or []]
        text_col = cfg.sql_text_column
        if text_col and text_col not in cols:
            yield Skip(url, "bad_column", f"query has no column {text_col!r} (columns: {', '.join(cols)})")
            return
        for n, values in enumerate(cur, start=1):
            rec = dict(zip(cols, values))
            if text_col:
                text = "" if rec[text_col] is None else str(rec[text_col])
            else:
                text = "\n".join(f"{k}: {v}" for k, v in rec.items() if v not in (None, ""))
            meta: dict[str, Any] = {
                "source": f"{url}#row={n}",
                "uri": abs_path.as_uri(),
                "title": str(rec.get("title") or f"{abs_path.stem} row {n}"),
                "mime": "application/vnd.sqlite3",
                "sha256": sha256_hex(json.dumps(rec, default=str, sort_keys=True).encode("utf-8")),
                "modified": modified,
                "row": n,
                "query": cfg.sql_query,
            }
            for k, v in rec.items():
                if k != text_col and k not in meta:
                    meta[k] = v if isinstance(v, (str, int, float)) or v is None else repr(v)
            yield text, meta
    except sqlite3.OperationalError as e:
        reason = "timeout" if "interrupted" in str(e) else "query_error"
        yield Skip(url, reason, f"query failed: {e}")
    except sqlite3.Error as e:
        yield Skip(url, "query_error", f"query failed: {e}")
    finally:
        conn.close()
