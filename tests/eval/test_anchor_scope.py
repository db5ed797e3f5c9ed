"""The LangChain anchor's scoped retriever: a question filtered to one document gets that document's
chunks even when 20+ other documents are nearer (LangChain's FAISS filters after ``fetch_k`` hits)."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_community")

from hybrid.eval.baseline import build_chain  # noqa: E402
from core.types import Document  # noqa: E402


@pytest.mark.slow  # builds a FAISS store with the real MiniLM embedder
def test_a_scoped_question_gets_its_own_documents_chunks():
    # 30 policies that all answer the question well, and one that mentions it only in passing: unscoped,
    # the passing mention is far from the top 20; scoped to it, the chain must still retrieve it
    near = [Document.create(f"Policy {i}: we keep your personal data for {i + 2} years after you close "
                            f"your account, then delete your personal data.", {"source": f"p{i}.txt"})
            for i in range(30)]
    far = Document.create("Our bakery sells bread and cakes. Opening hours are nine to five. "
                          "Records are kept.", {"source": "bakery.txt"})
    chain_for = build_chain([*near, far], k=3)
    q = "How long do you keep my personal data after I close my account?"
    unscoped = chain_for(None).invoke(q)["docs"]
    assert unscoped and all(d.metadata["source"] != "bakery.txt" for d in unscoped)
    scoped = chain_for({"source": "bakery.txt"}).invoke(q)["docs"]
    assert [d.metadata["source"] for d in scoped] == ["bakery.txt"]
    assert "bakery" in scoped[0].page_content
