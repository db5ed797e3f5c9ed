"""Searching a knowledge base: dense, BM25 or hybrid, optional MMR, and the LangChain retriever.

``KnowledgeBase`` (``indexes.kb``) inherits these methods from ``Searching``; they read only
``self._state`` (one loaded generation), ``self.cfg``, ``self.path``, ``self.refresh()`` and
``self._embed()``, which ``KnowledgeBase`` provides. ``self._state.vectors`` is whichever vector
backend the knowledge base uses (``indexes.backends``): a FAISS ``VectorIndex`` or ``MilvusVectors``.
Kept apart from ``indexes.kb`` so each file stays readable: ``kb`` opens and writes, this module reads.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from core.errors import InputError
from core.types import Chunk, Hit
from indexes.bm25 import bm25_search
from indexes.config import SEARCH_MODES
from indexes.filters import filter_sql
from indexes.fusion import mmr as _mmr
from indexes.fusion import rrf
from indexes.integrity import check_scores, translate
from indexes.store import State


class Searching:
    """The read side of ``KnowledgeBase`` (a mixin; see the module docstring)."""

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

    @translate
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
        # a store that filters by metadata itself (Milvus) gets an expression; otherwise the allowed ids
        expr = self._store_filter(filters, st) if where is not None else None
        allowed = self._allowed(where, st) if where is not None and expr is None else None
        if allowed is not None and len(allowed) == 0:
            return [[] for _ in queries]
        depth = k if mode != "hybrid" and not mmr else max(k, self.cfg.fusion_depth)
        depth = min(depth, st.n_chunks)
        qvecs = None
        dense: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode in ("dense", "hybrid") or mmr:
            qvecs = self._embed(queries)
            dense = self._dense(qvecs, depth, allowed, st, expr, where)
        sparse: list[list[tuple[int, float]]] = [[] for _ in queries]
        if mode in ("bm25", "hybrid"):
            for i, q in enumerate(queries):
                sparse[i] = bm25_search(st.db, q, depth, self.cfg.bm25_max_terms, where)
        out = []
        for i in range(len(queries)):
            out.append(self._assemble(dense[i], sparse[i], mode, k, mmr, qvecs[i] if qvecs is not None else None, st))
        return out

    def _store_filter(self, filters: dict[str, Any], st: State) -> str | None:
        """The vector store's own expression for ``filters`` (``vectors.filter_expr``: Milvus's metadata
        field), or ``None``: the store has none, or cannot express these filters exactly enough."""
        make = getattr(st.vectors, "filter_expr", None)
        return make(filters, st.fields) if make is not None else None

    def _dense(self, qvecs: np.ndarray, depth: int, allowed: np.ndarray | None, st: State,
               expr: str | None = None, where: tuple[str, list[Any]] | None = None) -> list[list[tuple[int, float]]]:
        """The top ``depth`` (vector id, score) of each query among the vectors of generation ``st``.

        A store shared by every generation (``vectors.shared``: Milvus) may also hold vectors that a
        concurrent or interrupted write added; they are dropped, and the search asks deeper while a
        full answer left fewer than ``depth``, up to the store's ``max_k``. A store filtering by its
        own ``expr`` has its hits checked against the SQL filter ``where`` the same way, so the SQL
        filter decides, whichever store runs."""
        shared = bool(getattr(st.vectors, "shared", False)) or expr is not None
        want = depth
        while True:
            if expr is None:
                scores, ids = st.vectors.search(qvecs, want, allowed=allowed)
            else:
                scores, ids = st.vectors.search(qvecs, want, expr=expr)
            check_scores(scores, ids, st.vectors.kind, self.path / st.manifest["files"]["faiss"], self.path)
            lists = [[(int(v), float(s)) for v, s in zip(ids[i], scores[i]) if v >= 0] for i in range(len(qvecs))]
            if not shared:
                return lists
            known = self._known({v for got in lists for v, _ in got}, st, where if expr is not None else None)
            out = [[p for p in got if p[0] in known][:depth] for got in lists]
            short = any(len(o) < depth and len(got) == want for o, got in zip(out, lists))
            limit = int(getattr(st.vectors, "max_k", want))
            if not short or want >= limit:
                return out
            want = min(limit, want * 2)

    def _known(self, vids: set[int], st: State, where: tuple[str, list[Any]] | None = None) -> set[int]:
        """The ``vids`` that generation ``st`` has a chunk row for (that also passes ``where``, if given)."""
        ordered, out = sorted(vids), set()
        fsql, fargs = where if where is not None else ("1", [])
        for i in range(0, len(ordered), 500):
            part = ordered[i:i + 500]
            out.update(r[0] for r in st.db.execute(
                f"SELECT c.vid FROM chunks c WHERE c.vid IN ({','.join('?' * len(part))}) AND ({fsql})",
                [*part, *fargs]))
        return out

    def _assemble(self, dense: list[tuple[int, float]], sparse: list[tuple[int, float]], mode: str, k: int,
                  use_mmr: bool, qvec: np.ndarray | None, st: State) -> list[Hit]:
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
            ranked, _ = self._with_rows(ranked, len(ranked), st)
            pool = [v for v, _ in ranked]
            picked = _mmr(qvec, st.vectors.reconstruct(pool), k, self.cfg.mmr_lambda)
            ranked = [ranked[j] for j in picked]
        ranked, rows = self._with_rows(ranked, k, st)
        hits = []
        for vid, score in ranked:
            row = rows[vid]
            parts = {}
            if vid in d_score:
                parts["dense"] = d_score[vid]
            if vid in s_score:
                parts["bm25"] = s_score[vid]
            if mode == "hybrid":
                parts["rrf"] = score
            hits.append(Hit(chunk=row, score=float(score), rank=len(hits) + 1, scores=parts))
        return hits

    def _with_rows(self, ranked: list[tuple[int, float]], k: int,
                   st: State) -> tuple[list[tuple[int, float]], dict[int, Chunk]]:
        """The first ``k`` of ``ranked`` that have a chunk row in generation ``st``, and those rows.

        A vector without a row is a tombstoned one (HNSW) or one a concurrent writer has just added
        to a store shared by all generations (Milvus); it is skipped and the next one takes its place."""
        rows = self._rows([v for v, _ in ranked[:k]], st)
        if len(rows) < min(k, len(ranked)):
            rows = self._rows([v for v, _ in ranked], st)
        kept = [(v, s) for v, s in ranked if v in rows][:k]
        return kept, rows

    def _rows(self, vids: list[int], st: State) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        db = st.db
        for i in range(0, len(vids), 500):
            part = vids[i:i + 500]
            q = f"SELECT vid, chunk_id, doc_id, text, metadata FROM chunks WHERE vid IN ({','.join('?' * len(part))})"
            for vid, cid, did, text, meta in db.execute(q, part):
                out[vid] = Chunk(id=cid, doc_id=did, text=text, metadata=json.loads(meta))
        return out

    def _allowed(self, where: tuple[str, list[Any]], st: State) -> np.ndarray:
        fsql, fargs = where
        rows = st.db.execute(f"SELECT c.vid FROM chunks c WHERE {fsql}", fargs).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # -- LangChain and stats ---------------------------------------------------------------------
    def as_retriever(self, k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None, mmr: bool = False):
        """A ``langchain_core`` ``BaseRetriever`` over this knowledge base."""
        from indexes.langchain import KnowledgeBaseRetriever

        return KnowledgeBaseRetriever(kb=self, k=k, mode=mode, filters=filters, mmr=mmr)
