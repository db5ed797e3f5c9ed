"""The knowledge base: chunks, vectors (FAISS), BM25 (SQLite FTS5), metadata (SQLite), one manifest.

    from indexes.kb import KnowledgeBase
    from indexes.config import IndexConfig

    with KnowledgeBase.open_or_create(".cache/kb", IndexConfig()) as kb:   # or .create / .open
        print(kb.sync(docs))            # added 12, updated 0, unchanged 0, deleted 0; embedded 85 chunks
        for hit in kb.search("notice period for termination", k=5, filters={"source": "lease.html"}):
            print(hit.rank, round(hit.score, 3), hit.chunk.metadata["source"], hit.chunk.text[:80])

On disk a knowledge base is a directory of generations, each a FAISS file plus a SQLite file
(documents, chunks, the FTS5 table, tombstones), and a ``manifest.json`` naming the current one.
A write builds the next generation beside the current one and swaps the manifest last, so a crash
leaves one generation or the other, complete; readers never lock. Opening checks the files against
the manifest and raises ``CorruptKnowledgeBaseError`` (which suggests ``hybrid index rebuild``)
instead of opening empty. The layout and the write protocol are described in ``indexes.store``.

``KnowledgeBase`` is the facade over the parts, each in its own module:

    indexes.store      generations, manifest, writer's lock, open-time checks, salvage (durability)
    indexes.sync       which documents a sync adds, updates, keeps or deletes, and the rows it writes
    indexes.chunking   documents to chunks
    indexes.vectors    the FAISS index (flat, HNSW, IVF-PQ), with tombstones for HNSW
    indexes.backends   where the vectors live: FAISS files (default) or a Milvus collection (indexes.milvus)
    indexes.bm25       FTS5 BM25 query building and scoring
    indexes.filters    metadata filters compiled to SQL
    indexes.fusion     reciprocal rank fusion and MMR
    indexes.search     searching (dense, BM25 or hybrid, optional MMR); ``KnowledgeBase`` inherits it

This module holds ``KnowledgeBase`` itself: opening, the sync and delete steps (chunk, embed,
publish), rebuild, and stats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from core.errors import (ConfigError, CorruptKnowledgeBaseError, InputError, KnowledgeBaseError,
                         LockedError, ModelError)
from core.io import atomic_write_text, fsync_dir
from core.types import Chunk, Document, Hit  # noqa: F401 - Chunk, Hit: importable from here as before the split
from indexes.config import SEARCH_MODES, IndexConfig, stored_config, stored_setting_diff  # noqa: F401 - SEARCH_MODES: as before
from indexes.backends import BACKENDS, BackendConfig, VectorBackend, backend_settings, manifest_backend
from indexes.integrity import has_checksums, translate, verify_checksums
from indexes.search import Searching
from indexes.store import (MANIFEST, REBUILD_HINT, State, WriteLock, apply_nothing, check_embedder, cleanup, install_generation,
                           load_state, new_manifest, publish, read_manifest, record_checksums, salvage_documents)
from indexes.sync import (Prepared, SyncReport, apply_changes, dedupe_documents, diff_chunks, diff_documents, stored_chunks,
                          stored_documents, vector_id)
from indexes.vectors import VectorIndex  # noqa: F401 - importable from here as before backends

# Names defined here before the module was split by job, still importable from indexes.kb
# (hybrid.cli.index imports _read_manifest, tests/indexes/test_bad_inputs.py imports _WriteLock);
# LockedError, atomic_write_text and fsync_dir above are kept imported for the same reason.
from indexes.bm25 import STOPWORDS as _STOP, bm25_search  # noqa: F401
from indexes.filters import filter_sql  # noqa: F401
from indexes.fusion import mmr as _mmr, rrf  # noqa: F401
from indexes.filters import (FIELD_RE as _FIELD_RE, OPERATORS as _OPS,  # noqa: F401
                             filter_scalar as _filter_scalar, filter_values as _filter_values)
from indexes.store import (FORMAT_VERSION, GEN_RE as _GEN_RE, LOCK, SCHEMA as _SCHEMA,  # noqa: F401
                           State as _State, WriteLock as _WriteLock, apply_nothing as _apply_nothing,
                           check_embedder as _check_embedder, cleanup as _cleanup,
                           load_generation as _load_generation, load_state as _load_state,
                           next_free_generation as _next_free_generation, now as _now, open_db_ro as _open_db_ro,
                           publish as _publish, read_manifest as _read_manifest,
                           salvage_documents as _salvage_documents)
from indexes.sync import (_dumps, _json_default, apply_changes as _apply_changes,  # noqa: F401
                          content_hash, source_key)

log = logging.getLogger(__name__)


class KnowledgeBase(Searching):
    """Chunks + FAISS vectors + FTS5 BM25 + SQLite metadata, persisted in generations. See the module docstring.

    >>> from indexes.embed import HashEmbedder
    >>> kb = KnowledgeBase.create(tmp / "kb", IndexConfig(embedder="hash"), embedder=HashEmbedder())  # doctest: +SKIP
    >>> kb.sync([Document.create("Rent is due on the 1st.", {"source": "lease.md"})]).added  # doctest: +SKIP
    1
    """

    def __init__(self, path: Path, cfg: IndexConfig, embedder: Any, readonly: bool, state: State,
                 backend: VectorBackend | None = None, handle: Any = None):
        self.path = path
        self.cfg = cfg
        self._embedder = embedder
        self.readonly = readonly
        self._state = state
        self._refresh_lock = threading.Lock()
        self._backend = backend if backend is not None else BACKENDS.get("faiss")
        self._handle = handle  # the backend's open connection (None for FAISS)

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], cfg: IndexConfig | None = None, embedder: Any = None,
               *, exist_ok: bool = False, backend: BackendConfig | None = None) -> "KnowledgeBase":
        """Make an empty knowledge base (generation 0) in ``path``.

        ``exist_ok=True`` is ``open_or_create``: an existing knowledge base is opened, and a ``cfg``
        whose stored settings differ from it is a ``ConfigError`` naming them. ``backend`` chooses
        where the vectors live (``indexes.backends``; default FAISS, or what ``cfg`` says once it can)."""
        if exist_ok:
            return cls.open_or_create(path, cfg, embedder, backend=backend)
        cfg = cfg or IndexConfig()
        settings = backend_settings(cfg, backend)
        p = Path(path)
        if (p / MANIFEST).exists():
            raise KnowledgeBaseError(f"a knowledge base already exists in {p}; open or sync it instead")
        if p.exists() and not p.is_dir():
            raise InputError(f"{p} exists and is not a directory")
        p.mkdir(parents=True, exist_ok=True)
        emb = embedder if embedder is not None else cls._make_embedder(cfg)
        with WriteLock(p):
            if (p / MANIFEST).exists():
                raise KnowledgeBaseError(f"a knowledge base already exists in {p}; open or sync it instead")
            manifest = new_manifest(cfg, emb)
            backend = BACKENDS.get(settings.backend)
            vectors, manifest["backend"] = backend.create(p, cfg, settings, int(emb.dim), manifest["embedder"])
            try:
                publish(p, manifest, 0, None, vectors, apply_nothing, cfg)
            except BaseException:
                backend.discard(vectors)  # e.g. drop the new Milvus collection, so a retry can create it
                raise
            finally:
                backend.close(getattr(vectors, "handle", None))
            from core.config import save_config_json

            save_config_json(cfg, p / "config.json")
        return cls.open(p, embedder=emb)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], cfg: IndexConfig | None = None, embedder: Any = None,
                       *, rebuild: bool = False, backend: BackendConfig | None = None) -> "KnowledgeBase":
        """The one way to open a knowledge base that may not exist yet: create it with ``cfg`` when
        ``path`` has none, else open it with ``cfg``'s search-time settings (``cfg=None`` opens it as stored).

        The settings that shape what is stored (``IndexConfig.STORED``: embedder, chunking, index
        kind...) must match the stored ones: a difference is a one-line ``ConfigError`` naming each
        differing setting, since silently keeping the old ones would answer with an index the caller
        did not ask for. ``rebuild=True`` instead rebuilds the knowledge base from its stored
        documents with ``cfg`` (what ``hybrid index rebuild`` does). A ``backend`` other than the
        stored one is a ``ConfigError`` too.
        """
        p = Path(path)
        if not (p / MANIFEST).exists():
            return cls.create(p, cfg, embedder, backend=backend)
        manifest = read_manifest(p)
        # the backend a create with these arguments would use (the same resolution as ``create``)
        asked = backend_settings(cfg, backend).backend if (backend is not None or cfg is not None) else None
        if asked is not None and asked != manifest_backend(manifest):
            raise ConfigError(f"{p} keeps its vectors in backend {manifest_backend(manifest)}, not {asked}; "
                              + _other_backend_hint(p, manifest_backend(manifest), asked))
        if cfg is None:
            return cls.open(p, embedder=embedder)
        stored = dict(manifest.get("config") or {})
        diff = stored_setting_diff(stored, cfg)
        if diff and rebuild:
            kb, report = cls.rebuild(p, None, cfg, embedder=embedder)
            log.info("%s rebuilt with new settings (%s): %s", p, "; ".join(diff), report)
            return kb
        if diff:
            raise ConfigError(f"{p} was built with other settings ({'; '.join(diff)}); "
                              f"use `hybrid index rebuild --kb {p}` to change them")
        return cls.open(p, embedder=embedder, overrides=cfg)

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
        manifest = read_manifest(p)
        # an older manifest's missing keys get their LEGACY values; overrides change search-time keys only
        stored = stored_config(manifest.get("config"), overrides)
        try:
            cfg = IndexConfig(**stored)
        except (TypeError, ValueError) as e:
            raise CorruptKnowledgeBaseError(f"{p / MANIFEST}: bad config ({e}); " + REBUILD_HINT.format(path=p)) from None
        if embedder is not None:
            check_embedder(p, manifest, embedder)
        backend = BACKENDS.get(manifest_backend(manifest))
        handle = backend.connect(p, manifest, cfg)
        try:
            state = _load(p, cfg, backend, handle)
        except BaseException:
            backend.close(handle)
            raise
        return cls(p, cfg, embedder, readonly, state, backend, handle)

    @staticmethod
    def _make_embedder(cfg: IndexConfig) -> Any:
        from indexes.embed import get_embedder

        return get_embedder(cfg.embedder, bf16=cfg.bf16)

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            emb = self._make_embedder(self.cfg)
            check_embedder(self.path, self._state.manifest, emb)
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
        manifest = read_manifest(self.path)
        if int(manifest["generation"]) == self._state.generation:
            self._state.mtime = st.st_mtime_ns
            return False
        with self._refresh_lock:
            if self._state.generation != int(manifest["generation"]):
                # not closed here: another thread may be mid-search on it; GC closes it
                self._state = _load(self.path, self.cfg, self._backend, self._handle)
        return True

    def close(self) -> None:
        self._state.close()
        handle, self._handle = self._handle, None
        if handle is not None:
            self._backend.close(handle)

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise KnowledgeBaseError(f"knowledge base {self.path} was opened read-only")

    def lock(self) -> WriteLock:
        """The writer's lock for several steps: ``with kb.lock(): docs = slow_ingest(); kb.sync(docs)``
        fails at once (``LockedError``) if another writer holds it; re-entrant in the holding thread."""
        self._writable()
        return WriteLock(self.path)

    @translate
    def sync(self, documents: Iterable[Document], prune: bool = False, progress: bool = False,
             prepared: Prepared | None = None) -> SyncReport:
        """Make the knowledge base hold ``documents``: add new, re-embed changed, keep unchanged.

        A document is *changed* when its id is known but its text or metadata differ, or when its id is
        new but it comes from the same source unit (file/URL + page + row) as a stored document, which
        it then replaces. ``prune=True`` also deletes every stored document not in ``documents``.
        Two input documents with the same id and different text are an error; nothing is written.

        ``prepared`` (``indexes.sync.Prepared``, from ``indexes.ray_build``) gives the chunks of the
        documents to index and their vectors, made elsewhere by the same embedder: they are checked
        and written exactly as chunks and vectors made here would be.
        """
        self._writable()
        t0 = time.perf_counter()
        report = SyncReport()
        incoming = dedupe_documents(documents, report)
        with WriteLock(self.path):
            self.refresh()
            self._backend.before_write(self.path, self._state, self._handle)
            return self._sync_locked(incoming, prune, progress, report, t0, prepared)

    @translate
    def pending(self, documents: Iterable[Document], prune: bool = False) -> list[Document]:
        """The documents a ``sync(documents, prune)`` now would chunk and embed (new or changed), in
        input order; reads only. Hold ``kb.lock()`` until the sync so the answer stays true."""
        incoming = dedupe_documents(documents, SyncReport())
        self.refresh()
        upserts, _ = diff_documents(stored_documents(self._state.db), incoming, prune, SyncReport())
        return upserts

    def _sync_locked(self, incoming: dict[str, Document], prune: bool, progress: bool,
                     report: SyncReport, t0: float, prepared: Prepared | None = None) -> SyncReport:
        db = self._state.db
        upserts, to_delete = diff_documents(stored_documents(db), incoming, prune, report)

        if not upserts and not to_delete:
            if not has_checksums(self._state.manifest):
                # a manifest from before checksums (or an older writer): record them, without a new generation
                self._state.manifest = record_checksums(self.path, self._state.manifest)
                self._state.mtime = (self.path / MANIFEST).stat().st_mtime_ns
            report.generation = self.generation
            report.seconds = time.perf_counter() - t0
            return report

        # Chunk and embed BEFORE touching any file: a bad embedding leaves the KB as it was.
        from indexes.chunking import chunk_documents

        if prepared is None:
            new_chunks = chunk_documents(upserts, self.cfg, self.embedder, progress=progress and len(upserts) > 200)
        else:
            self._check_prepared(prepared)
            new_chunks = prepared.chunks_of(upserts)
        old_rows = stored_chunks(db, {d.id for d in upserts} | to_delete)
        keep_cids, to_embed, remove_vids = diff_chunks(new_chunks, old_rows)
        if prepared is None:
            vecs = self._embed([c.text for c in to_embed], progress=progress)
        else:
            dim = int(self._state.manifest["dim"])
            vecs = self._checked_vectors(prepared.vectors_of(to_embed, dim), len(to_embed), prepared.made_by)
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
            apply_changes(con, upserts, to_delete, new_chunks, keep_cids, remove_vids, vectors)

        gen = publish(self.path, self._state.manifest, self.generation + 1, self._db_file(), vectors, apply, self.cfg)
        self._backend.after_publish(self.path, vectors)
        # the old state is not closed: a search in another thread may still be reading it (GC closes it)
        self._state = load_state(self.path, self.cfg, vectors=vectors)
        report.generation = gen
        report.seconds = time.perf_counter() - t0
        return report

    @translate
    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents (and their chunks) by id; returns how many were stored. Unknown ids are ignored."""
        self._writable()
        ids = list(dict.fromkeys(str(d) for d in doc_ids))
        with WriteLock(self.path):
            self.refresh()
            self._backend.before_write(self.path, self._state, self._handle)
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
                apply_changes(con, [], set(present), [], set(), vids, vectors)

            publish(self.path, self._state.manifest, self.generation + 1, self._db_file(), vectors, apply, self.cfg)
            self._backend.after_publish(self.path, vectors)
            self._state = load_state(self.path, self.cfg, vectors=vectors)
            return len(present)

    @translate
    def documents(self) -> list[Document]:
        """Every stored document (text and metadata), e.g. to rebuild with other settings."""
        return [Document(id=r[0], text=r[1], metadata=json.loads(r[2]))
                for r in self._state.db.execute("SELECT doc_id, text, metadata FROM documents ORDER BY rowid")]

    @classmethod
    def rebuild(cls, path: str | os.PathLike[str], documents: Iterable[Document] | None = None,
                cfg: IndexConfig | None = None, embedder: Any = None, progress: bool = False) -> tuple["KnowledgeBase", SyncReport]:
        """Build a fresh generation from ``documents`` (or the documents stored in the newest readable
        generation), replacing whatever is there, corrupt or not. ``cfg`` may change any setting.

        An existing directory's lock is taken first, so a second writer fails before any work."""
        p = Path(path)
        _refuse_rebuild_off_faiss(p, cfg)
        with WriteLock(p) if p.is_dir() else contextlib.nullcontext():
            return cls._rebuild_locked(p, documents, cfg, embedder, progress)

    @classmethod
    def _rebuild_locked(cls, p: Path, documents: Iterable[Document] | None, cfg: IndexConfig | None,
                        embedder: Any, progress: bool) -> tuple["KnowledgeBase", SyncReport]:
        docs = list(documents) if documents is not None else None
        old_cfg = None
        if docs is None:
            docs, old_cfg = salvage_documents(p)
        elif (p / MANIFEST).exists():
            try:
                old_cfg = read_manifest(p).get("config")
            except CorruptKnowledgeBaseError:
                old_cfg = None
        if cfg is None:
            cfg = IndexConfig(**stored_config(old_cfg)) if old_cfg else IndexConfig()
        tmp = p.with_name(p.name + ".rebuild")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            kb = cls.create(tmp, cfg, embedder=embedder)
            try:
                report = kb.sync(docs, progress=progress)
            finally:
                kb.close()
            p.mkdir(parents=True, exist_ok=True)
            with WriteLock(p):
                # Move the fresh generation's files in, renumbered after whatever is there, then swap the manifest.
                gen = install_generation(p, tmp)
                from core.config import save_config_json

                save_config_json(cfg, p / "config.json")
                cleanup(p, gen)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed rebuild leaves no half-built directory behind
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
        return self._checked_vectors(vecs, len(texts), emb.name)

    def _checked_vectors(self, vecs: Any, n: int, name: str) -> np.ndarray:
        """``n`` embeddings from embedder ``name`` checked (shape, finite) and L2-normalized, as float32."""
        dim = int(self._state.manifest["dim"])
        vecs = np.asarray(vecs)
        if vecs.ndim != 2 or vecs.shape != (n, dim):
            raise ModelError(f"embedder {name} returned shape {tuple(vecs.shape)}, expected ({n}, {dim}); "
                             "nothing was written")
        if not np.isfinite(vecs).all():
            bad = int((~np.isfinite(vecs).all(axis=1)).sum())
            raise ModelError(f"embedder {name} returned NaN or infinite values for {bad} of {n} "
                             "texts; nothing was written")
        vecs = vecs.astype(np.float32, copy=False)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)

    def _check_prepared(self, prepared: Prepared) -> None:
        """Prepared vectors must come from the embedder (name and revision) this knowledge base records."""
        want = self._state.manifest["embedder"]
        if prepared.ids and prepared.made_by != f"{want['name']}@{want['revision']}":
            raise KnowledgeBaseError(f"the prepared vectors were made by {prepared.made_by or 'an unknown embedder'}, "
                                     f"but {self.path} was built with {want['name']}@{want['revision']}; nothing was written")

    # -- stats ---------------------------------------------------------------------------------------
    @translate
    def stats(self) -> dict[str, Any]:
        st = self._state
        m = st.manifest
        size = sum((self.path / f).stat().st_size for f in m["files"].values() if (self.path / f).exists())
        return {
            "path": str(self.path),
            "backend": manifest_backend(m),
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
            **self._backend.stats(st, self._handle),
        }


def _load(path: Path, cfg: IndexConfig, backend: VectorBackend, handle: Any, attempts: int = 3) -> State:
    """``load_state`` through ``backend``: FAISS reads the generation's file; a backend whose
    ``open`` gives the vectors gets them built from the very manifest the generation is loaded with
    (re-read when a writer swaps it meanwhile), then the files' checksums and ``backend.verify``."""
    for attempt in range(attempts):
        manifest = read_manifest(path)
        vectors = backend.open(path, manifest, cfg, handle)
        if vectors is None:
            return load_state(path, cfg)
        try:
            state = load_state(path, cfg, vectors=vectors)
            try:
                if state.generation != int(manifest["generation"]):
                    raise CorruptKnowledgeBaseError(f"{path}: the manifest changed while loading")
                verify_checksums(path, state.manifest, {k: path / v for k, v in state.manifest["files"].items()})
                backend.verify(path, state, handle)
            except BaseException:
                state.close()
                raise
            return state
        except CorruptKnowledgeBaseError:
            if attempt == attempts - 1 or int(read_manifest(path)["generation"]) == int(manifest["generation"]):
                raise
    raise AssertionError("unreachable")


def _other_backend_hint(path: Path, stored: str, asked: str) -> str:
    """What to do instead of reopening or rebuilding ``path`` (on ``stored``) on backend ``asked``."""
    if stored == "faiss" and asked == "milvus":
        return f"copy it there without re-embedding: `hybrid index migrate --from {path} --to milvus://`"
    return "build a new knowledge base for another backend"


def _refuse_rebuild_off_faiss(path: Path, cfg: IndexConfig | None = None) -> None:
    """Rebuilding builds a fresh knowledge base beside ``path`` and moves its files in: only FAISS
    keeps its vectors in those files, so other backends, stored or asked for in ``cfg``, are refused
    with what to do instead."""
    try:
        name = manifest_backend(read_manifest(path)) if (path / MANIFEST).exists() else "faiss"
    except CorruptKnowledgeBaseError:
        name = None  # unreadable: rebuilding it is what the user wants
    if name not in (None, "faiss"):
        raise KnowledgeBaseError(f"rebuild is not available for knowledge bases on backend {name} yet; "
                                 f"create a new one (another milvus_collection) and sync the sources into it")
    if cfg is not None and cfg.backend != "faiss":
        hint = (_other_backend_hint(path, "faiss", cfg.backend) if name == "faiss" and (path / MANIFEST).exists()
                else f"build a new one: `hybrid index build --kb DIR SOURCES --set backend={cfg.backend}`")
        raise ConfigError(f"rebuild cannot move {path} to backend {cfg.backend} (it rebuilds FAISS knowledge "
                          f"bases only); {hint}")
