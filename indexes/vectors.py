"""The FAISS side of a knowledge base: an ``IndexIDMap2`` keyed by 60-bit integer chunk ids.

    vi = VectorIndex.new("flat", dim=384, cfg=IndexConfig())
    vi.add(np.array([7, 9]), vecs)             # vecs: (2, 384) float32, L2-normalized
    scores, ids = vi.search(queries, k=5)      # inner product = cosine; higher is better
    vi.save("vectors.faiss"); vi = VectorIndex.load("vectors.faiss", "flat", cfg)

Kinds:

- ``flat``: exact ``IndexFlatIP``. Deletes are real (``remove_ids``).
- ``hnsw``: ``IndexHNSWFlat``. HNSW graphs cannot drop nodes, so deleted ids become *tombstones*
  that every search excludes with an ``IDSelector``; once tombstones pass
  ``hnsw_max_tombstones`` of the graph, the graph is rebuilt from its own stored vectors
  (no re-embedding needed, the flat storage keeps exact vectors).
- ``ivfpq``: ``IndexIVFPQ`` keyed by chunk id natively (IVF lists store ids; no IDMap2 needed), trained on a random sample (``ivf_train_size``) of the first vectors
  added; ``nlist`` shrinks to ``n/39`` when there is too little training data. Deletes are real.
  With ``ivf_refine`` = ``flat`` or ``sq8`` a second store keeps every vector again, keyed by the
  same chunk ids (``IndexIDMap2`` over ``IndexFlatIP`` or an 8-bit ``IndexScalarQuantizer``): a
  search takes the PQ top ``k * ivf_k_factor`` and re-ranks them by their inner product with the
  stored vectors, and ``reconstruct`` reads the stored vectors instead of PQ codes. The two are
  written as one ``faiss.IndexRefine`` (base = the IVF-PQ, refine = the store), a container only:
  FAISS's own ``IndexRefine.search`` expects sequential ids and cannot remove, so ``VectorIndex``
  runs both stages itself. A file without the container (written before refinement) loads as a
  plain IVF-PQ and searches as before, whatever ``ivf_refine`` says.
  ``ivf_fastscan`` builds ``IndexIVFPQFastScan`` (4-bit codes scanned with SIMD kernels) as the
  IVF-PQ: ids, deletes and ID selectors work as for ``IndexIVFPQ``; it has no direct map (its
  lists cannot remove through one), so it needs a refine store, which ``reconstruct`` reads.

Each kind is a ``VectorKind`` in ``VECTOR_KINDS``, a registry by name (the ``index`` setting):
how to build its empty FAISS index and its per-search parameters. A new kind is one entry there.

Files are written with ``faiss.write_index`` (a documented binary format, not pickle).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from core.errors import CorruptKnowledgeBaseError, InputError
from core.io import fsync
from core.registry import Registry
from indexes.config import IndexConfig
from indexes.integrity import REBUILD_HINT

# Below this many allowed ids a filtered search scans the allowed vectors exactly: an HNSW walk with a
# very selective IDSelector can miss results, and a scan of a few thousand vectors takes microseconds.
EXACT_FILTER_MAX = 4096
# Waking FAISS's OpenMP team costs more than a small search itself (measured on a busy 2-core
# machine: 9.1 ms with 2 threads against 0.046 ms with 1, for one query over 2,000 vectors), so
# searches below this many (query x stored vector) pairs run on one thread.
SMALL_SEARCH_PAIRS = 2_000_000
# Refined IVF-PQ searches copy k * ivf_k_factor stored vectors per query; queries go in blocks of about this size.
REFINE_BLOCK_BYTES = 32 << 20
_OMP_LOCK = threading.Lock()


def _faiss():
    import faiss

    return faiss


def _ids(ids: Iterable[int]) -> np.ndarray:
    return np.ascontiguousarray(np.fromiter((int(i) for i in ids), dtype=np.int64))


def _rerank(store: Any, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of the candidate ids ``cand`` (-1 = none) per query, by inner product with ``store``'s vectors."""
    valid = cand >= 0
    if not valid.any():
        return np.full((len(cand), k), -np.inf, np.float32), np.full((len(cand), k), -1, np.int64)
    # missing slots read some valid vector and are scored -inf: one (queries, candidates, dim) block, no gathers
    safe = np.where(valid, cand, cand[valid][0])
    vecs = store.reconstruct_batch(np.ascontiguousarray(safe.ravel())).reshape(*cand.shape, -1)
    sims = np.matmul(vecs, queries[:, :, None])[:, :, 0]
    sims[~valid] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(sims, order, axis=1)
    ids = np.where(np.isfinite(scores), np.take_along_axis(cand, order, axis=1), -1)
    return scores, ids


@dataclass(frozen=True)
class VectorKind:
    """One FAISS index kind: ``build(dim, cfg, nlist)`` makes the empty index ``VectorIndex`` keeps
    (already keyed by chunk id), ``params(cfg, selector)`` the search parameters (None = FAISS defaults).
    ``score_slack``: how far past [-1, 1] a healthy index of this kind may score a normalized query
    (``indexes.integrity.check_scores`` refuses anything further out as damage)."""

    build: Callable[[int, IndexConfig, int | None], Any]
    params: Callable[[IndexConfig, Any], Any]
    score_slack: float = 1e-3  # exact float32 vectors: only rounding


VECTOR_KINDS: Registry[VectorKind] = Registry("index kind")


def _build_flat(dim: int, cfg: IndexConfig, nlist: int | None) -> Any:
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _build_hnsw(dim: int, cfg: IndexConfig, nlist: int | None) -> Any:
    faiss = _faiss()
    inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = cfg.hnsw_ef_construction
    inner.hnsw.efSearch = cfg.hnsw_ef_search
    return faiss.IndexIDMap2(inner)


def _build_ivfpq(dim: int, cfg: IndexConfig, nlist: int | None) -> Any:
    faiss = _faiss()
    if dim % cfg.ivf_m:
        raise InputError(f"ivf_m ({cfg.ivf_m}) must divide the embedding dimension ({dim})")
    quantizer = faiss.IndexFlatIP(dim)
    make = faiss.IndexIVFPQFastScan if cfg.ivf_fastscan else faiss.IndexIVFPQ
    inner = make(quantizer, dim, nlist or cfg.ivf_nlist, cfg.ivf_m, cfg.ivf_nbits, faiss.METRIC_INNER_PRODUCT)
    inner.own_fields = True
    quantizer.this.disown()  # the IVF index now frees its quantizer
    # IVF lists store 64-bit ids themselves, so the chunk ids go in directly: an IndexIDMap2 on
    # top would only duplicate them, and (faiss 1.15) breaks reconstruct through a hashtable map.
    if cfg.ivf_refine == "none":
        return inner
    return _refine_container(inner, _build_refine_store(dim, cfg.ivf_refine))


def _build_refine_store(dim: int, refine: str) -> Any:
    """The vectors IVF-PQ candidates are re-ranked with, keyed by chunk id: exact float32 or 8-bit SQ."""
    faiss = _faiss()
    if refine == "flat":
        store = faiss.IndexFlatIP(dim)
    elif refine == "sq8":
        store = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    else:
        raise InputError(f"unknown ivf_refine {refine!r}; known: none, flat, sq8")
    wrapped = faiss.IndexIDMap2(store)
    wrapped.own_fields = True
    store.this.disown()
    return wrapped


def _refine_container(base: Any, store: Any) -> Any:
    """One ``IndexRefine`` owning ``base`` and ``store``, so that one file and one clone hold both."""
    faiss = _faiss()
    box = faiss.IndexRefine(base, store)
    box.own_fields = True  # clone_index then copies both parts, and freeing the box frees them
    base.this.disown()
    store.this.disown()
    return box


def _params_flat(cfg: IndexConfig, sel: Any) -> Any:
    return _faiss().SearchParameters(sel=sel) if sel is not None else None


def _params_hnsw(cfg: IndexConfig, sel: Any) -> Any:
    return _faiss().SearchParametersHNSW(sel=sel, efSearch=max(cfg.hnsw_ef_search, 1))


def _params_ivfpq(cfg: IndexConfig, sel: Any) -> Any:
    return _faiss().SearchParametersIVF(sel=sel, nprobe=cfg.ivf_nprobe)


VECTOR_KINDS.add("flat", VectorKind(_build_flat, _params_flat))
VECTOR_KINDS.add("hnsw", VectorKind(_build_hnsw, _params_hnsw))
# PQ scores against codebook reconstructions whose norm is not exactly 1 (measured up to 1.065 with
# the hash embedder, 3,000 documents, ivf_m=16); the slack only has to stay far below what damaged
# vectors give (the garbage file of issue 14 scored around 4e37).
VECTOR_KINDS.add("ivfpq", VectorKind(_build_ivfpq, _params_ivfpq, score_slack=0.5))


class VectorIndex:
    """A FAISS ``IndexIDMap2`` plus the tombstones an HNSW graph needs. See the module docstring."""

    def __init__(self, index, kind: str, cfg: IndexConfig, tombstones: Iterable[int] = ()):
        self.index = index
        self.kind = kind
        self.cfg = cfg
        self.tombstones: set[int] = set(int(t) for t in tombstones)

    # -- IVF-PQ refinement ----------------------------------------------------------------------
    def _refined(self) -> tuple[Any, Any] | None:
        """(the IVF-PQ, its refine store) when this index re-ranks with stored vectors, else None."""
        faiss = _faiss()
        if self.kind != "ivfpq" or not isinstance(self.index, faiss.IndexRefine):
            return None
        return faiss.downcast_index(self.index.base_index), faiss.downcast_index(self.index.refine_index)

    @property
    def refine(self) -> str:
        """What this index re-ranks with: ``none``, ``flat`` or ``sq8`` (read from the index itself)."""
        parts = self._refined()
        if parts is None:
            return "none"
        return "flat" if isinstance(_faiss().downcast_index(parts[1].index), _faiss().IndexFlat) else "sq8"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def new(cls, kind: str, dim: int, cfg: IndexConfig, *, nlist: int | None = None) -> "VectorIndex":
        """An empty index of ``kind`` (a ``VECTOR_KINDS`` name; InputError lists the known ones)."""
        return cls(VECTOR_KINDS.get(kind).build(dim, cfg, nlist), kind, cfg)

    @classmethod
    def load(cls, path: str | os.PathLike[str], kind: str, cfg: IndexConfig,
             tombstones: Iterable[int] = ()) -> "VectorIndex":
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except Exception as e:  # noqa: BLE001 - faiss raises RuntimeError with a C++ trace
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise CorruptKnowledgeBaseError(
                f"cannot read vector index {path}: {first}; " + REBUILD_HINT.format(path=Path(path).parent)) from None
        return cls(index, kind, cfg, tombstones)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` and fsync it (the caller renames it into place)."""
        _faiss().write_index(self.index, str(path))
        fsync(path)

    def copy(self) -> "VectorIndex":
        """An independent copy: writers change a copy, so searches running meanwhile see a consistent index."""
        return VectorIndex(_faiss().clone_index(self.index), self.kind, self.cfg, set(self.tombstones))

    # -- properties -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Vectors stored, tombstones included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def _inner(self):
        if self.kind == "ivfpq":
            parts = self._refined()
            return parts[0] if parts else _faiss().downcast_index(self.index)
        return _faiss().downcast_index(self.index.index)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    # -- writes ---------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        ids = _ids(ids)
        if self.tombstones and self.tombstones.intersection(ids.tolist()):
            # A tombstoned id coming back (an edit reverted): drop the dead copy first.
            self.compact()
        if self.kind == "ivfpq" and not self.is_trained:
            self._train(vecs)
        parts = self._refined()
        if parts is None:
            self.index.add_with_ids(vecs, ids)
            return
        for part in parts:
            part.add_with_ids(vecs, ids)
        self.index.ntotal = parts[0].ntotal

    def _train(self, vecs: np.ndarray) -> None:
        n = len(vecs)
        need = 1 << self.cfg.ivf_nbits
        if n < need:
            raise InputError(f"index=ivfpq needs at least {need} chunks in its first sync to train "
                             f"(2**ivf_nbits), got {n}; use index=flat for small corpora")
        nlist = max(1, min(self.cfg.ivf_nlist, n // 39))
        if nlist != self.cfg.ivf_nlist:
            fresh = VectorIndex.new("ivfpq", self.dim, self.cfg, nlist=nlist)
            self.index = fresh.index
        rng = np.random.default_rng(0)
        sample = vecs if n <= self.cfg.ivf_train_size else vecs[rng.choice(n, self.cfg.ivf_train_size, replace=False)]
        self.index.train(np.ascontiguousarray(sample))  # an IndexRefine trains its IVF-PQ and its SQ8 store
        # a hashtable direct map lets us reconstruct vectors by chunk id (MMR, filtered scans) and remove ids;
        # fast-scan lists cannot remove through one (faiss 1.15), and always have a refine store to reconstruct from
        if not self.cfg.ivf_fastscan:
            self._inner().set_direct_map_type(_faiss().DirectMap.Hashtable)

    def remove(self, ids: Iterable[int]) -> None:
        ids = _ids(ids)
        if len(ids) == 0:
            return
        if self.kind == "hnsw":
            self.tombstones.update(ids.tolist())
            if len(self.tombstones) > self.cfg.hnsw_max_tombstones * max(1, self.ntotal):
                self.compact()
            return
        parts = self._refined()
        if parts is None:
            self.index.remove_ids(ids)
            return
        for part in parts:
            part.remove_ids(ids)
        self.index.ntotal = parts[0].ntotal

    def compact(self) -> None:
        """Rebuild an HNSW graph without its tombstones, from the exact vectors it stores."""
        if not self.tombstones:
            return
        faiss = _faiss()
        all_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vecs = self._inner().storage.reconstruct_n(0, self.ntotal) if self.ntotal else np.zeros((0, self.dim), "float32")
        keep = ~np.isin(all_ids, np.fromiter(self.tombstones, dtype=np.int64))
        fresh = VectorIndex.new(self.kind, self.dim, self.cfg)
        if keep.any():
            fresh.index.add_with_ids(np.ascontiguousarray(vecs[keep]), np.ascontiguousarray(all_ids[keep]))
        self.index = fresh.index
        self.tombstones = set()

    # -- reads ----------------------------------------------------------------------------------
    def reconstruct(self, ids: Iterable[int]) -> np.ndarray:
        ids = _ids(ids)
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = self._refined()
        return (parts[1] if parts else self.index).reconstruct_batch(ids)

    def _params(self, sel=None):
        return VECTOR_KINDS.get(self.kind).params(self.cfg, sel)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1. ``allowed`` limits the ids."""
        faiss = _faiss()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq = len(queries)
        if self.ntotal == 0 or k <= 0:
            return np.zeros((nq, max(k, 0)), np.float32), np.full((nq, max(k, 0)), -1, np.int64)
        if allowed is not None:
            allowed = _ids(allowed)
            if len(allowed) <= EXACT_FILTER_MAX or len(allowed) <= 0.05 * self.ntotal:
                return self._exact(queries, k, allowed)
            keep = [faiss.IDSelectorBatch(allowed)]
            sel = keep[0]
        elif self.tombstones:
            keep = [faiss.IDSelectorBatch(_ids(self.tombstones))]
            keep.append(faiss.IDSelectorNot(keep[0]))
            sel = keep[1]
        else:
            sel = None
        params = self._params(sel)
        kk = min(k, self.ntotal)
        if nq * self.ntotal <= SMALL_SEARCH_PAIRS:
            with _OMP_LOCK:  # the thread count is process-wide: set and restore it under a lock
                before = faiss.omp_get_max_threads()
                faiss.omp_set_num_threads(1)
                try:
                    scores, ids = self._raw_search(queries, kk, params)
                finally:
                    faiss.omp_set_num_threads(before)
        else:
            scores, ids = self._raw_search(queries, kk, params)
        if kk < k:
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        return scores, ids

    def _raw_search(self, queries: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        parts = self._refined()
        if parts is not None:
            return self._refined_search(parts, queries, k, params)
        if params is None:
            return self.index.search(queries, k)
        return self.index.search(queries, k, params=params)

    def _refined_search(self, parts, queries: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        """The IVF-PQ's top ``k * ivf_k_factor``, re-ranked by inner product with the stored vectors."""
        base, store = parts
        k_base = max(k, min(k * self.cfg.ivf_k_factor, int(base.ntotal)))
        _, cand = base.search(queries, k_base, params=params)
        # reconstructing k_base vectors per query: keep each block's copy near REFINE_BLOCK_BYTES
        step = max(1, REFINE_BLOCK_BYTES // (k_base * self.dim * 4))
        scores = np.empty((len(queries), k), np.float32)
        ids = np.empty((len(queries), k), np.int64)
        for s in range(0, len(queries), step):
            scores[s:s + step], ids[s:s + step] = _rerank(store, queries[s:s + step], cand[s:s + step], k)
        return scores, ids

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        if len(allowed) == 0:
            return scores, ids
        vecs = self.reconstruct(allowed)
        sims = queries @ vecs.T
        top = min(k, len(allowed))
        order = np.argsort(-sims, axis=1, kind="stable")[:, :top]
        scores[:, :top] = np.take_along_axis(sims, order, axis=1)
        ids[:, :top] = allowed[order]
        return scores, ids
