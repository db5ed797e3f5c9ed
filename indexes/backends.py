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

The settings are declared once, as ``IndexConfig`` fields (``indexes.config.BACKEND_FIELDS``:
``backend``, ``milvus_uri``, ``milvus_collection``, ``milvus_timeout``, ``milvus_consistency``, so the
config keys are ``index.backend``, ``index.milvus_uri``...). ``BackendConfig`` is a frozen dataclass
made from those fields (same names, defaults and help texts), for passing the settings alone;
``backend_settings`` picks the explicit one or reads them from an ``IndexConfig``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.errors import ConfigError
from core.registry import Registry
from indexes.config import BACKEND_FIELDS, CONSISTENCY_LEVELS, IndexConfig, check_milvus_settings  # noqa: F401


def _check_backend_config(self: Any) -> None:
    BACKENDS.get(self.backend)  # InputError naming the known backends
    try:
        check_milvus_settings(self.milvus_timeout, self.milvus_consistency)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _backend_config_class() -> type:
    """``BackendConfig``: the ``BACKEND_FIELDS`` of ``IndexConfig`` as a frozen dataclass of their own."""
    declared = {f.name: f for f in dataclasses.fields(IndexConfig)}
    spec = [(n, declared[n].type, field(default=declared[n].default, metadata=dict(declared[n].metadata)))
            for n in BACKEND_FIELDS]
    cls = dataclasses.make_dataclass("BackendConfig", spec, frozen=True,
                                     namespace={"__post_init__": _check_backend_config})
    cls.__module__ = __name__
    cls.__doc__ = """The vector-store settings of a knowledge base, fixed when it is created and kept in its manifest.

    Made from ``IndexConfig``'s fields of the same names (declared there once, with their help texts)::

        BackendConfig("milvus", milvus_uri="http://milvus:19530", milvus_collection="legal_kb")
    """
    return cls


BackendConfig = _backend_config_class()


def backend_settings(cfg: IndexConfig | None, explicit: Any = None) -> Any:
    """The ``BackendConfig`` for a knowledge base: ``explicit`` when given, else ``cfg``'s backend
    fields, else the defaults (FAISS)."""
    if explicit is not None:
        return explicit
    if cfg is None:
        return BackendConfig()
    return BackendConfig(**{n: getattr(cfg, n) for n in BACKEND_FIELDS})


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


def _create_faiss(path: Path, cfg: IndexConfig, settings: Any, dim: int,
                  embedder_info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from indexes.vectors import VectorIndex

    return VectorIndex.new(cfg.index, dim, cfg), {"name": "faiss"}


BACKENDS.add("faiss", VectorBackend(create=_create_faiss))

from indexes import milvus as _milvus  # noqa: E402,F401 - registers "milvus" (pymilvus is imported only when used)
