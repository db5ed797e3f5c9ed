"""Atomic file writes and the user cache directory. Never pickle: JSON, SQLite, safetensors."""

from __future__ import annotations

import io as _stdio
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Union


def cache_dir(*parts: str) -> Path:
    """``$HYBRID_CACHE`` or ``$XDG_CACHE_HOME/hybrid`` or ``~/.cache/hybrid``, created on demand."""
    root = os.environ.get("HYBRID_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hybrid"
    )
    p = Path(root, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def fsync(target: int | str | os.PathLike[str]) -> None:
    """Flush a file to disk: an open descriptor, or a closed file by path (one a library wrote).
    The one place this project calls ``os.fsync``; errors propagate (see ``fsync_dir``)."""
    if isinstance(target, int):
        os.fsync(target)
        return
    fd = os.open(os.fspath(target), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames and new entries in directory ``path`` durable. Best effort: some filesystems
    refuse to open or fsync a directory, and that is not an error."""
    try:
        fsync(path)
    except OSError:
        pass


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """Flush every file under directory ``path``, then its directories, deepest first: what a library
    wrote into a temporary directory is on disk before that directory is renamed into place."""
    dirs = []
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                fsync(p)
        dirs.append(dirpath)
    for d in reversed(dirs):
        fsync_dir(d)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(p.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write rows as JSON lines; returns the count."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


OnError = Union[Literal["raise", "skip"], Callable[[int, ValueError], None]]


def parse_jsonl(lines: str | Iterable[str | bytes], *, source: str = "<jsonl>", on_error: OnError = "raise",
                errors: str = "strict") -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) from JSON lines; blank lines are passed over.

    ``lines`` is a whole text (split at ``\\n``, ``\\r\\n`` and ``\\r`` only, so a U+2028 inside a JSON
    string stays in its line) or an iterable of str or UTF-8 bytes lines (``errors`` as in
    ``bytes.decode``). A line that is not JSON (or not UTF-8) is handled by ``on_error``:

    - ``"raise"``: ``InputError("<source>:<n>: invalid JSON (...)")`` (or ``not UTF-8``);
    - ``"skip"``: passed over silently;
    - a callable ``(n, error)``, then the line is passed over; ``error`` is the
      ``json.JSONDecodeError`` (``.msg``, ``.colno``) or ``UnicodeDecodeError``.
    """
    if isinstance(lines, str):
        lines = _stdio.StringIO(lines, newline=None)
    n = 0
    for raw in lines:
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8", errors)
            except UnicodeDecodeError as e:
                n += 1
                _bad_line(source, n, e, on_error)
                continue
            # bytes lines end at b"\n" only: split at a lone \r too, as a text-mode file would
            pieces: Iterable[str] = _stdio.StringIO(raw, newline=None) if "\r" in raw else (raw,)
        else:
            pieces = (raw,)
        for line in pieces:
            n += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                _bad_line(source, n, e, on_error)
                continue
            yield n, obj


def _bad_line(source: str, n: int, e: ValueError, on_error: OnError) -> None:
    if on_error == "skip":
        return
    if callable(on_error):
        on_error(n, e)
        return
    from core.errors import InputError

    if isinstance(e, UnicodeDecodeError):
        raise InputError(f"{source}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None
    raise InputError(f"{source}:{n}: invalid JSON ({e.msg})") from None


def read_jsonl(path: str | os.PathLike[str], *, on_error: OnError = "raise",
               errors: str = "strict") -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) of a JSONL file, streamed; blank lines are passed over.

    Bad lines follow ``on_error`` (see ``parse_jsonl``): by default an ``InputError`` naming
    ``path:line``. ``errors="replace"`` reads lines that are not UTF-8 with U+FFFD instead.
    """
    with open(path, "rb") as f:
        yield from parse_jsonl(f, source=str(path), on_error=on_error, errors=errors)
