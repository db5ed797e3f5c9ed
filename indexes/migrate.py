"""Copy a FAISS knowledge base to the Milvus backend without embedding anything again.

    from indexes.migrate import migrate, parse_target

    report = migrate("kb", "kb-milvus", parse_target("milvus://milvus:19530/legal_kb"))
    print(report)   # kb -> kb-milvus: 66 documents, 149 chunks into Milvus collection legal_kb at http://milvus:19530 (2.1s)

The new knowledge base (``out``, a new directory) gets the source's documents, chunks, metadata,
BM25 table and settings, one generation (``gen-000001``), and a manifest recording the same
embedder (name, revision, dimension), the ``milvus`` backend and where it was migrated from. The
vectors are read back from the source's FAISS index by chunk id and written to the collection with
each chunk's metadata, in batches, so memory stays at one batch; ids are the same 60-bit chunk ids.

Which vectors can be read back, by index kind:

- ``flat`` and ``hnsw``: the exact float32 vectors (both store them);
- ``ivfpq`` with ``ivf_refine: flat``: the exact vectors of its refine store;
- ``ivfpq`` with ``ivf_refine: sq8``: 8-bit approximations of them, only with ``lossy=True``;
- ``ivfpq`` with ``ivf_refine: none``: refused (PQ codes keep too little of a vector); create a
  Milvus knowledge base and sync the sources into it instead.

Milvus has no IVF-PQ index here (``indexes.milvus.INDEX_TYPES``), so an IVF-PQ source needs
``index="flat"`` or ``"hnsw"`` for the target. The source is held under its writer's lock while
it is read (a sync meanwhile fails at once instead of changing what is being copied). A migration
that fails drops the collection it created and removes the directory it made: nothing half-built
stays behind.

Targets (``parse_target``):

- ``milvus://HOST[:PORT][/COLLECTION]``: a Milvus server, ``http://HOST:PORT`` (port 19530 by default);
- ``milvus://PATH.db[/COLLECTION]``: a Milvus Lite file (relative to the current directory;
  ``milvus:///abs/path.db`` for an absolute one); a path inside ``out`` is stored relative to it;
- ``milvus://``: ``milvus.db`` inside ``out`` (the default for a new Milvus knowledge base);
- ``http(s)://HOST:PORT``: a server URL as is.

Without ``/COLLECTION`` the collection is named from ``out``, as for any new knowledge base.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import ConfigError, InputError, KnowledgeBaseError
from indexes.backends import BACKENDS, BackendConfig, manifest_backend
from indexes.config import IndexConfig, stored_config
from indexes.store import MANIFEST, WriteLock, load_state, now, publish, read_manifest

DEFAULT_PORT = 19530
BATCH = 4096  # vectors read from FAISS and written to Milvus per step
_HOST_RE = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d{1,5}))?(?:/(?P<coll>[^/]*))?$")


@dataclass(frozen=True)
class MigrationReport:
    """What ``migrate`` copied."""

    source: str
    out: str
    documents: int
    chunks: int
    uri: str
    collection: str
    index: str
    seconds: float

    def __str__(self) -> str:
        return (f"{self.source} -> {self.out}: {self.documents} documents, {self.chunks} chunks into Milvus "
                f"collection {self.collection} at {self.uri} (index {self.index}, {self.seconds:.1f}s)")


def parse_target(target: str, collection: str = "", out: str | Path | None = None,
                 timeout: float = 10.0, consistency: str = "Strong") -> BackendConfig:
    """The ``BackendConfig`` a ``--to`` target names (the grammar is in the module docstring).

    ``collection`` overrides one named in the target; ``out`` (the new knowledge base's directory)
    makes a Lite path inside it relative, so the directory can move."""
    if re.match(r"^https?://", target):
        uri, named = target.rstrip("/"), ""
    elif target.startswith("milvus://"):
        uri, named = _milvus_url(target, target[len("milvus://"):], out)
    else:
        raise InputError(f"--to must be milvus://HOST[:PORT][/COLLECTION], milvus://PATH.db[/COLLECTION] "
                         f"or http(s)://HOST:PORT, got {target!r}")
    return BackendConfig("milvus", milvus_uri=uri, milvus_collection=collection or named,
                         milvus_timeout=timeout, milvus_consistency=consistency)


def _milvus_url(target: str, rest: str, out: str | Path | None) -> tuple[str, str]:
    """(milvus_uri, collection) for the part of a ``milvus://`` target after the scheme."""
    if not rest:
        return "", ""
    lite = re.match(r"^(?P<path>.*?\.db)(?:/(?P<coll>[^/]*))?$", rest)
    if lite:
        path = Path(lite["path"]).expanduser().resolve()
        if out is not None and path.is_relative_to(Path(out).resolve()):
            path = path.relative_to(Path(out).resolve())
        return str(path), lite["coll"] or ""
    m = _HOST_RE.match(rest)
    if not m or (m["port"] and not 0 < int(m["port"]) < 65536):
        raise InputError(f"cannot read the Milvus target {target!r}: expected milvus://HOST[:PORT][/COLLECTION] "
                         "or milvus://PATH.db[/COLLECTION]")
    return f"http://{m['host']}:{m['port'] or DEFAULT_PORT}", m["coll"] or ""


def migrate(source: str | Path, out: str | Path, target: BackendConfig, *, index: str | None = None,
            lossy: bool = False, batch: int = BATCH,
            progress: Callable[[int, int], None] | None = None) -> MigrationReport:
    """Copy the FAISS knowledge base ``source`` into a new Milvus knowledge base in ``out``.

    ``index`` is the target's index kind (``flat`` or ``hnsw``; default: the source's). ``lossy``
    accepts vectors read back from 8-bit codes (IVF-PQ with ``ivf_refine: sq8``). ``progress(done,
    total)`` is called after each batch. Raises a one-line ``HybridError`` for bad input (see the
    module docstring); nothing is left behind when it does."""
    t0 = time.perf_counter()
    src, dst = Path(source), Path(out)
    manifest = _source_manifest(src)
    if target.backend != "milvus":
        raise InputError(f"the target must be on backend milvus, got {target.backend!r}")
    _check_out(src, dst)
    cfg = _target_config(manifest, target, index)
    made = not dst.exists()
    dst.mkdir(parents=True, exist_ok=True)
    try:
        with WriteLock(src), WriteLock(dst):
            report = _copy(src, dst, manifest, cfg, target, lossy, max(1, int(batch)), progress)
    except BaseException:
        if made:
            shutil.rmtree(dst, ignore_errors=True)
        raise
    return dataclasses.replace(report, seconds=round(time.perf_counter() - t0, 3))


def _source_manifest(src: Path) -> dict[str, Any]:
    if not (src / MANIFEST).is_file():
        raise KnowledgeBaseError(f"no knowledge base in {src} (no {MANIFEST}); --from must be a knowledge-base "
                                 "directory")
    manifest = read_manifest(src)
    if manifest_backend(manifest) != "faiss":
        raise KnowledgeBaseError(f"{src} keeps its vectors in backend {manifest_backend(manifest)} already; "
                                 "only a FAISS knowledge base can be migrated")
    return manifest


def _check_out(src: Path, dst: Path) -> None:
    if dst.resolve() == src.resolve():
        raise InputError(f"--out must be a new directory, not the source {src}")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(f"{dst} exists and is not an empty directory; the migrated knowledge base needs a new one")


def _target_config(manifest: dict[str, Any], target: BackendConfig, index: str | None) -> IndexConfig:
    """The source's settings with the Milvus backend and the target's index kind."""
    from indexes.milvus import INDEX_TYPES

    stored = stored_config(manifest.get("config"))
    kind = index or str(manifest["index"])
    if kind not in INDEX_TYPES:
        raise ConfigError(f"index={kind} is not available with backend milvus; pass --index "
                          f"{' or '.join(sorted(INDEX_TYPES))} for the migrated knowledge base")
    backend = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    return IndexConfig(**{**stored, **backend, "index": kind})


def _readable(vectors: Any, src: Path, lossy: bool) -> None:
    """Refuse an index whose vectors cannot be read back closely enough (see the module docstring)."""
    if vectors.kind != "ivfpq":
        return
    refine = vectors.refine
    if refine == "none":
        raise KnowledgeBaseError(
            f"{src} is an IVF-PQ index without a refine store: its vectors cannot be read back (PQ codes keep too "
            "little of them); create a Milvus knowledge base and sync the sources into it instead")
    if refine == "sq8" and not lossy:
        raise KnowledgeBaseError(
            f"{src} keeps its vectors only as 8-bit codes (ivf_refine sq8): pass --lossy to copy those "
            "approximations, or sync the sources into a new Milvus knowledge base for the exact vectors")


def _copy(src: Path, dst: Path, manifest: dict[str, Any], cfg: IndexConfig, target: BackendConfig, lossy: bool,
          batch: int, progress: Callable[[int, int], None] | None) -> MigrationReport:
    """Under both writer's locks: read the source generation, fill a new collection, publish generation 1."""
    src_cfg = IndexConfig(**stored_config(manifest["config"]))
    state = load_state(src, src_cfg)  # the generation current under the lock, checksums verified
    try:
        _readable(state.vectors, src, lossy)
        new = {k: v for k, v in manifest.items()
               if k not in ("generation", "files", "sizes", "checksums", "counts", "updated", "backend")}
        new.update({"index": cfg.index, "config": dataclasses.asdict(cfg), "created": now(),
                    "migrated_from": {"path": str(src.resolve()), "generation": state.generation, "backend": "faiss",
                                      "index": str(manifest["index"]), "at": now()}})
        backend = BACKENDS.get("milvus")
        vectors, new["backend"] = backend.create(dst, cfg, target, int(manifest["dim"]), manifest["embedder"])
        try:
            total = _fill(state, vectors, batch, progress)
            vectors.handle.call("flush the collection", "flush", vectors.handle.collection)
            vectors.written(total)
            src_db = src / state.manifest["files"]["sqlite"]
            publish(dst, new, 1, src_db, vectors, _drop_tombstones, cfg)
        except BaseException:
            backend.discard(vectors)
            raise
        finally:
            backend.close(vectors.handle)
        from core.config import save_config_json

        save_config_json(cfg, dst / "config.json")
        docs = int(state.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
        return MigrationReport(str(src), str(dst), docs, total, vectors.handle.uri, vectors.handle.collection,
                               cfg.index, 0.0)
    finally:
        state.close()


def _fill(state: Any, vectors: Any, batch: int, progress: Callable[[int, int], None] | None) -> int:
    """Write every chunk's vector (read back from FAISS) and metadata into the new collection."""
    from indexes import milvus

    total = int(state.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
    done, last = 0, None
    while True:
        rows = state.db.execute("SELECT vid, metadata FROM chunks WHERE (? IS NULL OR vid > ?) ORDER BY vid LIMIT ?",
                                (last, last, batch)).fetchall()
        if not rows:
            return done
        ids = [int(r[0]) for r in rows]
        vecs = state.vectors.reconstruct(ids)
        metas = {int(v): json.loads(m) for v, m in rows}
        for i in range(0, len(ids), milvus.BATCH):
            milvus.upsert(vectors.handle, ids[i:i + milvus.BATCH], vecs[i:i + milvus.BATCH], metas)
        done, last = done + len(ids), ids[-1]
        if progress is not None:
            progress(done, total)


def _drop_tombstones(con: sqlite3.Connection) -> None:
    """The copied SQLite file keeps everything but FAISS's HNSW tombstones (Milvus deletes for real)."""
    con.execute("DELETE FROM tombstones")
