"""Detecting damaged generation files: checksums, SQLite damage, and the cosine bound.

Three checks, each turning damage into ``CorruptKnowledgeBaseError`` with the rebuild hint:

- **Checksums.** Every write records, per file of the new generation, the SHA-256 of the whole file
  and a *sampled* SHA-256 (the size plus ``SAMPLE_BLOCKS`` blocks of ``SAMPLE_BLOCK`` bytes spread
  evenly over the file, first and last included) in the manifest's ``checksums``, keyed by file
  name. Opening verifies
  the full digest when the generation's files total at most ``FULL_VERIFY_MAX_BYTES`` (SHA-256 from
  the page cache measured 0.85-1.2 ms per MiB here, so 64 MiB costs about 75 ms), else only the
  sampled one (64 KiB read per file, about 0.06 ms), which still sees a stretch of overwritten or
  zeroed bytes that reaches a sample but not one damaged page between the samples. A manifest written before checksums existed has none: it opens
  with the other checks (sizes, generation stamp, counts) and gets them on its next sync. So does
  one written by an older hybrid after a newer one: it copies the previous manifest's fields, so its
  ``checksums`` name the previous generation's files, and are ignored rather than failed.
- **SQLite damage.** A damaged page is usually met only by the query that reads it. ``translate``
  turns SQLite's corruption codes (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``, ``SQLITE_FORMAT``) raised
  anywhere in a ``KnowledgeBase`` method into ``CorruptKnowledgeBaseError``; other SQLite errors
  (a full disk, a bug in our SQL) pass through unchanged, since "rebuild" would not fix them.
- **The cosine bound.** Vectors are L2-normalized, so an inner product outside [-1, 1] (beyond the
  kind's rounding slack) or a NaN can only come from damaged vectors: ``check_scores`` refuses it
  instead of ranking by it.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from core.errors import CorruptKnowledgeBaseError

REBUILD_HINT = "run `hybrid index rebuild --kb {path}` to rebuild it (add your SOURCES if its documents are lost too)"

# Above this many bytes (FAISS + SQLite of one generation) opening checks the sampled digest only.
FULL_VERIFY_MAX_BYTES = 64 << 20
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK = 4096
_READ = 1 << 20

# Primary SQLite result codes that mean "the file is not what was written" (sqlite3.h).
_SQLITE_DAMAGE = {11: "SQLITE_CORRUPT", 24: "SQLITE_FORMAT", 26: "SQLITE_NOTADB"}


# -- checksums -------------------------------------------------------------------------------------
def sha256_file(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        while block := fh.read(_READ):
            h.update(block)
    return h.hexdigest()


def sample_offsets(size: int) -> list[int]:
    """Where the sampled digest reads its blocks in a file of ``size`` bytes (first and last included)."""
    if size <= SAMPLE_BLOCK * SAMPLE_BLOCKS:
        return list(range(0, size, SAMPLE_BLOCK)) or [0]
    last = size - SAMPLE_BLOCK
    return sorted({round(i * last / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)})


def sampled_digest(f: Path) -> str:
    """SHA-256 of the file's size and of ``SAMPLE_BLOCKS`` blocks spread over it."""
    size = f.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(f, "rb") as fh:
        for off in sample_offsets(size):
            fh.seek(off)
            h.update(fh.read(SAMPLE_BLOCK))
    return h.hexdigest()


def file_checksums(files: dict[str, Path]) -> dict[str, dict[str, str]]:
    """The manifest's ``checksums``: for each file name, the full and the sampled SHA-256 of the file
    ``files[name]`` (a temp file while it is being published)."""
    return {name: {"sha256": sha256_file(f), "sampled_sha256": sampled_digest(f)} for name, f in files.items()}


def has_checksums(manifest: dict[str, Any]) -> bool:
    """True when the manifest's ``checksums`` are for (some of) the files it names."""
    recorded = manifest.get("checksums")
    return isinstance(recorded, dict) and any(name in recorded for name in manifest["files"].values())


def verify_checksums(kb: Path, manifest: dict[str, Any], files: dict[str, Path]) -> None:
    """Check ``files`` against the manifest's ``checksums`` (absent in older manifests: nothing to check).

    Full SHA-256 when the files total at most ``FULL_VERIFY_MAX_BYTES``, else the sampled digest.
    A missing file raises ``FileNotFoundError`` (the caller retries: a writer may have moved on)."""
    recorded = manifest.get("checksums")
    if recorded is None:
        return
    hint = REBUILD_HINT.format(path=kb)
    if not isinstance(recorded, dict):
        raise CorruptKnowledgeBaseError(f"{kb / 'manifest.json'} has checksums that are not a mapping; {hint}")
    if not any(f.name in recorded for f in files.values()):
        return  # carried over from an earlier generation by a writer that predates checksums
    full = sum(f.stat().st_size for f in files.values()) <= FULL_VERIFY_MAX_BYTES
    key, label = ("sha256", "checksum") if full else ("sampled_sha256", "sampled checksum")
    for kind, f in files.items():
        want = recorded.get(f.name)
        if not isinstance(want, dict) or not isinstance(want.get(key), str):
            raise CorruptKnowledgeBaseError(f"{kb / 'manifest.json'} has no valid {label} for {f.name}; {hint}")
        got = sha256_file(f) if full else sampled_digest(f)
        if got != want[key]:
            raise CorruptKnowledgeBaseError(f"{f} does not match the {label} in manifest.json (damaged or "
                                            f"replaced since it was written); {hint}")


# -- SQLite damage ---------------------------------------------------------------------------------
def is_damage(e: sqlite3.Error) -> bool:
    """True when SQLite says the database file itself is damaged (not a full disk or a bad statement)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is None:
        return type(e) is sqlite3.DatabaseError
    return (int(code) & 0xFF) in _SQLITE_DAMAGE


def damaged(db: Path, kb: Path, e: sqlite3.Error) -> CorruptKnowledgeBaseError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return CorruptKnowledgeBaseError(f"{db} is damaged ({first}); " + REBUILD_HINT.format(path=kb))


F = TypeVar("F", bound=Callable[..., Any])


def translate(method: F) -> F:
    """Decorate a ``KnowledgeBase`` method: SQLite damage met inside it becomes ``CorruptKnowledgeBaseError``
    naming the current generation's SQLite file."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            if not is_damage(e):
                raise
            raise damaged(self.path / self._state.manifest["files"]["sqlite"], self.path, e) from None

    return wrapper  # type: ignore[return-value]


# -- the cosine bound ------------------------------------------------------------------------------
def score_slack(kind: str) -> float:
    """How far past [-1, 1] a healthy index of ``kind`` may score (rounding, or PQ's approximation)."""
    from indexes.vectors import VECTOR_KINDS

    return VECTOR_KINDS.get(kind).score_slack


def check_scores(scores: np.ndarray, ids: np.ndarray, kind: str, faiss_file: Path, kb: Path) -> None:
    """Refuse dense scores that no healthy index of normalized vectors can produce."""
    live = np.asarray(scores)[np.asarray(ids) >= 0]
    if live.size == 0:
        return
    slack = score_slack(kind)
    bad = ~np.isfinite(live) | (np.abs(live) > 1.0 + slack)
    if bad.any():
        worst = live[bad][0]
        raise CorruptKnowledgeBaseError(
            f"{faiss_file} gave a cosine score of {worst:.4g}, outside [-1, 1]: its vectors are damaged; "
            + REBUILD_HINT.format(path=kb))
