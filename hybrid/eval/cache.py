"""Answer cache for evaluation runs: SQLite, keyed by everything that changes an answer.

The key hashes (question text, strategy, model id, adapter hash, knowledge-base version, generation
settings). A re-run only computes what changed, and an interrupted run resumes from what was stored:
every answer is committed as soon as it is made.

    cache = AnswerCache(out_dir / "cache.sqlite")
    key = cache.key(question="...", strategy="rag", model="m", adapter="a1", kb_version="g3", params={...})
    if (hit := cache.get(key)) is None:
        cache.put(key, {"answer": "...", ...})
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

# Bumped when the same settings start producing different answers (2: the repetition penalty
# applies to generated tokens only), so a cache never serves answers of the old behaviour.
CACHE_VERSION = 2


class AnswerCache:
    """A small JSON-in-SQLite store. Never pickle."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, question_id TEXT, strategy TEXT,"
                         " payload TEXT NOT NULL, created REAL NOT NULL)")
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*, question: str, strategy: str, model: str, adapter: str | None, kb_version: str | None,
            params: dict[str, Any] | None = None) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "q": question, "s": strategy, "m": model, "a": adapter,
                           "kb": kb_version, "p": params or {}}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT payload FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, payload: dict[str, Any], *, question_id: str = "", strategy: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                             (key, question_id, strategy, json.dumps(payload, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()
