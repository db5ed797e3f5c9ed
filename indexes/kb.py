"""The knowledge base: chunks, vectors (FAISS), BM25 (SQLite FTS5), metadata (SQLite), one manifest.

    from indexes.kb import KnowledgeBase
    from indexes.config import IndexConfig

    with KnowledgeBase.create(".cache/kb", IndexConfig()) as kb:   # or KnowledgeBase.open(".cache/kb")
        print(kb.sync(docs))            # added 12, updated 0, unchanged 0, deleted 0; embedded 85 chunks
        for hit in kb.search("notice period for termination", k=5, filters={"source": "lease.html"}):
            print(hit.rank, round(hit.score, 3), hit.chunk.metadata["source"], hit.chunk.text[:80])

On disk (``DIR``)::

    manifest.json          names the current generation; swapped atomically, last step of every write
    gen-000007.faiss       the FAISS IndexIDMap2 of generation 7 (faiss.write_index, never pickle)
    gen-000007.sqlite      documents, chunks, FTS5 table, tombstones, and the generation number itself
    config.json            a JSON copy of the IndexConfig
    .lock                  flock(2)'d by the one writer

Durability. A published generation is never modified. A write builds generation N+1 beside it
(copy the SQLite file, apply changes, write the FAISS file), fsyncs both, and only then replaces
``manifest.json`` atomically (write temp, fsync, rename, fsync directory). A crash at any moment
leaves the manifest naming N or N+1, both complete. Generation N is kept one more round so a reader
that read the old manifest can still open its files; older leftovers are removed by the next writer.
Readers never take the lock: they load the generation the manifest names and notice a newer
manifest on their next search.

On open, the generation recorded inside the SQLite file, the file sizes, and the vector count versus
metadata rows are all checked against the manifest; any mismatch raises
``CorruptKnowledgeBaseError`` (which suggests ``hybrid index rebuild``) instead of opening empty.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hybrid.errors import (CorruptKnowledgeBaseError, InputError, KnowledgeBaseError, LockedError,
                           ModelError)
from hybrid.io import atomic_write_text, fsync_dir
from hybrid.types import Chunk, Document, Hit
from indexes.config import SEARCH_MODES, IndexConfig
from indexes.bm25 import bm25_search
from indexes.filters import filter_sql
from indexes.fusion import mmr as _mmr
from indexes.fusion import rrf
from indexes.vectors import VectorIndex

# Names defined here before the module was split by job, still importable from indexes.kb.
from indexes.bm25 import STOPWORDS as _STOP  # noqa: F401
from indexes.filters import FIELD_RE as _FIELD_RE  # noqa: F401
from indexes.filters import OPERATORS as _OPS  # noqa: F401
from indexes.filters import filter_scalar as _filter_scalar  # noqa: F401
from indexes.filters import filter_values as _filter_values  # noqa: F401

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
REBUILD_HINT = "run `hybrid index rebuild --kb {path}` to rebuild it (add your SOURCES if its documents are lost too)"
_GEN_RE = re.compile(r"^gen-(\d{6})\.(faiss|sqlite)$")

_SCHEMA = """
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


@dataclass
class SyncReport:
    """What a sync did. ``str(report)`` is the one-line summary the CLI prints."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    duplicates: int = 0  # identical copies in the input, counted once
    chunks_embedded: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    generation: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def __str__(self) -> str:
        if not self.changed:
            return (f"nothing to do: {self.unchanged} documents unchanged, embedded 0 chunks "
                    f"(generation {self.generation})")
        return (f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, deleted {self.deleted} "
                f"documents; embedded {self.chunks_embedded} chunks, removed {self.chunks_removed} "
                f"(generation {self.generation}, {self.seconds:.1f}s)")


def content_hash(doc: Document) -> str:
    h = hashlib.sha256(doc.text.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(json.dumps(doc.metadata, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def source_key(doc: Document) -> str | None:
    """Which source unit a document came from (file/URL + page + row); None when unknown."""
    m = doc.metadata
    src = m.get("uri") or m.get("source")
    if not src:
        return None
    return f"{src}#{m.get('page', '')}#{m.get('row', '')}"


def vector_id(chunk_id: str) -> int:
    """The FAISS id of a chunk: 60 bits of sha256 (positive int64, stable across rebuilds)."""
    return int(hashlib.sha256(chunk_id.encode()).hexdigest()[:15], 16)


def _json_default(o: Any) -> Any:
    if isinstance(o, (_dt.date, _dt.datetime)):
        return o.isoformat()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=_json_default)


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _WriteLock:
    """An exclusive, non-blocking flock on DIR/.lock for the duration of one write."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "_WriteLock":
        fd = os.open(str(self.path / LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(f"knowledge base {self.path} is being written by another process "
                                  "(its .lock is held); try again when that write finishes") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class _State:
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


class KnowledgeBase:
    """Chunks + FAISS vectors + FTS5 BM25 + SQLite metadata, persisted in generations. See the module docstring.

    >>> from indexes.embed import HashEmbedder
    >>> kb = KnowledgeBase.create(tmp / "kb", IndexConfig(embedder="hash"), embedder=HashEmbedder())  # doctest: +SKIP
    >>> kb.sync([Document.create("Rent is due on the 1st.", {"source": "lease.md"})]).added  # doctest: +SKIP
    1
    """

    def __init__(self, path: Path, cfg: IndexConfig, embedder: Any, readonly: bool, state: _State):
        self.path = path
        self.cfg = cfg
        self._embedder = embedder
        self.readonly = readonly
        self._state = state
        self._refresh_lock = threading.Lock()

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], cfg: IndexConfig | None = None, embedder: Any = None,
               *, exist_ok: bool = False) -> "KnowledgeBase":
        """Make an empty knowledge base (generation 0) in ``path``. ``exist_ok`` opens an existing one."""
        cfg = cfg or IndexConfig()
        p = Path(path)
        if (p / MANIFEST).exists():
            if exist_ok:
                return cls.open(p, embedder=embedder)
            raise KnowledgeBaseError(f"a knowledge base already exists in {p}; open or sync it instead")
        if p.exists() and not p.is_dir():
            raise InputError(f"{p} exists and is not a directory")
        p.mkdir(parents=True, exist_ok=True)
        emb = embedder if embedder is not None else cls._make_embedder(cfg)
        with _WriteLock(p):
            if (p / MANIFEST).exists():
                raise KnowledgeBaseError(f"a knowledge base already exists in {p}; open or sync it instead")
            base = {
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
                "created": _now(),
            }
            vectors = VectorIndex.new(cfg.index, int(emb.dim), cfg)
            _publish(p, base, 0, None, vectors, _apply_nothing, cfg)
            from hybrid.config import save_config_json

            save_config_json(cfg, p / "config.json")
        return cls.open(p, embedder=emb)

    @classmethod
    def open(cls, path: str | os.PathLike[str], embedder: Any = None, readonly: bool = False,
             overrides: IndexConfig | dict[str, Any] | None = None) -> "KnowledgeBase":
        """Open an existing knowledge base. ``overrides`` may change search-time settings (efSearch, nprobe, rrf_k...)."""
        p = Path(path)
        if not (p / MANIFEST).exists():
            if p.is_dir() and any(p.glob("gen-*")):
                raise CorruptKnowledgeBaseError(f"{p} has index files but no {MANIFEST}; "
                                                + REBUILD_HINT.format(path=p))
            raise KnowledgeBaseError(f"no knowledge base in {p} (no {MANIFEST}); build one with "
                                     f"`hybrid index build --kb {p} SOURCES`")
        manifest = _read_manifest(p)
        stored = dict(manifest.get("config") or {})
        if overrides is not None:
            extra = dataclasses.asdict(overrides) if dataclasses.is_dataclass(overrides) else dict(overrides)
            known = {f.name for f in dataclasses.fields(IndexConfig)}
            unknown = sorted(set(extra) - known)
            if unknown:
                from hybrid.errors import ConfigError

                raise ConfigError(f"unknown IndexConfig setting {unknown[0]!r} in overrides")
            for k, v in extra.items():
                if k not in IndexConfig.STORED:
                    stored[k] = v
        try:
            cfg = IndexConfig(**{k: v for k, v in stored.items() if k in {f.name for f in dataclasses.fields(IndexConfig)}})
        except (TypeError, ValueError) as e:
            raise CorruptKnowledgeBaseError(f"{p / MANIFEST}: bad config ({e}); " + REBUILD_HINT.format(path=p)) from None
        if embedder is not None:
            _check_embedder(p, manifest, embedder)
        state = _load_state(p, cfg)
        return cls(p, cfg, embedder, readonly, state)

    @staticmethod
    def _make_embedder(cfg: IndexConfig) -> Any:
        from indexes.embed import get_embedder

        if cfg.embedder == "hash" or cfg.embedder.startswith("hash:"):
            return get_embedder(cfg.embedder)
        return get_embedder(cfg.embedder, bf16=cfg.bf16)

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            emb = self._make_embedder(self.cfg)
            _check_embedder(self.path, self._state.manifest, emb)
            self._embedder = emb
        return self._embedder

    @property
    def generation(self) -> int:
        return self._state.generation

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._state.manifest)

    def refresh(self) -> bool:
        """Load a newer generation if a writer published one; True when it did."""
        try:
            st = (self.path / MANIFEST).stat()
        except FileNotFoundError:
            return False
        if st.st_mtime_ns == self._state.mtime:
            return False
        manifest = _read_manifest(self.path)
        if int(manifest["generation"]) == self._state.generation:
            self._state.mtime = st.st_mtime_ns
            return False
        with self._refresh_lock:
            if self._state.generation != int(manifest["generation"]):
                # not closed here: another thread may be mid-search on it; GC closes it
                self._state = _load_state(self.path, self.cfg)
        return True

    def close(self) -> None:
        self._state.close()

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise KnowledgeBaseError(f"knowledge base {self.path} was opened read-only")

    def sync(self, documents: Iterable[Document], prune: bool = False, progress: bool = False) -> SyncReport:
        """Make the knowledge base hold ``documents``: add new, re-embed changed, keep unchanged.

        A document is *changed* when its id is known but its text or metadata differ, or when its id is
        new but it comes from the same source unit (file/URL + page + row) as a stored document, which
        it then replaces. ``prune=True`` also deletes every stored document not in ``documents``.
        Two input documents with the same id and different text are an error; nothing is written.
        """
        self._writable()
        t0 = time.perf_counter()
        docs = list(documents)
        incoming: dict[str, Document] = {}
        report = SyncReport()
        for d in docs:
            if not isinstance(d, Document):
                raise InputError(f"sync expects Document objects, got {type(d).__name__}")
            prev = incoming.get(d.id)
            if prev is not None:
                if prev.text != d.text:
                    raise InputError(f"duplicate document id {d.id!r} with different text "
                                     f"({prev.text[:40]!r} vs {d.text[:40]!r}); nothing was written")
                report.duplicates += 1
                continue
            incoming[d.id] = d
        with _WriteLock(self.path):
            self.refresh()
            return self._sync_locked(incoming, prune, progress, report, t0)

    def _sync_locked(self, incoming: dict[str, Document], prune: bool, progress: bool,
                     report: SyncReport, t0: float) -> SyncReport:
        db = self._state.db
        stored = {r[0]: (r[1], r[2]) for r in db.execute("SELECT doc_id, source_key, content_hash FROM documents")}
        by_key: dict[str, list[str]] = {}
        for did, (skey, _) in stored.items():
            if skey:
                by_key.setdefault(skey, []).append(did)
        in_keys: dict[str, int] = {}
        for d in incoming.values():
            k = source_key(d)
            if k:
                in_keys[k] = in_keys.get(k, 0) + 1

        upserts: list[Document] = []  # new or changed
        replaced: set[str] = set()  # stored doc ids superseded by a new id from the same source unit
        for did, d in incoming.items():
            h = content_hash(d)
            if did in stored:
                if stored[did][1] == h:
                    report.unchanged += 1
                else:
                    report.updated += 1
                    upserts.append(d)
                continue
            k = source_key(d)
            olds = [o for o in by_key.get(k, []) if o not in incoming] if k else []
            if k and in_keys.get(k) == 1 and len(olds) == 1:
                replaced.add(olds[0])
                report.updated += 1
            else:
                report.added += 1
            upserts.append(d)
        to_delete = set(replaced)
        if prune:
            gone = [did for did in stored if did not in incoming and did not in replaced]
            to_delete.update(gone)
            report.deleted = len(gone)

        if not upserts and not to_delete:
            report.generation = self.generation
            report.seconds = time.perf_counter() - t0
            return report

        # Chunk and embed BEFORE touching any file: a bad embedding leaves the KB as it was.
        from indexes.chunking import chunk_documents

        emb = self.embedder
        new_chunks = chunk_documents(upserts, self.cfg, emb, progress=progress and len(upserts) > 200)
        upsert_ids = {d.id for d in upserts}
        old_rows = {}
        if upsert_ids or to_delete:
            touched = list(upsert_ids | to_delete)
            for i in range(0, len(touched), 500):
                part = touched[i:i + 500]
                q = f"SELECT vid, chunk_id, doc_id FROM chunks WHERE doc_id IN ({','.join('?' * len(part))})"
                for vid, cid, did in db.execute(q, part):
                    old_rows[cid] = (vid, did)
        keep_cids = {c.id for c in new_chunks if c.id in old_rows and old_rows[c.id][1] == c.doc_id}
        to_embed = [c for c in new_chunks if c.id not in keep_cids]
        remove_vids = [vid for cid, (vid, _) in old_rows.items() if cid not in keep_cids]
        vecs = self._embed([c.text for c in to_embed], progress=progress)
        new_vids = [vector_id(c.id) for c in to_embed]
        if len(set(new_vids)) != len(new_vids):
            raise InputError("two chunks share a text and position in one document id; deduplicate the input")

        report.chunks_embedded = len(to_embed)
        report.chunks_removed = len(remove_vids)
        report.chunks_kept = len(keep_cids)

        # Change a copy: searches running meanwhile (API threads) keep a consistent index, and a
        # failure below leaves this object exactly as it was.
        vectors = self._state.vectors.copy()
        vectors.remove(remove_vids)
        vectors.add(np.array(new_vids, dtype=np.int64), vecs)

        def apply(con: sqlite3.Connection) -> None:
            _apply_changes(con, upserts, to_delete, new_chunks, keep_cids, remove_vids, vectors)

        gen = _publish(self.path, self._state.manifest, self.generation + 1, self._db_file(), vectors, apply, self.cfg)
        # the old state is not closed: a search in another thread may still be reading it (GC closes it)
        self._state = _load_state(self.path, self.cfg, vectors=vectors)
        report.generation = gen
        report.seconds = time.perf_counter() - t0
        return report

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents (and their chunks) by id; returns how many were stored. Unknown ids are ignored."""
        self._writable()
        ids = list(dict.fromkeys(str(d) for d in doc_ids))
        with _WriteLock(self.path):
            self.refresh()
            db = self._state.db
            present = [d for d in ids if db.execute("SELECT 1 FROM documents WHERE doc_id=?", (d,)).fetchone()]
            if not present:
                return 0
            vids = []
            for d in present:
                vids.extend(r[0] for r in db.execute("SELECT vid FROM chunks WHERE doc_id=?", (d,)))
            vectors = self._state.vectors.copy()
            vectors.remove(vids)

            def apply(con: sqlite3.Connection) -> None:
                _apply_changes(con, [], set(present), [], set(), vids, vectors)

            _publish(self.path, self._state.manifest, self.generation + 1, self._db_file(), vectors, apply, self.cfg)
            self._state = _load_state(self.path, self.cfg, vectors=vectors)
            return len(present)

    def documents(self) -> list[Document]:
        """Every stored document (text and metadata), e.g. to rebuild with other settings."""
        return [Document(id=r[0], text=r[1], metadata=json.loads(r[2]))
                for r in self._state.db.execute("SELECT doc_id, text, metadata FROM documents ORDER BY rowid")]

    @classmethod
    def rebuild(cls, path: str | os.PathLike[str], documents: Iterable[Document] | None = None,
                cfg: IndexConfig | None = None, embedder: Any = None, progress: bool = False) -> tuple["KnowledgeBase", SyncReport]:
        """Build a fresh generation from ``documents`` (or the documents stored in the newest readable
        generation), replacing whatever is there, corrupt or not. ``cfg`` may change any setting."""
        p = Path(path)
        docs = list(documents) if documents is not None else None
        old_cfg = None
        if docs is None:
            docs, old_cfg = _salvage_documents(p)
        elif (p / MANIFEST).exists():
            try:
                old_cfg = _read_manifest(p).get("config")
            except CorruptKnowledgeBaseError:
                old_cfg = None
        if cfg is None:
            cfg = IndexConfig(**old_cfg) if old_cfg else IndexConfig()
        tmp = p.with_name(p.name + ".rebuild")
        shutil.rmtree(tmp, ignore_errors=True)
        kb = cls.create(tmp, cfg, embedder=embedder)
        try:
            report = kb.sync(docs, progress=progress)
        finally:
            kb.close()
        p.mkdir(parents=True, exist_ok=True)
        with _WriteLock(p):
            # Move the fresh generation's files in, renumbered after whatever is there, then swap the manifest.
            gen = _next_free_generation(p)
            man = _read_manifest(tmp)
            for kind in ("faiss", "sqlite"):
                src = tmp / man["files"][kind]
                dst = p / f"gen-{gen:06d}.{kind}"
                if kind == "sqlite":
                    con = sqlite3.connect(str(src))
                    con.execute("UPDATE meta SET value=? WHERE key='generation'", (str(gen),))
                    con.commit()
                    con.close()
                    _fsync_file(src)
                os.replace(src, dst)
            man["generation"] = gen
            man["files"] = {"faiss": f"gen-{gen:06d}.faiss", "sqlite": f"gen-{gen:06d}.sqlite"}
            man["sizes"] = {k: (p / v).stat().st_size for k, v in man["files"].items()}
            fsync_dir(p)
            atomic_write_text(p / MANIFEST, json.dumps(man, indent=2, sort_keys=True) + "\n")
            from hybrid.config import save_config_json

            save_config_json(cfg, p / "config.json")
            _cleanup(p, gen)
        shutil.rmtree(tmp, ignore_errors=True)
        report.generation = gen
        return cls.open(p, embedder=embedder), report

    def _db_file(self) -> Path:
        return self.path / self._state.manifest["files"]["sqlite"]

    def _embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        dim = int(self._state.manifest["dim"])
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        emb = self.embedder
        vecs = emb.embed(list(texts), batch_size=self.cfg.batch_size, progress=progress)
        vecs = np.asarray(vecs)
        if vecs.ndim != 2 or vecs.shape != (len(texts), dim):
            raise ModelError(f"embedder {emb.name} returned shape {tuple(vecs.shape)}, expected ({len(texts)}, {dim}); "
                             "nothing was written")
        if not np.isfinite(vecs).all():
            bad = int((~np.isfinite(vecs).all(axis=1)).sum())
            raise ModelError(f"embedder {emb.name} returned NaN or infinite values for {bad} of {len(texts)} "
                             "texts; nothing was written")
        vecs = vecs.astype(np.float32, copy=False)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)

    # -- searching ------------------------------------------------------------------------------
    def _check_query(self, query: Any) -> str:
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if not query.strip():
            raise InputError("query is empty")
        if len(query) > self.cfg.max_query_chars:
            raise InputError(f"query is {len(query):,} characters, more than max_query_chars="
                             f"{self.cfg.max_query_chars:,}; shorten it")
        return query

    def _check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"k must be an integer, got {k!r}")
        k = int(k)
        if k <= 0:
            raise InputError(f"k must be > 0, got {k}")
        n = self._state.n_chunks
        if n == 0:
            raise InputError(f"knowledge base {self.path} is empty; sync documents into it first")
        if k > n:
            raise InputError(f"k={k} is larger than the knowledge base ({n} chunks); ask for at most {n}")
        return k

    def _check_mode(self, mode: str) -> str:
        if mode not in SEARCH_MODES:
            raise InputError(f"mode must be one of {list(SEARCH_MODES)}, got {mode!r}")
        return mode

    def search(self, query: str, k: int = 5, filters: dict[str, Any] | None = None, mode: str = "hybrid",
               mmr: bool = False) -> list[Hit]:
        """Top-``k`` chunks for ``query``; ``Hit.score`` is higher for more relevant, ``Hit.scores`` has the parts."""
        return self.search_batch([query], k, filters=filters, mode=mode, mmr=mmr)[0]

    def search_batch(self, queries: Sequence[str], k: int = 5, filters: dict[str, Any] | None = None,
                     mode: str = "hybrid", mmr: bool = False) -> list[list[Hit]]:
        """``search`` for many queries: one embedding batch and one FAISS call for all of them."""
        self.refresh()
        if isinstance(queries, str):
            raise InputError("search_batch expects a list of queries, got a single string")
        queries = [self._check_query(q) for q in queries]
        mode = self._check_mode(mode)
        k = self._check_k(k)
        if not queries:
            return []
        st = self._state  # one generation for the whole call, even if a writer publishes meanwhile
        where = filter_sql(filters, st.fields) if filters else None  # checked once, used by FAISS and BM25
        allowed = self._allowed(where, st) if where is not None else None
        if allowed is not None and len(allowed) == 0:
            return [[] for _ in queries]
        depth = k if mode != "hybrid" and not mmr else max(k, self.cfg.fusion_depth)
        depth = min(depth, st.n_chunks)
        qvecs = None
        dense: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode in ("dense", "hybrid") or mmr:
            qvecs = self._embed(queries)
            scores, ids = st.vectors.search(qvecs, depth, allowed=allowed)
            for i in range(len(queries)):
                dense[i] = [(int(v), float(s)) for v, s in zip(ids[i], scores[i]) if v >= 0]
        sparse: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode in ("bm25", "hybrid"):
            for i, q in enumerate(queries):
                sparse[i] = bm25_search(st.db, q, depth, self.cfg.bm25_max_terms, where)
        out = []
        for i in range(len(queries)):
            out.append(self._assemble(dense[i], sparse[i], mode, k, mmr, qvecs[i] if qvecs is not None else None, st))
        return out

    def _assemble(self, dense: list[tuple[int, float]], sparse: list[tuple[int, float]], mode: str, k: int,
                  use_mmr: bool, qvec: np.ndarray | None, st: _State) -> list[Hit]:
        d_score = dict(dense)
        s_score = dict(sparse)
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = sparse
        else:
            ranked = [(int(v), s) for v, s in rrf([[v for v, _ in dense], [v for v, _ in sparse]], k=self.cfg.rrf_k,
                                                   weights=[self.cfg.dense_weight, self.cfg.bm25_weight])]
        if use_mmr and qvec is not None and ranked:
            pool = [v for v, _ in ranked]
            picked = _mmr(qvec, st.vectors.reconstruct(pool), k, self.cfg.mmr_lambda)
            ranked = [ranked[j] for j in picked]
        ranked = ranked[:k]
        rows = self._rows([v for v, _ in ranked], st)
        hits = []
        for r, (vid, score) in enumerate(ranked, 1):
            row = rows.get(vid)
            if row is None:  # a tombstoned vector (HNSW) or a race with a writer: skip it
                continue
            parts = {}
            if vid in d_score:
                parts["dense"] = d_score[vid]
            if vid in s_score:
                parts["bm25"] = s_score[vid]
            if mode == "hybrid":
                parts["rrf"] = score
            hits.append(Hit(chunk=row, score=float(score), rank=len(hits) + 1, scores=parts))
        return hits

    def _rows(self, vids: list[int], st: _State) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        db = st.db
        for i in range(0, len(vids), 500):
            part = vids[i:i + 500]
            q = f"SELECT vid, chunk_id, doc_id, text, metadata FROM chunks WHERE vid IN ({','.join('?' * len(part))})"
            for vid, cid, did, text, meta in db.execute(q, part):
                out[vid] = Chunk(id=cid, doc_id=did, text=text, metadata=json.loads(meta))
        return out

    def _allowed(self, where: tuple[str, list[Any]], st: _State) -> np.ndarray:
        fsql, fargs = where
        rows = st.db.execute(f"SELECT c.vid FROM chunks c WHERE {fsql}", fargs).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # -- LangChain and stats ---------------------------------------------------------------------
    def as_retriever(self, k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None, mmr: bool = False):
        """A ``langchain_core`` ``BaseRetriever`` over this knowledge base."""
        from indexes.langchain import KnowledgeBaseRetriever

        return KnowledgeBaseRetriever(kb=self, k=k, mode=mode, filters=filters, mmr=mmr)

    def stats(self) -> dict[str, Any]:
        st = self._state
        m = st.manifest
        size = sum((self.path / f).stat().st_size for f in m["files"].values() if (self.path / f).exists())
        return {
            "path": str(self.path),
            "generation": st.generation,
            "documents": int(st.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]),
            "chunks": st.n_chunks,
            "vectors": st.vectors.ntotal,
            "tombstones": len(st.vectors.tombstones),
            "index": m["index"],
            "embedder": m["embedder"]["name"],
            "embedder_revision": m["embedder"]["revision"],
            "dim": m["dim"],
            "metric": m["metric"],
            "chunker": m["chunker"],
            "bm25": m["bm25"]["engine"],
            "fields": sorted(st.fields),
            "bytes": size,
            "created": m.get("created"),
            "updated": m.get("updated"),
        }


# -- module helpers ---------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _check_embedder(path: Path, manifest: dict[str, Any], emb: Any) -> None:
    want = manifest["embedder"]
    got = (emb.name, str(emb.revision), int(emb.dim))
    if got != (want["name"], str(want["revision"]), int(want["dim"])):
        raise KnowledgeBaseError(
            f"knowledge base {path} was built with embedder {want['name']} (revision {want['revision']}, "
            f"dim {want['dim']}), but {got[0]} (revision {got[1]}, dim {got[2]}) was given; open it with the "
            f"same embedder or rebuild it: `hybrid index rebuild --kb {path} --set embedder=...`")


def _read_manifest(path: Path) -> dict[str, Any]:
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


def _open_db_ro(path: Path) -> sqlite3.Connection:
    # immutable=1: a published generation never changes, so SQLite may skip locking entirely;
    # check_same_thread=False: the API serves searches from a thread pool (reads only).
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)


def _load_state(path: Path, cfg: IndexConfig, vectors: VectorIndex | None = None, _retries: int = 3) -> _State:
    for attempt in range(_retries):
        st = (path / MANIFEST).stat()
        manifest = _read_manifest(path)
        try:
            return _load_generation(path, manifest, cfg, st.st_mtime_ns, vectors)
        except FileNotFoundError:
            # a writer replaced the manifest and removed the files we were about to read: read it again
            if attempt == _retries - 1 or _read_manifest(path)["generation"] == manifest["generation"]:
                missing = [f for f in manifest["files"].values() if not (path / f).exists()]
                raise CorruptKnowledgeBaseError(f"{path}: files named by {MANIFEST} are missing ({', '.join(missing)}); "
                                                + REBUILD_HINT.format(path=path)) from None
    raise AssertionError("unreachable")


def _load_generation(path: Path, manifest: dict[str, Any], cfg: IndexConfig, mtime: int,
                     vectors: VectorIndex | None) -> _State:
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
        db = _open_db_ro(files["sqlite"])
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
    if vectors is None:
        vectors = VectorIndex.load(files["faiss"], manifest["index"], cfg, tombs)
    if vectors.dim != int(manifest["dim"]):
        db.close()
        raise CorruptKnowledgeBaseError(f"{files['faiss']} holds {vectors.dim}-d vectors, manifest says {manifest['dim']}; {hint}")
    if vectors.ntotal != n_rows + len(tombs):
        db.close()
        raise CorruptKnowledgeBaseError(
            f"{path}: {vectors.ntotal} vectors but {n_rows} chunk rows (+{len(tombs)} tombstones) in generation {gen}; {hint}")
    return _State(manifest, db, vectors, mtime)


def _apply_nothing(con: sqlite3.Connection) -> None:
    return None


def _apply_changes(con: sqlite3.Connection, upserts: list[Document], to_delete: set[str], new_chunks: list[Chunk],
                   keep_cids: set[str], remove_vids: list[int], vectors: VectorIndex) -> None:
    for vid in remove_vids:
        row = con.execute("SELECT text FROM chunks WHERE vid=?", (vid,)).fetchone()
        if row is not None:
            con.execute("INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES('delete', ?, ?)", (vid, row[0]))
        con.execute("DELETE FROM chunks WHERE vid=?", (vid,))
    for did in to_delete:
        con.execute("DELETE FROM documents WHERE doc_id=?", (did,))
        con.execute("DELETE FROM chunks WHERE doc_id=?", (did,))  # no rows left normally; belt and braces
    fields: set[str] = set()
    for d in upserts:
        con.execute("INSERT OR REPLACE INTO documents(doc_id, source_key, content_hash, text, metadata) "
                    "VALUES (?, ?, ?, ?, ?)", (d.id, source_key(d), content_hash(d), d.text, _dumps(d.metadata)))
    for c in new_chunks:
        fields.update(c.metadata)
        vid = vector_id(c.id)
        meta = _dumps(c.metadata)
        if c.id in keep_cids:  # same text and position: only metadata may have changed
            con.execute("UPDATE chunks SET metadata=? WHERE vid=?", (meta, vid))
        else:
            con.execute("INSERT INTO chunks(vid, chunk_id, doc_id, text, metadata) VALUES (?, ?, ?, ?, ?)",
                        (vid, c.id, c.doc_id, c.text, meta))
            con.execute("INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)", (vid, c.text))
    con.executemany("INSERT OR IGNORE INTO fields(name) VALUES (?)", [(f,) for f in sorted(fields)])
    con.execute("DELETE FROM tombstones")
    con.executemany("INSERT INTO tombstones(vid) VALUES (?)", [(t,) for t in sorted(vectors.tombstones)])


def _publish(path: Path, base_manifest: dict[str, Any], gen: int, prev_db: Path | None, vectors: VectorIndex,
             apply, cfg: IndexConfig) -> int:
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
            con.executescript(_SCHEMA)
            con.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', "
                        f"content_rowid='vid', tokenize='{cfg.bm25_tokenizer}')")
            con.execute("BEGIN")
            apply(con)
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', ?)", (str(gen),))
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            con.execute("COMMIT")
        finally:
            con.close()
        _fsync_file(db_tmp)
        vectors.save(ix_tmp)
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
        "counts": {"vectors": vectors.ntotal, "tombstones": len(vectors.tombstones)},
        "updated": _now(),
    })
    # The commit point: before this rename the old generation is current, after it the new one.
    atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _cleanup(path, gen)
    return gen


def _cleanup(path: Path, current: int) -> None:
    """Remove generations older than current-1 and temp files of dead writers (we hold the lock)."""
    for f in path.iterdir():
        m = _GEN_RE.match(f.name)
        if m and int(m.group(1)) < current - 1 or (m and int(m.group(1)) > current):
            f.unlink(missing_ok=True)
        elif f.name.startswith(".gen-") and f.name.endswith(".tmp"):
            f.unlink(missing_ok=True)


def _next_free_generation(path: Path) -> int:
    gens = [int(m.group(1)) for f in path.iterdir() if (m := _GEN_RE.match(f.name))]
    try:
        gens.append(int(_read_manifest(path)["generation"]))
    except (CorruptKnowledgeBaseError, KnowledgeBaseError, OSError, KeyError, ValueError):
        pass
    return max(gens, default=-1) + 1


def _salvage_documents(path: Path) -> tuple[list[Document], dict[str, Any] | None]:
    """Documents from the newest generation whose SQLite file is readable (for rebuild without sources)."""
    cfg = None
    try:
        cfg = _read_manifest(path).get("config")
    except (CorruptKnowledgeBaseError, KnowledgeBaseError):
        pass
    dbs = sorted((f for f in path.glob("gen-*.sqlite")), reverse=True)
    for f in dbs:
        try:
            con = _open_db_ro(f)
            docs = [Document(id=r[0], text=r[1], metadata=json.loads(r[2]))
                    for r in con.execute("SELECT doc_id, text, metadata FROM documents ORDER BY rowid")]
            con.close()
            return docs, cfg
        except (sqlite3.DatabaseError, json.JSONDecodeError):
            continue
    raise KnowledgeBaseError(f"no readable generation in {path} to rebuild from; pass the sources: "
                             f"`hybrid index rebuild --kb {path} SOURCES`")
