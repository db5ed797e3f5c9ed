"""An in-memory retriever for fast pipeline tests (the real one is indexes.kb.KnowledgeBase)."""

from __future__ import annotations

import numpy as np

from core.types import Chunk, Hit


class MemoryRetriever:
    """Cosine search over a handful of chunks with the given embedder; reports ``scores['dense']``
    like the real knowledge base so relevance thresholds apply the same way."""

    def __init__(self, texts: list[tuple[str, dict]], embedder):
        self.embedder = embedder
        self.chunks = [Chunk(id=f"c{i}", doc_id=f"d{i}", text=t, metadata=dict(md)) for i, (t, md) in enumerate(texts)]
        self.vecs = embedder.embed([c.text for c in self.chunks]) if self.chunks else np.zeros((0, embedder.dim))
        self.queries: list[str] = []

    def stats(self) -> dict:
        return {"chunks": len(self.chunks)}

    def search(self, query, k=5, *, filters=None, mode="hybrid"):
        self.queries.append(query)
        if not self.chunks:
            return []
        sims = self.vecs @ self.embedder.embed([query])[0]
        order = np.argsort(-sims)[:k]
        return [Hit(chunk=self.chunks[i], score=float(sims[i]), rank=r, scores={"dense": float(sims[i])})
                for r, i in enumerate(order)]
