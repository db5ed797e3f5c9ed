"""The ``milvus`` vector backend: a knowledge base's vectors in one Milvus collection (``pymilvus``).

    KnowledgeBase.create("kb", cfg, backend=BackendConfig("milvus"))                       # Milvus Lite: kb/milvus.db
    KnowledgeBase.create("kb", cfg, backend=BackendConfig("milvus", milvus_uri="http://host:19530"))

The collection has three fields: ``id`` (INT64 primary key, the chunk's ``vector_id`` exactly as
FAISS uses it), ``vector`` (FLOAT_VECTOR, the L2-normalized embedding), indexed with the IP metric,
so dense scores are the same cosines the FAISS backend gives, and ``metadata`` (JSON, a copy of the
chunk's metadata). Text, metadata, BM25 and the generations stay in SQLite (``indexes.store``). A
filter runs in Milvus as an expression over ``metadata`` (``indexes.filters.filter_milvus``), its
hits checked against the SQL filter; a filter that does not translate, or a collection made before
the ``metadata`` field (only ``id`` and ``vector``), runs as an ``id in [...]`` expression of the
ids SQLite allows.

What differs from FAISS (the collection is changed in place, it has no generations):

- A write upserts the new vectors *before* the manifest swap and deletes the removed ones *after*
  it. A search that started on the previous generation may meet vectors it has no row for (they are
  skipped, as HNSW tombstones are) or miss removed ones; it never returns a chunk its generation
  does not hold.
- The ids a write touches are journaled in ``DIR/milvus-pending.json`` first; a write killed midway
  leaves vectors no generation names, and the next write deletes them (``before_write``).
- Opening checks that the collection holds at least the generation's chunks and was built with the
  manifest's embedder; the FAISS backend's file checksums cover only the small pointer file here.
- Milvus Lite (a ``.db`` path) serves one process at a time.

``MilvusVectors`` has the interface of ``indexes.vectors.VectorIndex`` that ``indexes.kb``,
``indexes.search`` and ``indexes.store`` use (add, remove, copy, save, search, reconstruct, dim,
ntotal, tombstones, kind).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from core.errors import ConfigError, CorruptKnowledgeBaseError, InputError, KnowledgeBaseError
from core.io import atomic_write_text, fsync
from indexes.backends import BACKENDS, BackendConfig, VectorBackend
from indexes.config import IndexConfig
from indexes.filters import filter_milvus
from indexes.integrity import REBUILD_HINT

log = logging.getLogger(__name__)

JOURNAL = "milvus-pending.json"
DEFAULT_LITE_FILE = "milvus.db"
# Milvus answers at most this many hits per query (its topk limit).
MAX_TOPK = 16384
# Filters allowing more ids than this are not sent as an ``id in [...]`` expression: the top
# MAX_TOPK dense hits are searched instead and filtered here (documented in docs/milvus.md).
MAX_FILTER_IDS = 16384
BATCH = 1000
MANIFEST = "manifest.json"  # indexes.store.MANIFEST (not imported: indexes.store must not depend on a backend)
META_FIELD = "metadata"
# New collections carry the chunk metadata (a JSON field) for filters. False makes the layout of
# collections created before that (id and vector only), which still open and filter by id lists.
WITH_METADATA = True
# How each FAISS index kind maps to a Milvus index: (index type, build params, search params).
INDEX_TYPES = {
    "flat": lambda cfg: ("FLAT", {}, {}),
    "hnsw": lambda cfg: ("HNSW", {"M": cfg.hnsw_m, "efConstruction": cfg.hnsw_ef_construction},
                         {"ef": cfg.hnsw_ef_search}),
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def _first_line(e: BaseException) -> str:
    msg = str(getattr(e, "message", "") or e).strip()
    return (msg.splitlines()[0] if msg else type(e).__name__)[:200]


# -- connecting ------------------------------------------------------------------------------------
def resolve_uri(path: Path, uri: str) -> str:
    """``uri`` as pymilvus takes it: a server URL as is, a Milvus Lite file relative to the KB directory."""
    uri = uri or DEFAULT_LITE_FILE
    if re.match(r"^(https?|tcp|grpc|unix)://", uri):
        return uri
    if not uri.endswith(".db"):
        raise ConfigError(f"milvus_uri must be http://host:port or a Milvus Lite file ending in .db, got {uri!r}")
    p = Path(uri)
    return str(p if p.is_absolute() else (path / p).resolve())


def default_collection(path: Path) -> str:
    """A collection name from the KB directory's name plus a hash of its absolute path."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", path.resolve().name)[:40] or "kb"
    return f"kb_{stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"


class MilvusHandle:
    """One open client and the collection a knowledge base uses."""

    def __init__(self, uri: str, collection: str, timeout: float, consistency: str):
        self.uri = uri
        self.collection = collection
        self.timeout = float(timeout)
        self.consistency = consistency
        self.has_metadata = False  # set from the collection's schema by ``properties``
        self.client = self._connect()

    def _connect(self) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ConfigError("backend milvus needs pymilvus (and milvus-lite for .db files): "
                              "pip install 'hybrid[milvus]'") from None
        # Milvus Lite runs in this process: keepalive pings on an idle channel (a long embedding
        # between two writes) only make its gRPC server answer GOAWAY "too_many_pings".
        options = {"grpc.keepalive_permit_without_calls": 0} if self.uri.startswith("/") else {}
        try:
            return MilvusClient(uri=self.uri, timeout=self.timeout, grpc_options=options)
        except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException subclasses and grpc errors
            if self.uri.startswith("/"):
                raise KnowledgeBaseError(f"cannot open the Milvus Lite file {self.uri} ({_first_line(e)}); "
                                         "Milvus Lite serves one process at a time: is another process using "
                                         "this knowledge base?") from None
            raise KnowledgeBaseError(f"cannot reach Milvus at {self.uri} within {self.timeout:g}s "
                                     f"({_first_line(e)}); check milvus_uri and that the server is up") from None

    def call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        """``client.fn(*args, **kwargs)`` with the timeout; any Milvus failure is a one-line error."""
        try:
            return getattr(self.client, fn)(*args, timeout=self.timeout, **kwargs)
        except Exception as e:  # noqa: BLE001 - see _connect
            raise KnowledgeBaseError(f"Milvus at {self.uri} failed to {what} (collection {self.collection}): "
                                     f"{_first_line(e)}") from None

    def exists(self) -> bool:
        return bool(self.call("list collections", "has_collection", self.collection))

    def load(self) -> None:
        """Load the collection into memory (Milvus searches only loaded collections; a collection
        another process created, or a server restarted, starts released)."""
        state = self.call("read the load state", "get_load_state", self.collection)
        if "Loaded" not in str(state.get("state", "")):
            self.call("load the collection", "load_collection", self.collection)

    def rows(self) -> int:
        res = self.call("count vectors", "query", self.collection, filter="", output_fields=["count(*)"],
                        consistency_level="Strong")
        return int(res[0]["count(*)"]) if res else 0

    def properties(self) -> tuple[dict[str, str], int]:
        """The collection's properties and its vector dimension; notes whether it has a ``metadata`` field."""
        d = self.call("describe the collection", "describe_collection", self.collection)
        fields = d.get("fields", [])
        dim = next((int(f["params"]["dim"]) for f in fields if f.get("name") == "vector"), -1)
        self.has_metadata = any(f.get("name") == META_FIELD for f in fields)
        return {str(k): str(v) for k, v in (d.get("properties") or {}).items()}, dim

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _embedder_props(info: dict[str, Any]) -> dict[str, str]:
    return {"hybrid.embedder": str(info["name"]), "hybrid.embedder_revision": str(info["revision"]),
            "hybrid.dim": str(int(info["dim"]))}


def check_collection(handle: MilvusHandle, embedder: dict[str, Any], kb: Path) -> None:
    """Refuse a collection whose recorded embedder or vector dimension differ from ``embedder`` (a manifest's)."""
    props, dim = handle.properties()
    have = (props.get("hybrid.embedder", "?"), props.get("hybrid.embedder_revision", "?"), dim)
    want = (str(embedder["name"]), str(embedder["revision"]), int(embedder["dim"]))
    if have != want:
        raise KnowledgeBaseError(
            f"Milvus collection {handle.collection} at {handle.uri} was built with embedder {have[0]} "
            f"(revision {have[1]}, dim {have[2]}), but knowledge base {kb} uses {want[0]} (revision {want[1]}, "
            f"dim {want[2]}); point milvus_collection at this knowledge base's own collection")


# -- the vectors -------------------------------------------------------------------------------------
class MilvusVectors:
    """The ``VectorIndex`` interface over a Milvus collection (see the module docstring).

    ``ntotal`` is the number of vectors the loaded generation holds (from its manifest, plus the
    changes staged on this copy); the collection's live count is ``handle.rows()``. ``add`` and
    ``remove`` only stage: ``save`` (inside ``publish``) upserts the additions, ``apply_removals``
    (after the manifest swap) deletes the removals."""

    tombstones: frozenset[int] = frozenset()
    shared = True  # one collection for every generation: searches drop ids their generation lacks
    max_k = MAX_TOPK

    def __init__(self, handle: MilvusHandle, dim: int, kind: str, cfg: IndexConfig, count: int):
        self.handle = handle
        self._dim = int(dim)
        self.kind = kind
        self.cfg = cfg
        self._count = int(count)
        self._add: dict[int, np.ndarray] = {}
        self._remove: set[int] = set()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ntotal(self) -> int:
        return self._count

    @property
    def live(self) -> int:
        return self._count

    def copy(self) -> "MilvusVectors":
        """A writer's copy: stages changes; searches on this object still see the live collection."""
        return MilvusVectors(self.handle, self._dim, self.kind, self.cfg, self._count)

    # -- staged writes --------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if len(ids) and vecs.shape != (len(ids), self._dim):
            raise InputError(f"expected {len(ids)} vectors of dimension {self._dim}, got shape {vecs.shape}")
        for i, v in zip((int(x) for x in ids), vecs):
            self._remove.discard(i)  # removed and added again: the upsert replaces it
            self._add[i] = v
        self._count += len(ids)

    def written(self, n: int) -> None:
        """Count ``n`` vectors written to the collection directly (``upsert``: a bulk copy such as
        ``indexes.migrate``), so the next generation's manifest records them."""
        self._count += int(n)

    def remove(self, ids: Iterable[int]) -> None:
        ids = [int(i) for i in ids]
        self._remove.update(ids)
        self._count -= len(ids)

    def save(self, path: str | Path) -> None:
        """Journal the touched ids, upsert the staged additions (with their metadata) and the kept
        chunks whose metadata changed, then write the generation's pointer file.

        ``path`` is ``indexes.store.publish``'s temporary vector file; the generation's SQLite file,
        written just before, is beside it (the same name with ``.sqlite.``), and the metadata
        Milvus gets is read from there, exactly as the generation stores it."""
        path = Path(path)
        db = path.with_name(path.name.replace(".faiss.", ".sqlite.", 1)) if self.handle.has_metadata else None
        if db is not None and not db.exists():
            raise KnowledgeBaseError(f"cannot find the generation's SQLite file {db.name} beside {path}")
        retagged = _metadata_changes(db, path.parent, set(self._add)) if db is not None else []
        touched = sorted(set(self._add) | self._remove | set(retagged))
        if touched:
            atomic_write_text(path.parent / JOURNAL, json.dumps(
                {"collection": self.handle.collection, "ids": touched}) + "\n")
        ids = list(self._add)
        for i in range(0, len(ids), BATCH):
            part = ids[i:i + BATCH]
            upsert(self.handle, part, [self._add[v] for v in part], _metadata_of(db, part) if db else None)
        for i in range(0, len(retagged), BATCH):  # the stored vector, the new metadata
            found = _stored_vectors(self.handle, retagged[i:i + BATCH])
            part = [v for v in retagged[i:i + BATCH] if v in found]  # a lost vector stays lost (verify says so)
            upsert(self.handle, part, [found[v] for v in part], _metadata_of(db, part))
        self._add = {}
        pointer = {"backend": "milvus", "collection": self.handle.collection, "dim": self._dim,
                   "vectors": self._count}
        path.write_text(json.dumps(pointer, sort_keys=True) + "\n", encoding="utf-8")
        fsync(path)

    def apply_removals(self, kb: Path) -> None:
        """Delete the staged removals (after the manifest swap), flush, then drop the journal.

        The flush seals what the write added: Milvus Lite scans unsealed ("growing") segments
        slowly (measured: 1.36 s per query over 40,000 64-d vectors just upserted, 0.28 s after a
        3.1 s flush; see docs/milvus.md)."""
        delete(self.handle, sorted(self._remove))
        self._remove = set()
        journal = kb / JOURNAL
        if journal.exists():  # this write touched the collection
            self.handle.call("flush the collection", "flush", self.handle.collection)
            journal.unlink()

    # -- reads ----------------------------------------------------------------------------------
    def reconstruct(self, ids: Iterable[int]) -> np.ndarray:
        """The stored vectors of ``ids`` in order (zeros for an id the collection no longer has)."""
        ids = [int(i) for i in ids]
        out = np.zeros((len(ids), self._dim), dtype=np.float32)
        found = _stored_vectors(self.handle, ids)
        for j, vid in enumerate(ids):
            if vid in found:
                out[j] = np.asarray(found[vid], dtype=np.float32)
        return out

    def filter_expr(self, filters: dict[str, Any], fields: Iterable[str]) -> str | None:
        """``filters`` as a Milvus expression over the metadata field, or ``None`` (the caller then
        passes ``allowed`` ids): a filter ``filter_milvus`` cannot translate, or a collection made
        before the metadata field."""
        return filter_milvus(filters, set(fields), META_FIELD) if self.handle.has_metadata else None

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               expr: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1 (as ``VectorIndex.search``).
        ``expr`` (from ``filter_expr``) filters in Milvus; else ``allowed`` limits the ids."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq, kk = len(queries), max(k, 0)
        scores = np.full((nq, kk), -np.inf, np.float32)
        ids = np.full((nq, kk), -1, np.int64)
        if nq == 0 or kk == 0 or self._count == 0 or (allowed is not None and len(allowed) == 0):
            return scores, ids
        expr, post = expr or "", None
        if allowed is not None and not expr:
            allowed = np.asarray(allowed, dtype=np.int64)
            if len(allowed) <= MAX_FILTER_IDS:
                expr = f"id in [{','.join(str(int(a)) for a in allowed)}]"
            else:
                post = allowed
        limit = min(MAX_TOPK, kk if post is None else MAX_TOPK)
        _, _, sparams = INDEX_TYPES[self.kind](self.cfg)
        res = self.handle.call("search", "search", self.handle.collection, data=queries.tolist(), limit=limit,
                               filter=expr, output_fields=[], consistency_level=self.handle.consistency,
                               search_params={"metric_type": "IP", "params": sparams})
        for q, hits in enumerate(res):
            pairs = [(int(h["id"]), float(h["distance"])) for h in hits]
            if post is not None:
                keep = set(np.intersect1d(post, np.array([p[0] for p in pairs], dtype=np.int64)).tolist())
                pairs = [p for p in pairs if p[0] in keep]
            pairs = pairs[:kk]
            ids[q, :len(pairs)] = [p[0] for p in pairs]
            scores[q, :len(pairs)] = [p[1] for p in pairs]
        return scores, ids


def delete(handle: MilvusHandle, ids: list[int]) -> None:
    for i in range(0, len(ids), BATCH):
        handle.call("delete vectors", "delete", handle.collection, ids=ids[i:i + BATCH])


def _stored_vectors(handle: MilvusHandle, ids: list[int]) -> dict[int, Any]:
    """The vectors the collection holds for ``ids`` (absent ids are left out)."""
    found: dict[int, Any] = {}
    for i in range(0, len(ids), BATCH):
        for r in handle.call("read vectors", "get", handle.collection, ids=ids[i:i + BATCH], output_fields=["vector"]):
            found[int(r["id"])] = r["vector"]
    return found


def upsert(handle: MilvusHandle, ids: list[int], vecs: Any, metadata: dict[int, Any] | None) -> None:
    """Write rows ``ids`` (one call): their vectors, and their metadata when the collection has the field."""
    rows = []
    for vid, vec in zip(ids, vecs):
        row = {"id": int(vid), "vector": np.asarray(vec, dtype=np.float32).tolist()}
        if handle.has_metadata:
            row[META_FIELD] = (metadata or {}).get(int(vid), {})
        rows.append(row)
    if rows:
        handle.call("upsert vectors", "upsert", handle.collection, rows)


def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def _metadata_of(db: Path | sqlite3.Connection, ids: list[int]) -> dict[int, Any]:
    """The stored metadata (parsed JSON) of chunk rows ``ids`` in the SQLite file (or connection) ``db``."""
    con = db if isinstance(db, sqlite3.Connection) else _read_only(db)
    try:
        out: dict[int, Any] = {}
        for i in range(0, len(ids), 500):
            part = [int(v) for v in ids[i:i + 500]]
            out.update((int(v), json.loads(m)) for v, m in con.execute(
                f"SELECT vid, metadata FROM chunks WHERE vid IN ({','.join('?' * len(part))})", part))
        return out
    finally:
        if con is not db:
            con.close()


def _metadata_changes(db: Path, kb: Path, added: set[int]) -> list[int]:
    """Chunks kept by a write (same vector) whose metadata it changed: the chunks of documents whose
    content hash differs from the current generation's (whose file the manifest still names)."""
    try:
        prev = kb / json.loads((kb / MANIFEST).read_text(encoding="utf-8"))["files"]["sqlite"]
    except FileNotFoundError:
        return []  # the first generation
    con = _read_only(db)
    try:
        con.execute("ATTACH DATABASE ? AS prev", (f"file:{prev}?mode=ro",))
        rows = con.execute(
            "SELECT c.vid FROM chunks c JOIN prev.chunks p ON p.vid = c.vid WHERE c.metadata != p.metadata "
            "AND c.doc_id IN (SELECT d.doc_id FROM documents d JOIN prev.documents q ON q.doc_id = d.doc_id "
            "WHERE d.content_hash != q.content_hash)").fetchall()
    finally:
        con.close()
    return sorted(int(r[0]) for r in rows if int(r[0]) not in added)


# -- the backend entry -------------------------------------------------------------------------------
def _handle_for(path: Path, entry: dict[str, Any], cfg: IndexConfig | None = None) -> MilvusHandle:
    return MilvusHandle(resolve_uri(path, entry.get("uri", "")), entry["collection"],
                        float(entry.get("timeout", 10.0)), str(entry.get("consistency", "Strong")))


def _create(path: Path, cfg: IndexConfig, settings: BackendConfig, dim: int,
            embedder_info: dict[str, Any]) -> tuple[MilvusVectors, dict[str, Any]]:
    """Create the collection for a new knowledge base in ``path`` (refusing one that exists)."""
    if cfg.index not in INDEX_TYPES:
        raise ConfigError(f"index={cfg.index} is not available with backend milvus; use one of {sorted(INDEX_TYPES)}")
    name = settings.milvus_collection or default_collection(path)
    if not _NAME_RE.match(name):
        raise ConfigError(f"milvus_collection must be letters, digits and underscores, not starting with a digit; "
                          f"got {name!r}")
    entry = {"name": "milvus", "uri": settings.milvus_uri or DEFAULT_LITE_FILE, "collection": name,
             "timeout": settings.milvus_timeout, "consistency": settings.milvus_consistency}
    handle = _handle_for(path, entry)
    try:
        if handle.exists():
            check_collection(handle, embedder_info, path)
            raise KnowledgeBaseError(f"Milvus collection {name} at {handle.uri} already holds {handle.rows()} vectors "
                                     "of another knowledge base; choose another milvus_collection or drop that one")
        from pymilvus import DataType

        schema = handle.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
        if WITH_METADATA:
            schema.add_field(META_FIELD, DataType.JSON)
        index_type, build_params, _ = INDEX_TYPES[cfg.index](cfg)
        index = handle.client.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type="IP", params=build_params)
        handle.call("create the collection", "create_collection", name, schema=schema, index_params=index,
                    consistency_level=settings.milvus_consistency, properties=_embedder_props(embedder_info))
        handle.has_metadata = WITH_METADATA
    except BaseException:
        handle.close()
        raise
    return MilvusVectors(handle, dim, cfg.index, cfg, 0), entry


def _connect(path: Path, manifest: dict[str, Any], cfg: IndexConfig) -> MilvusHandle:
    handle = _handle_for(path, manifest["backend"])
    try:
        if not handle.exists():
            raise CorruptKnowledgeBaseError(f"Milvus collection {handle.collection} is missing at {handle.uri}; "
                                            + REBUILD_HINT.format(path=path))
        check_collection(handle, manifest["embedder"], path)
        handle.load()
    except BaseException:
        handle.close()
        raise
    return handle


def _open(path: Path, manifest: dict[str, Any], cfg: IndexConfig, handle: MilvusHandle) -> MilvusVectors:
    count = int((manifest.get("counts") or {}).get("vectors", 0))
    return MilvusVectors(handle, int(manifest["dim"]), str(manifest["index"]), cfg, count)


def verify(path: Path, state: Any, handle: MilvusHandle) -> None:
    """Refuse a collection holding fewer vectors than the generation has chunks (vectors lost)."""
    rows = handle.rows()
    if rows < state.n_chunks:
        raise CorruptKnowledgeBaseError(
            f"Milvus collection {handle.collection} at {handle.uri} holds {rows} vectors but generation "
            f"{state.generation} of {path} has {state.n_chunks} chunks; " + REBUILD_HINT.format(path=path))


def _before_write(path: Path, state: Any, handle: MilvusHandle) -> None:
    """Finish a write that died midway: delete journaled ids the current generation does not hold."""
    journal = path / JOURNAL
    if not journal.exists():
        return
    try:
        ids = [int(i) for i in json.loads(journal.read_text(encoding="utf-8"))["ids"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptKnowledgeBaseError(f"{journal} is unreadable ({e}); " + REBUILD_HINT.format(path=path)) from None
    held: set[int] = set()
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        held.update(r[0] for r in state.db.execute(
            f"SELECT vid FROM chunks WHERE vid IN ({','.join('?' * len(part))})", part))
    orphans = [i for i in ids if i not in held]
    delete(handle, orphans)
    log.info("%s: an interrupted write left %d vectors in Milvus; deleted", path, len(orphans))
    if handle.has_metadata:  # the write may have re-tagged kept chunks: put this generation's metadata back
        kept = sorted(held)
        for i in range(0, len(kept), BATCH):
            part = kept[i:i + BATCH]
            found = _stored_vectors(handle, part)
            part = [v for v in part if v in found]
            upsert(handle, part, [found[v] for v in part], _metadata_of(state.db, part))
    handle.call("flush the collection", "flush", handle.collection)
    journal.unlink()


def _discard(vectors: MilvusVectors) -> None:
    """Drop the collection ``_create`` made for a knowledge base whose first generation failed."""
    try:
        vectors.handle.call("drop the collection", "drop_collection", vectors.handle.collection)
    except KnowledgeBaseError as e:
        log.warning("%s", e)


def _after_publish(path: Path, vectors: MilvusVectors) -> None:
    vectors.apply_removals(path)


def _stats(state: Any, handle: MilvusHandle) -> dict[str, Any]:
    return {"milvus_uri": handle.uri, "milvus_collection": handle.collection, "milvus_rows": handle.rows(),
            "milvus_consistency": handle.consistency,
            "milvus_filters": "in Milvus (metadata field)" if handle.has_metadata
            else "id lists from SQLite (collection without a metadata field)"}


BACKENDS.add("milvus", VectorBackend(create=_create, open=_open, connect=_connect, close=MilvusHandle.close,
                                     before_write=_before_write, after_publish=_after_publish, stats=_stats,
                                     verify=verify, discard=_discard))
