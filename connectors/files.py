"""Files and directories: a recursive walk with include/exclude globs, a size cap, and symlinks that
never lead out of the root.

    from connectors.files import walk
    for item in walk("docs/", IngestConfig(include=["**/*.pdf"])):
        ...  # Raw (bytes + metadata) or Skip (source, reason, message)
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from connectors.base import Raw, Skip, iso_utc, sha256_hex
from connectors.config import IngestConfig
from connectors.formats import FORMATS, MIME, suffix_of


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob to regex: ``**/`` spans any number of directories, ``*`` and ``?`` stay inside one."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(rel: str, pattern: str) -> bool:
    """Match a POSIX relative path; a pattern without '/' also matches the bare file name.

    >>> glob_match("a/b/c.pdf", "**/*.pdf"), glob_match("c.pdf", "**/*.pdf"), glob_match("a/c.md", "*.md")
    (True, True, True)
    """
    if _glob_regex(pattern).match(rel):
        return True
    return "/" not in pattern and bool(_glob_regex(pattern).match(rel.rsplit("/", 1)[-1]))


def selected(rel: str, cfg: IngestConfig) -> bool:
    if cfg.include and not any(glob_match(rel, p) for p in cfg.include):
        return False
    return not any(glob_match(rel, p) for p in cfg.exclude)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def walk(source: str | os.PathLike[str], cfg: IngestConfig) -> Iterator[Raw | Skip]:
    """Yield every selected file under ``source`` (a directory or one file) as Raw or Skip.

    Order is sorted by relative path so runs are reproducible.
    """
    start = Path(source).expanduser()
    if start.is_file():
        root = start.resolve().parent
        yield _read(root / start.resolve().name, start.name, root, cfg, start.name)
        return
    root = start.resolve()
    seen_dirs = {root}
    stack = [(root, "")]  # (real dir, its path relative to the root as the user sees it)
    while stack:
        real_dir, rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError as e:
            yield Skip(rel_dir or ".", "unreadable", f"cannot list directory: {e.strerror}")
            continue
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not _inside(target, root):
                    # Globs decide first (an excluded link is silent), but a link that escapes the
                    # root is always worth a line in the report when it could have been loaded.
                    if selected(rel, cfg) or target.is_dir():
                        yield Skip(rel, "outside_root", f"symlink points outside the root (to {target})")
                    continue
                if not cfg.follow_symlinks:
                    if selected(rel, cfg):
                        yield Skip(rel, "symlink", "symlinks are not followed (follow_symlinks=false)")
                    continue
                if target.is_dir():
                    if target not in seen_dirs:  # a link back up the tree would loop forever
                        seen_dirs.add(target)
                        stack.append((target, rel + "/"))
                    continue
                if target.is_file() and selected(rel, cfg):
                    yield _read(target, rel, root, cfg, rel)
                continue
            if entry.is_dir(follow_symlinks=False):
                # prune a directory when an exclude pattern covers everything below it
                if any(p.endswith("/**") and glob_match(rel + "/x", p) for p in cfg.exclude):
                    continue
                seen_dirs.add(path.resolve())
                stack.append((path, rel + "/"))
                continue
            if entry.is_file(follow_symlinks=False) and selected(rel, cfg):
                yield _read(path, rel, root, cfg, rel)
        # files of a directory come first, then its subdirectories in name order
        stack.sort(key=lambda t: t[1], reverse=True)


def _read(path: Path, rel: str, root: Path, cfg: IngestConfig, source: str) -> Raw | Skip:
    suffix = suffix_of(path.name if not rel else rel)
    if suffix not in FORMATS:
        return Skip(source, "unsupported", f"unsupported file type {suffix or '(no extension)'!r}")
    try:
        st = path.stat()
    except OSError as e:
        return Skip(source, "unreadable", f"cannot stat: {e.strerror}")
    if st.st_size > cfg.max_file_bytes:
        return Skip(source, "too_large", f"{st.st_size} bytes > max_file_bytes={cfg.max_file_bytes}")
    try:
        with open(path, "rb") as f:
            data = f.read(cfg.max_file_bytes + 1)  # a file that grew since stat still stops at the cap
    except OSError as e:
        return Skip(source, "unreadable", f"cannot read: {e.strerror}")
    if len(data) > cfg.max_file_bytes:
        return Skip(source, "too_large", f"more than max_file_bytes={cfg.max_file_bytes} bytes")
    meta = {
        "source": source,
        "uri": path.as_uri(),
        "title": Path(rel).stem,
        "mime": MIME.get(suffix, "application/octet-stream"),
        "sha256": sha256_hex(data),
        "modified": iso_utc(st.st_mtime),
        "bytes": len(data),
    }
    return Raw(data=data, name=Path(rel).name, meta=meta)
