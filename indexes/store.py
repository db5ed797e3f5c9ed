"""Durability of a knowledge base directory: generations, the manifest, the writer's lock, salvage.

On disk (``DIR``)::

    manifest.json          names the current generation; swapped atomically, last step of every write
    gen-000007.faiss       the FAISS IndexIDMap2 of generation 7 (faiss.write_index, never pickle)
    gen-000007.sqlite      documents, chunks, FTS5 table, tombstones, and the generation number itself
    config.json            a JSON copy of the IndexConfig
    .lock                  flock(2)'d by the one writer (it holds the writer's pid)

A published generation is never modified. ``publish`` builds generation N+1 beside it (copy the
SQLite file, apply the caller's changes in one transaction, write the FAISS file), fsyncs both, and
only then replaces ``manifest.json`` atomically (write temp, fsync, rename, fsync directory). A crash
at any moment leaves the manifest naming N or N+1, both complete. Generation N is kept one more
round so a reader that read the old manifest can still open its files; ``cleanup`` removes older
leftovers and dead writers' temp files. Readers never take the lock: ``load_state`` loads the
generation the manifest names.

``load_generation`` checks the file sizes, the generation recorded inside the SQLite file, the
vector dimension, the vector count versus metadata rows, and last the files' checksums
(``indexes.integrity``: full SHA-256 up to a size, a sampled one above; manifests older than
checksums have none) against the manifest; any mismatch raises ``CorruptKnowledgeBaseError``
(which suggests ``hybrid index rebuild``) instead of opening empty. ``salvage_documents`` reads the documents back from the newest readable generation, and
``install_generation`` moves a freshly built generation in, for ``KnowledgeBase.rebuild``.

What goes into the tables (diffing documents, chunk rows, the FTS5 index) is the caller's business:
this module only creates the schema and runs the ``apply`` callback inside the write.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

from core.errors import CorruptKnowledgeBaseError, KnowledgeBaseError, LockedError
from core.io import atomic_write_text, fsync, fsync_dir
from core.types import Document
from indexes.config import IndexConfig
from indexes.integrity import REBUILD_HINT, damaged, file_checksums, is_damage, verify_checksums
from indexes.vectors import VectorIndex

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
GEN_RE = re.compile(r"^gen-(\d{6})\.(faiss|sqlite)$")

# The tables of a generation's SQLite file; ``publish`` adds the FTS5 table ``chunks_fts`` over ``chunks``.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, source_key TEXT, content_hash TEXT NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_source_key ON documents(source_key);
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS tombstones (vid INTEGER PRIMARY KEY);
"""


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the manifest's ``created``/``updated``)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# -- the writer's lock -----------------------------------------------------------------------------
# Locks this process holds: real path of the .lock file -> [owning thread id, depth, fd]. The owning
# thread may take its lock again (the CLI holds it across ingest and sync, and sync takes it too);
# any other thread is refused, as another process is.
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


class WriteLock:
    """An exclusive, non-blocking flock on DIR/.lock for the duration of one write; re-entrant in
    the thread that holds it."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self._key: str | None = None

    def _refuse(self) -> LockedError:
        return LockedError(f"knowledge base {self.path} is being written by another process "
                           "(its .lock is held); try again when that write finishes")

    def __enter__(self) -> "WriteLock":
        key = os.path.realpath(self.path / LOCK)
        me = threading.get_ident()
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                if held[0] != me:
                    raise self._refuse()
                held[1] += 1
                self._key, self.fd = key, held[2]
                return self
            fd = os.open(str(self.path / LOCK), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse() from None
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD[key] = [me, 1, fd]
            self._key, self.fd = key, fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._key is None:
            return
        with _HELD_GUARD:
            held = _HELD[self._key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[self._key]
                fcntl.flock(held[2], fcntl.LOCK_UN)
                os.close(held[2])
        self._key = self.fd = None


def lock_holder(path: Path) -> int | None:
    """The pid the current (or last) writer wrote into ``path/.lock``, if readable."""
    try:
        return int((path / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# -- the manifest ----------------------------------------------------------------------------------
def new_manifest(cfg: IndexConfig, emb: Any) -> dict[str, Any]:
    """The manifest fields fixed when a knowledge base is created (``publish`` adds the generation's own)."""
    return {
        "format_version": FORMAT_VERSION,
        "embedder": {"spec": cfg.embedder, "name": emb.name, "revision": emb.revision, "dim": int(emb.dim)},
        "dim": int(emb.dim),
        "metric": "inner_product",
        "normalized": True,
        "index": cfg.index,
        "chunker": {"size": cfg.chunk_size, "overlap": cfg.chunk_overlap, "mode": cfg.chunk_mode,
                    "min_chars": cfg.min_chunk_chars, "tokenizer": emb.name},
        "bm25": {"engine": "sqlite-fts5", "tokenizer": cfg.bm25_tokenizer},
        "config": dataclasses.asdict(cfg),
        "created": now(),
    }


def read_manifest(path: Path) -> dict[str, Any]:
    """``path/manifest.json``, checked for its required fields and a format version this code understands."""
    f = path / MANIFEST
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptKnowledgeBaseError(f"{f} is unreadable ({e}); " + REBUILD_HINT.format(path=path)) from None
    need = ("format_version", "generation", "files", "sizes", "dim", "embedder", "index", "config")
    if not isinstance(m, dict) or any(k not in m for k in need):
        raise CorruptKnowledgeBaseError(f"{f} is missing fields; " + REBUILD_HINT.format(path=path))
    if int(m["format_version"]) > FORMAT_VERSION:
        raise KnowledgeBaseError(f"{path} has format version {m['format_version']}, newer than this "
                                 f"version of hybrid understands ({FORMAT_VERSION}); upgrade hybrid")
    return m


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace ``path/manifest.json`` atomically: the commit point of every write."""
    atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def check_embedder(path: Path, manifest: dict[str, Any], emb: Any) -> None:
    """Refuse an embedder whose name, revision or dimension differ from the one the manifest records."""
    want = manifest["embedder"]
    got = (emb.name, str(emb.revision), int(emb.dim))
    if got != (want["name"], str(want["revision"]), int(want["dim"])):
        raise KnowledgeBaseError(
            f"knowledge base {path} was built with embedder {want['name']} (revision {want['revision']}, "
            f"dim {want['dim']}), but {got[0]} (revision {got[1]}, dim {got[2]}) was given; open it with the "
            f"same embedder or rebuild it: `hybrid index rebuild --kb {path} --set embedder=...`")


# -- reading a generation --------------------------------------------------------------------------
class State:
    """One loaded generation: its manifest, read-only SQLite connection and vector index."""

    def __init__(self, manifest: dict[str, Any], db: sqlite3.Connection, vectors: VectorIndex, mtime: int):
        self.manifest = manifest
        self.db = db
        self.vectors = vectors
        self.mtime = mtime
        self.generation = int(manifest["generation"])
        self.fields = {r[0] for r in db.execute("SELECT name FROM fields")}
        self.n_chunks = int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


def open_db_ro(path: Path) -> sqlite3.Connection:
    # immutable=1: a published generation never changes, so SQLite may skip locking entirely;
    # check_same_thread=False: the API serves searches from a thread pool (reads only).
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)


def load_state(path: Path, cfg: IndexConfig, vectors: VectorIndex | None = None, _retries: int = 3) -> State:
    """Load the generation the manifest currently names; ``vectors`` skips reading a FAISS file the caller already has."""
    for attempt in range(_retries):
        st = (path / MANIFEST).stat()
        manifest = read_manifest(path)
        try:
            return load_generation(path, manifest, cfg, st.st_mtime_ns, vectors)
        except FileNotFoundError:
            # a writer replaced the manifest and removed the files we were about to read: read it again
            if attempt == _retries - 1 or read_manifest(path)["generation"] == manifest["generation"]:
                missing = [f for f in manifest["files"].values() if not (path / f).exists()]
                raise CorruptKnowledgeBaseError(f"{path}: files named by {MANIFEST} are missing ({', '.join(missing)}); "
                                                + REBUILD_HINT.format(path=path)) from None
    raise AssertionError("unreachable")


def load_generation(path: Path, manifest: dict[str, Any], cfg: IndexConfig, mtime: int,
                    vectors: VectorIndex | None) -> State:
    """Open the generation ``manifest`` names and check it against the manifest (see the module docstring).

    Raises ``FileNotFoundError`` when a file is missing (``load_state`` retries on that)."""
    gen = int(manifest["generation"])
    hint = REBUILD_HINT.format(path=path)
    files = {k: path / v for k, v in manifest["files"].items()}
    for kind, f in files.items():
        if not f.exists():
            raise FileNotFoundError(str(f))
        size = f.stat().st_size
        if size != int(manifest["sizes"][kind]):
            raise CorruptKnowledgeBaseError(f"{f} is {size} bytes but the manifest recorded {manifest['sizes'][kind]} "
                                            f"(truncated or replaced); {hint}")
    try:
        db = open_db_ro(files["sqlite"])
        row = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
    except sqlite3.DatabaseError as e:
        raise CorruptKnowledgeBaseError(f"{files['sqlite']} is not a readable SQLite database ({e}); {hint}") from None
    if row is None or int(row[0]) != gen:
        db.close()
        raise CorruptKnowledgeBaseError(f"{files['sqlite']} belongs to generation {row[0] if row else '?'} but "
                                        f"{MANIFEST} names generation {gen}; {hint}")
    try:
        tombs = [r[0] for r in db.execute("SELECT vid FROM tombstones")]
        n_rows = int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
    except sqlite3.DatabaseError as e:
        db.close()
        raise CorruptKnowledgeBaseError(f"{files['sqlite']} is damaged ({e}); {hint}") from None
    caller_vectors = vectors is not None
    if vectors is None:
        try:
            vectors = VectorIndex.load(files["faiss"], manifest["index"], cfg, tombs)
        except BaseException:
            db.close()
            raise
    if vectors.dim != int(manifest["dim"]):
        db.close()
        raise CorruptKnowledgeBaseError(f"{files['faiss']} holds {vectors.dim}-d vectors, manifest says {manifest['dim']}; {hint}")
    if vectors.ntotal != n_rows + len(tombs):
        db.close()
        raise CorruptKnowledgeBaseError(
            f"{path}: {vectors.ntotal} vectors but {n_rows} chunk rows (+{len(tombs)} tombstones) in generation {gen}; {hint}")
    try:
        if not caller_vectors:  # else the caller has just written these files and hashed them
            # last, so the structural checks above keep their more specific messages; FAISS caps what
            # a damaged header can make it allocate, so reading before hashing is safe
            verify_checksums(path, manifest, files)
        return State(manifest, db, vectors, mtime)
    except sqlite3.Error as e:
        db.close()
        if not is_damage(e):
            raise
        raise damaged(files["sqlite"], path, e) from None
    except BaseException:
        db.close()
        raise


# -- writing a generation --------------------------------------------------------------------------
def apply_nothing(con: sqlite3.Connection) -> None:
    """The ``apply`` of generation 0: schema only, no rows."""
    return None


def publish(path: Path, base_manifest: dict[str, Any], gen: int, prev_db: Path | None, vectors: VectorIndex,
            apply: Callable[[sqlite3.Connection], None], cfg: IndexConfig) -> int:
    """Write generation ``gen`` (SQLite from ``prev_db`` + ``apply``, FAISS from ``vectors``), then swap the manifest."""
    db_final = path / f"gen-{gen:06d}.sqlite"
    ix_final = path / f"gen-{gen:06d}.faiss"
    db_tmp = path / f".gen-{gen:06d}.sqlite.{os.getpid()}.tmp"
    ix_tmp = path / f".gen-{gen:06d}.faiss.{os.getpid()}.tmp"
    try:
        if prev_db is not None:
            shutil.copyfile(prev_db, db_tmp)
        con = sqlite3.connect(str(db_tmp))
        try:
            # the temp file is thrown away on any failure, so SQLite's own journal buys nothing here
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.executescript(SCHEMA)
            con.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', "
                        f"content_rowid='vid', tokenize='{cfg.bm25_tokenizer}')")
            con.execute("BEGIN")
            apply(con)
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', ?)", (str(gen),))
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            con.execute("COMMIT")
        finally:
            con.close()
        fsync(db_tmp)
        vectors.save(ix_tmp)
        # hashed from the temp files, which are byte for byte what gets renamed into place
        checksums = file_checksums({ix_final.name: ix_tmp, db_final.name: db_tmp})
        os.replace(db_tmp, db_final)
        os.replace(ix_tmp, ix_final)
        fsync_dir(path)
    except BaseException:
        for f in (db_tmp, ix_tmp):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        raise
    manifest = dict(base_manifest)
    manifest.update({
        "format_version": FORMAT_VERSION,
        "generation": gen,
        "files": {"faiss": ix_final.name, "sqlite": db_final.name},
        "sizes": {"faiss": ix_final.stat().st_size, "sqlite": db_final.stat().st_size},
        "checksums": checksums,
        "counts": {"vectors": vectors.ntotal, "tombstones": len(vectors.tombstones)},
        "updated": now(),
    })
    # The commit point: before this rename the old generation is current, after it the new one.
    write_manifest(path, manifest)
    cleanup(path, gen)
    return gen


def record_checksums(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add checksums to a manifest without them for its files (the caller holds the lock and has
    opened the generation, so its files passed the other checks); returns the manifest written."""
    manifest = dict(manifest)
    manifest["checksums"] = file_checksums({v: path / v for v in manifest["files"].values()})
    write_manifest(path, manifest)
    return manifest


def cleanup(path: Path, current: int) -> None:
    """Remove generations older than current-1 and temp files of dead writers (we hold the lock)."""
    for f in path.iterdir():
        m = GEN_RE.match(f.name)
        if m and int(m.group(1)) < current - 1 or (m and int(m.group(1)) > current):
            f.unlink(missing_ok=True)
        elif f.name.startswith(".gen-") and f.name.endswith(".tmp"):
            f.unlink(missing_ok=True)


# -- rebuild ---------------------------------------------------------------------------------------
def next_free_generation(path: Path) -> int:
    """A generation number above every one on disk or in the manifest (even a damaged one)."""
    gens = [int(m.group(1)) for f in path.iterdir() if (m := GEN_RE.match(f.name))]
    try:
        gens.append(int(read_manifest(path)["generation"]))
    except (CorruptKnowledgeBaseError, KnowledgeBaseError, OSError, KeyError, ValueError):
        pass
    return max(gens, default=-1) + 1


def install_generation(path: Path, src: Path) -> int:
    """Move the current generation of the knowledge base in ``src`` into ``path``, renumbered after
    whatever is there, and swap ``path``'s manifest to it. The caller holds ``path``'s lock."""
    gen = next_free_generation(path)
    man = read_manifest(src)
    for kind in ("faiss", "sqlite"):
        f = src / man["files"][kind]
        dst = path / f"gen-{gen:06d}.{kind}"
        if kind == "sqlite":
            con = sqlite3.connect(str(f))
            con.execute("UPDATE meta SET value=? WHERE key='generation'", (str(gen),))
            con.commit()
            con.close()
            fsync(f)
        os.replace(f, dst)
    man["generation"] = gen
    man["files"] = {"faiss": f"gen-{gen:06d}.faiss", "sqlite": f"gen-{gen:06d}.sqlite"}
    man["sizes"] = {k: (path / v).stat().st_size for k, v in man["files"].items()}
    man["checksums"] = file_checksums({v: path / v for v in man["files"].values()})  # the SQLite file changed
    fsync_dir(path)
    write_manifest(path, man)
    return gen


def salvage_documents(path: Path) -> tuple[list[Document], dict[str, Any] | None]:
    """Documents for a rebuild without sources: from the generation the manifest publishes when it is
    readable, else from the newest readable one. The published one comes first because a sync killed
    between renaming its files into place and swapping the manifest leaves a newer, unpublished
    generation on disk that readers never saw (and whose pruning must not be made real by a rebuild)."""
    cfg = None
    published = None
    try:
        man = read_manifest(path)
        cfg, published = man.get("config"), path / f"gen-{int(man['generation']):06d}.sqlite"
    except (CorruptKnowledgeBaseError, KnowledgeBaseError, TypeError, ValueError):
        pass
    dbs = sorted((f for f in path.glob("gen-*.sqlite")), reverse=True)
    if published is not None and published in dbs:
        dbs.remove(published)
        dbs.insert(0, published)
    for f in dbs:
        try:
            con = open_db_ro(f)
            docs = [Document(id=r[0], text=r[1], metadata=json.loads(r[2]))
                    for r in con.execute("SELECT doc_id, text, metadata FROM documents ORDER BY rowid")]
            con.close()
            return docs, cfg
        except (sqlite3.DatabaseError, json.JSONDecodeError):
            continue
    raise KnowledgeBaseError(f"no readable generation in {path} to rebuild from; pass the sources: "
                             f"`hybrid index rebuild --kb {path} SOURCES`")
