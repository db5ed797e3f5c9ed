"""What a sync changes: which documents are new, changed, unchanged or gone, and the rows it writes.

    incoming = dedupe_documents(docs, report)      # by id; the same id with different text is refused
    upserts, to_delete = diff_documents(stored_documents(db), incoming, prune, report)
    keep_cids, to_embed, remove_vids = diff_chunks(new_chunks, stored_chunks(db, doc_ids))
    apply_changes(con, upserts, to_delete, new_chunks, keep_cids, remove_vids, vectors)

Chunks and vectors made elsewhere (the Ray engine, ``indexes.ray_build``) come in as a ``Prepared``:
``sync(docs, prepared=...)`` then takes each document's chunks and each new chunk's vector from it
instead of chunking and embedding, and writes them the same way.

A document is *unchanged* when its id is stored with the same ``content_hash`` (text and
metadata), *changed* when its id is stored with another hash, or when its id is new but it is the
only input from a source unit (``source_key``: file/URL + page + row) that holds exactly one stored
document not in the input, which it then replaces. With ``prune`` every other stored document is
deleted. Chunks are matched by id (document id, position and text): a chunk already stored for the
same document keeps its vector, every other new chunk is embedded, and stored chunks of the touched
documents that are no longer produced are removed. ``SyncReport`` counts what happened.

``dedupe_documents``, ``diff_documents`` and ``diff_chunks`` touch no database (they only fill in
the report); ``stored_documents`` and ``stored_chunks`` only read, and ``apply_changes`` writes into
the tables ``indexes.store`` creates, inside its ``publish``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from core.errors import InputError, ModelError
from core.types import Chunk, Document
from indexes.vectors import VectorIndex


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


@dataclass
class Prepared:
    """Chunks and vectors computed outside the knowledge base, for ``KnowledgeBase.sync(prepared=...)``.

    ``chunks`` holds every document a sync will (re)index, by id, with its chunks in order (an empty
    list for a document without any); ``matrix`` row ``i`` is the vector of chunk ``ids[i]``;
    ``made_by`` is ``"<embedder name>@<revision>"``, checked against the knowledge base's manifest.

    >>> p = Prepared({"d1": []}, [], np.zeros((0, 0), np.float32), "hash-embedder@hash-v1")
    >>> p.chunks_of([])
    []
    """

    chunks: dict[str, list[Chunk]]
    ids: list[str]
    matrix: np.ndarray
    made_by: str = ""

    def chunks_of(self, docs: list[Document]) -> list[Chunk]:
        """The chunks of ``docs``, in order; a document it does not hold is an ``InputError``."""
        missing = [d.id for d in docs if d.id not in self.chunks]
        if missing:
            raise InputError(f"the prepared chunks lack {len(missing)} of the documents to index "
                             f"(first: {missing[0]}); nothing was written")
        return [c for d in docs for c in self.chunks[d.id]]

    def vectors_of(self, chunks: list[Chunk], dim: int) -> np.ndarray:
        """The ``(len(chunks), dim)`` vectors of ``chunks``; a chunk without one is a ``ModelError``."""
        if not chunks:
            return np.zeros((0, dim), dtype=np.float32)
        row = {cid: i for i, cid in enumerate(self.ids)}
        missing = [c.id for c in chunks if c.id not in row]
        if missing:
            raise ModelError(f"no prepared vector for {len(missing)} chunks (first: {missing[0]}); nothing was written")
        return np.asarray(self.matrix)[[row[c.id] for c in chunks]]


def content_hash(doc: Document) -> str:
    """A hash of a document's text and metadata: equal hashes mean nothing to re-index."""
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


def dedupe_documents(documents: Iterable[Document], report: SyncReport) -> dict[str, Document]:
    """The input by id. Repeats of an id with the same text count in ``report.duplicates`` (the first
    copy is kept); the same id with different text raises ``InputError``."""
    incoming: dict[str, Document] = {}
    for d in list(documents):
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
    return incoming


def stored_documents(db: sqlite3.Connection) -> dict[str, tuple[str | None, str]]:
    """``{doc_id: (source_key, content_hash)}`` of every stored document."""
    return {r[0]: (r[1], r[2]) for r in db.execute("SELECT doc_id, source_key, content_hash FROM documents")}


def diff_documents(stored: dict[str, tuple[str | None, str]], incoming: dict[str, Document], prune: bool,
                   report: SyncReport) -> tuple[list[Document], set[str]]:
    """``(upserts, to_delete)``: the new or changed documents, and the stored ids to delete.

    Counts added, updated, unchanged and deleted documents in ``report``.
    """
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
    return upserts, to_delete


def stored_chunks(db: sqlite3.Connection, doc_ids: Iterable[str]) -> dict[str, tuple[int, str]]:
    """``{chunk_id: (vid, doc_id)}`` of the stored chunks of ``doc_ids``."""
    old_rows: dict[str, tuple[int, str]] = {}
    touched = list(doc_ids)
    for i in range(0, len(touched), 500):
        part = touched[i:i + 500]
        q = f"SELECT vid, chunk_id, doc_id FROM chunks WHERE doc_id IN ({','.join('?' * len(part))})"
        for vid, cid, did in db.execute(q, part):
            old_rows[cid] = (vid, did)
    return old_rows


def diff_chunks(new_chunks: list[Chunk], old_rows: dict[str, tuple[int, str]]) -> tuple[set[str], list[Chunk], list[int]]:
    """``(keep_cids, to_embed, remove_vids)``: chunks stored already for the same document, chunks
    to embed, and the vector ids of stored chunks (from ``stored_chunks``) no longer produced."""
    keep_cids = {c.id for c in new_chunks if c.id in old_rows and old_rows[c.id][1] == c.doc_id}
    to_embed = [c for c in new_chunks if c.id not in keep_cids]
    remove_vids = [vid for cid, (vid, _) in old_rows.items() if cid not in keep_cids]
    return keep_cids, to_embed, remove_vids


def apply_changes(con: sqlite3.Connection, upserts: list[Document], to_delete: set[str], new_chunks: list[Chunk],
                  keep_cids: set[str], remove_vids: list[int], vectors: VectorIndex) -> None:
    """Write one sync's changes into a generation's tables (inside ``publish``'s transaction).

    Removes the chunk rows (and their FTS5 entries) of ``remove_vids`` and the ``to_delete``
    documents, upserts the ``upserts`` documents, inserts the ``new_chunks`` not in ``keep_cids``
    (rows plus FTS5 entries; kept ones only get their metadata updated), records their metadata
    field names for filters, and stores ``vectors``' tombstones.
    """
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
