"""LangChain interop: the knowledge base as a ``langchain_core`` retriever, and document conversion.

    retriever = kb.as_retriever(k=4, mode="hybrid")
    docs = retriever.invoke("notice period")          # list[langchain_core.documents.Document]
    hybrid_doc = from_lc_document(docs[0])            # back to core.types.Document

Only ``langchain-core`` is needed (never the sunset ``langchain-community``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from core.types import Chunk, Document, Hit


def to_lc_document(item: Document | Chunk | Hit) -> LCDocument:
    """A LangChain document from a hybrid Document, Chunk or Hit (score and rank go into metadata)."""
    if isinstance(item, Hit):
        lc = to_lc_document(item.chunk)
        lc.metadata.update({"score": item.score, "rank": item.rank, "scores": dict(item.scores)})
        return lc
    if isinstance(item, Chunk):
        return LCDocument(page_content=item.text, id=item.id,
                          metadata={**item.metadata, "chunk_id": item.id, "doc_id": item.doc_id})
    if isinstance(item, Document):
        return LCDocument(page_content=item.text, id=item.id, metadata=dict(item.metadata))
    raise TypeError(f"cannot convert {type(item).__name__} to a LangChain document")


def from_lc_document(doc: LCDocument) -> Document:
    """A hybrid Document from a LangChain one: its ``id`` if set, else a stable content-derived id."""
    meta = {k: v for k, v in (doc.metadata or {}).items() if k not in ("score", "rank", "scores")}
    if doc.id:
        return Document(id=str(doc.id), text=doc.page_content, metadata=meta)
    return Document.create(doc.page_content, meta)


class KnowledgeBaseRetriever(BaseRetriever):
    """``BaseRetriever`` over a ``KnowledgeBase``; build it with ``kb.as_retriever(k=5, mode="hybrid")``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: Any
    k: int = 5
    mode: str = "hybrid"
    filters: dict[str, Any] | None = None
    mmr: bool = False

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        k = min(self.k, self.kb.stats()["chunks"]) or 1
        return [to_lc_document(h) for h in self.kb.search(query, k=k, filters=self.filters, mode=self.mode, mmr=self.mmr)]
