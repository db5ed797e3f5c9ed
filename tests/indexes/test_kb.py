"""KnowledgeBase behaviour with the hash embedder (fast). The real MiniLM runs in test_real_embedder.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import KnowledgeBaseError
from core.types import Document
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from tests.indexes.conftest import TOPICS, make_docs


def sources(hits):
    return [h.chunk.metadata["source"] for h in hits]


def test_sync_counts_and_unchanged_resync_embeds_nothing(kb, docs):
    s = kb.stats()
    assert s["documents"] == len(docs) and s["chunks"] == s["vectors"] >= len(docs)
    gen = kb.generation
    rep = kb.sync(docs)
    assert (rep.added, rep.updated, rep.unchanged, rep.deleted, rep.chunks_embedded) == (0, 0, len(docs), 0, 0)
    assert "nothing to do" in str(rep) and "embedded 0 chunks" in str(rep)
    assert kb.generation == gen  # no new generation written


def test_changed_document_from_same_source_replaces_the_old_one(kb, docs):
    edited = Document.create("The tenant must give six months notice. Pets are not allowed.",
                             dict(docs[0].metadata))
    assert edited.id != docs[0].id  # content-derived ids change with the text
    rep = kb.sync([edited, *docs[1:]])
    assert (rep.added, rep.updated, rep.unchanged) == (0, 1, len(docs) - 1)
    assert rep.chunks_embedded >= 1
    hits = kb.search("how many months notice", k=3, mode="bm25")
    assert "six months" in hits[0].chunk.text
    assert all("three months" not in h.chunk.text for h in kb.search("three months notice", k=5, mode="bm25"))
    assert kb.stats()["documents"] == len(docs)


def test_update_with_stable_id_reembeds_only_changed_chunks(tmp_path):
    cfg = IndexConfig(embedder="hash", chunk_size=12, chunk_overlap=0)
    long = " ".join(f"Part {i} covers topic number {i}." for i in range(12))
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        first = kb.sync([Document("d1", long, {"source": "a"})])
        rep = kb.sync([Document("d1", long.replace("topic number 11.", "topic eleven."), {"source": "a"})])
        assert rep.updated == 1 and 0 < rep.chunks_embedded < first.chunks_embedded
        assert rep.chunks_kept > 0
        assert kb.stats()["chunks"] == kb.stats()["vectors"]


def test_prune_and_delete_remove_vectors_for_real(kb, docs):
    rep = kb.sync(docs[:4], prune=True)
    assert rep.deleted == len(docs) - 4
    assert "recipes.txt" not in sources(kb.search("bake bread dough", k=3, mode="dense"))
    assert kb.delete([docs[0].id, "no-such-id"]) == 1
    s = kb.stats()
    assert s["documents"] == 3 and s["vectors"] == s["chunks"]
    assert "lease.md" not in sources(kb.search("tenant notice lease", k=3))


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_finds_the_relevant_document_with_descending_scores(kb, mode):
    hits = kb.search("court fees for filing a civil claim appeal", k=4, mode=mode)
    assert hits[0].chunk.metadata["source"] == "court-fees.csv"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    if mode == "hybrid":
        assert {"dense", "bm25", "rrf"} <= set(hits[0].scores)


def test_hybrid_recovers_what_one_retriever_misses(kb):
    # "220" is an exact token only BM25 can match; the hash embedder barely sees it among other words
    bm = kb.search("220 degrees", k=1, mode="bm25")
    hy = kb.search("220 degrees", k=3, mode="hybrid")
    assert bm[0].chunk.metadata["source"] == "recipes.txt"
    assert "recipes.txt" in sources(hy)


def test_filters_equality_in_and_date_ranges(kb):
    assert set(sources(kb.search("data", k=6, filters={"source": "privacy.html"}))) == {"privacy.html"}
    got = set(sources(kb.search("data", k=6, filters={"source": ["privacy.html", "lease.md"]})))
    assert got == {"privacy.html", "lease.md"}
    recent = kb.search("policy", k=6, filters={"modified": {"gte": "2024-01-01", "lt": "2025-01-01"}})
    assert set(sources(recent)) == {"court-fees.csv", "employment.docx"}
    import datetime as dt

    assert set(sources(kb.search("policy", k=6, filters={"modified": {"gt": dt.date(2025, 1, 1)}}))) == {"whistleblowing.md"}
    assert kb.search("policy", k=3, filters={"source": "missing.pdf"}) == []
    # BM25 applies filters in SQL; porter stemming makes "fees" match "fee" in lease.md too
    assert sources(kb.search("fees", k=6, mode="bm25", filters={"page": 2})) == ["court-fees.csv"]
    assert sources(kb.search("fees", k=6, mode="bm25", filters={"page": 1})) == ["lease.md"]


def test_mmr_diversifies(tmp_path):
    docs = [Document.create("Rent is due on the first of the month, rent rent.", {"source": f"copy{i}"}) for i in range(4)]
    docs.append(Document.create("Rent can be paid by bank transfer or cheque.", {"source": "other"}))
    with KnowledgeBase.create(tmp_path / "kb", IndexConfig(embedder="hash", mmr_lambda=0.3), embedder=HashEmbedder()) as kb:
        kb.sync(docs)
        plain = sources(kb.search("rent due", k=2, mode="dense"))
        diverse = sources(kb.search("rent due", k=2, mode="dense", mmr=True))
        assert "other" not in plain and "other" in diverse


def test_search_batch_matches_single_searches(kb):
    qs = ["notice before ending the lease", "holiday days", "ethics hotline"]
    batch = kb.search_batch(qs, k=3)
    for q, hits in zip(qs, batch):
        single = kb.search(q, k=3)
        assert [h.chunk.id for h in hits] == [h.chunk.id for h in single]
        assert np.allclose([h.score for h in hits], [h.score for h in single])


def test_reopen_persists_and_readers_see_new_generations(tmp_path, cfg, docs):
    path = tmp_path / "kb"
    with KnowledgeBase.create(path, cfg, embedder=HashEmbedder()) as writer:
        writer.sync(docs[:2])
        reader = KnowledgeBase.open(path, embedder=HashEmbedder(), readonly=True)
        assert reader.stats()["documents"] == 2
        writer.sync(docs)
        # the reader notices the new manifest on its next search
        assert "recipes.txt" in sources(reader.search("bake the bread", k=2))
        assert reader.stats()["documents"] == len(docs)
        with pytest.raises(KnowledgeBaseError, match="read-only"):
            reader.sync(docs)
        reader.close()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["embedder"]["name"] == "hash-embedder" and manifest["dim"] == 64
    assert manifest["metric"] == "inner_product" and manifest["normalized"] is True
    assert manifest["chunker"]["size"] == cfg.chunk_size and manifest["format_version"] == 1
    assert json.loads((path / "config.json").read_text())["chunk_size"] == cfg.chunk_size


def test_opening_with_a_different_embedder_is_a_clear_error(kb):
    kb.close()
    with pytest.raises(KnowledgeBaseError, match="built with embedder hash-embedder.*dim 64.*dim 32"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder(32))


def test_create_refuses_an_existing_kb(kb, cfg):
    with pytest.raises(KnowledgeBaseError, match="already exists"):
        KnowledgeBase.create(kb.path, cfg, embedder=HashEmbedder())


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_search_update_and_delete(tmp_path, kind):
    cfg = IndexConfig(embedder="hash", index=kind, chunk_size=16, chunk_overlap=0, ivf_nlist=4, ivf_nprobe=4,
                      ivf_m=8, ivf_nbits=4, hnsw_max_tombstones=0.3)
    docs = [Document.create(f"Clause {i}: the {w} must be reported within {i} days.", {"source": f"s{i}"})
            for i, w in enumerate(["fire", "flood", "theft", "damage", "loss", "injury", "delay", "defect"] * 6)]
    with KnowledgeBase.create(tmp_path / kind, cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs)
        assert kb.search("theft must be reported", k=3, mode="dense")[0].chunk.text.count("theft") == 1
        kb.sync(docs[:30], prune=True)
        s = kb.stats()
        assert s["documents"] == 30 and s["vectors"] == s["chunks"] + s["tombstones"]
        found = {h.chunk.metadata["source"] for h in kb.search("reported within days", k=30, mode="dense")}
        assert found <= {f"s{i}" for i in range(30)} and len(found) == 30
        if kind == "hnsw":  # 18 of 48 deleted > 30 %: the graph was rebuilt without tombstones
            assert s["tombstones"] == 0 and s["vectors"] == 30
    with KnowledgeBase.open(tmp_path / kind, embedder=HashEmbedder()) as again:
        assert again.stats()["chunks"] == 30


def test_hnsw_tombstones_are_excluded_and_persisted(tmp_path):
    cfg = IndexConfig(embedder="hash", index="hnsw", hnsw_max_tombstones=0.5)
    docs = make_docs()
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs)
        kb.delete([docs[-1].id])  # recipes.txt
        assert kb.stats()["tombstones"] >= 1
        assert "recipes.txt" not in sources(kb.search("bake bread dough", k=5, mode="dense"))
    with KnowledgeBase.open(tmp_path / "kb", embedder=HashEmbedder()) as kb:
        assert kb.stats()["tombstones"] >= 1
        assert "recipes.txt" not in sources(kb.search("bake bread dough", k=5, mode="dense"))


def test_rebuild_from_stored_documents_with_new_settings(kb, docs):
    kb.close()
    new, rep = KnowledgeBase.rebuild(kb.path, cfg=IndexConfig(embedder="hash", index="hnsw", chunk_size=16,
                                                              chunk_overlap=0), embedder=HashEmbedder())
    with new:
        assert rep.added == len(docs)
        assert new.stats()["index"] == "hnsw" and new.stats()["documents"] == len(docs)
        assert new.search("ethics hotline", k=1)[0].chunk.metadata["source"] == "whistleblowing.md"


def test_langchain_retriever_and_document_conversion(kb):
    from langchain_core.retrievers import BaseRetriever

    from indexes.langchain import from_lc_document, to_lc_document

    r = kb.as_retriever(k=2, mode="hybrid")
    assert isinstance(r, BaseRetriever)
    got = r.invoke("paid holiday per year")
    assert got[0].metadata["source"] == "employment.docx" and got[0].metadata["rank"] == 1
    doc = Document.create("hello", {"source": "x"})
    back = from_lc_document(to_lc_document(doc))
    assert back == doc
    assert set(TOPICS) >= {d.metadata["source"] for d in got}


def test_searches_in_threads_while_the_same_object_syncs(tmp_path):
    import threading

    cfg = IndexConfig(embedder="hash", chunk_size=200, chunk_overlap=0)  # one chunk per document
    errors: list[BaseException] = []
    seen: set[int] = set()
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(make_docs("1"))
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    hits = kb.search("version of the lease notice", k=6)
                    versions = {h.chunk.text.rsplit("Version ", 1)[-1] for h in hits}
                    assert len(versions) == 1, versions  # never a mix of two generations
                    seen.add(len(hits))
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for v in range(2, 12):
            kb.sync(make_docs(str(v)), prune=True)
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert seen == {6}


def test_open_overrides_change_search_settings_only(kb):
    from core.errors import ConfigError

    kb.close()
    with KnowledgeBase.open(kb.path, embedder=HashEmbedder(), overrides={"rrf_k": 5, "chunk_size": 999}) as k2:
        assert k2.cfg.rrf_k == 5 and k2.cfg.chunk_size == 24  # stored settings win
    with pytest.raises(ConfigError, match="unknown IndexConfig setting 'rrf'"):
        KnowledgeBase.open(kb.path, embedder=HashEmbedder(), overrides={"rrf": 5})
