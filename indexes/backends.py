"""Where a knowledge base keeps its vectors: a registry of vector-store backends.

    KnowledgeBase.create(".cache/kb", cfg, backend=BackendConfig("milvus"))          # Milvus Lite file in the KB dir
    KnowledgeBase.create(".cache/kb", cfg, backend=BackendConfig("milvus", milvus_uri="http://host:19530"))

Backends (``BACKENDS``, by name; a new one is one entry):

- ``faiss`` (the default): one FAISS file per generation, ``indexes.vectors.VectorIndex``; every
  guarantee of ``indexes.store`` (atomic generation swap, checksums) holds for the vectors too.
- ``milvus``: one Milvus collection per knowledge base (``indexes.milvus``). The SQLite side (text,
  metadata, BM25, filters, generations) is unchanged; the collection is changed in place. See
  ``indexes.milvus`` and docs/milvus.md for what that changes.

A backend is a ``VectorBackend``: how to make the empty vector side of a new knowledge base and
what the manifest records about it, how to open it for a loaded manifest (``None``: read the
generation's FAISS file as before), what to do under the writer's lock before and after a write,
and what ``stats`` adds. ``indexes.kb`` calls these and nothing backend-specific.

The settings are ``BackendConfig`` here until ``IndexConfig`` carries them (``backend``,
``milvus_uri``, ``milvus_collection``, ``milvus_timeout``, ``milvus_consistency``):
``backend_settings`` reads them from an ``IndexConfig`` that has them, else from the explicit
``BackendConfig``, else the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.errors import ConfigError
from core.registry import Registry
from indexes.config import IndexConfig

CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")


@dataclass(frozen=True)
class BackendConfig:
    """The vector-store settings of a knowledge base (fixed when it is created, kept in its manifest)."""

    backend: str = field(default="faiss", metadata={
        "help": "where vectors live: faiss (files beside the SQLite store) or milvus (a Milvus collection)"})
    milvus_uri: str = field(default="", metadata={
        "help": "milvus: a Milvus Lite file (relative paths are inside the KB directory) or http://host:19530; "
                "empty = milvus.db inside the KB directory"})
    milvus_collection: str = field(default="", metadata={
        "help": "milvus: the collection's name; empty = derived from the KB directory's name"})
    milvus_timeout: float = field(default=10.0, metadata={
        "help": "milvus: seconds to wait for the server to answer before giving up with an error"})
    milvus_consistency: str = field(default="Strong", metadata={
        "help": "milvus: consistency level of the collection (Strong: a search sees every finished write)"})

    def __post_init__(self) -> None:
        if self.milvus_timeout <= 0:
            raise ConfigError(f"milvus_timeout must be > 0 seconds, got {self.milvus_timeout}")
        if self.milvus_consistency not in CONSISTENCY_LEVELS:
            raise ConfigError(f"milvus_consistency must be one of {list(CONSISTENCY_LEVELS)}, "
                              f"got {self.milvus_consistency!r}")
        BACKENDS.get(self.backend)  # InputError naming the known backends


def backend_settings(cfg: IndexConfig | None, explicit: BackendConfig | None = None) -> BackendConfig:
    """The backend settings for ``cfg``: ``explicit`` when given, else the ``BackendConfig`` fields an
    ``IndexConfig`` carries (once it has them), else the defaults (FAISS)."""
    if explicit is not None:
        return explicit
    names = {f.name for f in dataclasses.fields(BackendConfig)}
    found = {n: getattr(cfg, n) for n in names if cfg is not None and hasattr(cfg, n)}
    return BackendConfig(**found)


@dataclass(frozen=True)
class VectorBackend:
    """One vector store. ``path`` is the knowledge base directory throughout.

    - ``create(path, cfg, settings, dim, embedder_info)`` -> ``(vectors, manifest_entry)``: the empty
      vector side of a new knowledge base and the ``manifest["backend"]`` dict describing it.
    - ``open(path, manifest, cfg, handle)`` -> vectors for ``load_generation``, or ``None`` to read the
      generation's FAISS file as ``indexes.store`` always has.
    - ``connect(path, manifest, cfg)`` -> a handle the knowledge base keeps open (closed by ``close``).
    - ``before_write(path, state, handle)``: under the writer's lock, before a write (crash recovery).
    - ``after_publish(path, vectors)``: after the manifest swap (deferred deletes).
    - ``verify(path, state, handle)``: after a generation is loaded, check the store against it.
    - ``discard(vectors)``: undo ``create`` when the new knowledge base's first generation failed.
    - ``stats(state, handle)`` -> extra ``stats()`` entries.
    """

    create: Callable[..., tuple[Any, dict[str, Any]]]
    open: Callable[..., Any] = lambda path, manifest, cfg, handle: None
    connect: Callable[..., Any] = lambda path, manifest, cfg: None
    close: Callable[[Any], None] = lambda handle: None
    before_write: Callable[..., None] = lambda path, state, handle: None
    after_publish: Callable[..., None] = lambda path, vectors: None
    stats: Callable[..., dict[str, Any]] = lambda state, handle: {}
    verify: Callable[..., None] = lambda path, state, handle: None
    discard: Callable[[Any], None] = lambda vectors: None


BACKENDS: Registry[VectorBackend] = Registry("vector backend")


def manifest_backend(manifest: dict[str, Any]) -> str:
    """The backend a manifest records (manifests from before backends are FAISS)."""
    return str((manifest.get("backend") or {}).get("name", "faiss"))


def _create_faiss(path: Path, cfg: IndexConfig, settings: BackendConfig, dim: int,
                  embedder_info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from indexes.vectors import VectorIndex

    return VectorIndex.new(cfg.index, dim, cfg), {"name": "faiss"}


BACKENDS.add("faiss", VectorBackend(create=_create_faiss))

from indexes import milvus as _milvus  # noqa: E402,F401 - registers "milvus" (pymilvus is imported only when used)
