"""The ``milvus`` vector backend against a real Milvus Lite (embedded; a ``.db`` path in ``tmp_path``).

The knowledge-base behaviour tests of ``test_kb.py`` and ``test_open_or_create.py`` that do not
depend on FAISS are imported below and run again here with every ``KnowledgeBase.create`` of this
module putting its vectors in Milvus (``_milvus_by_default``): sync, prune, delete, filters, every
search mode, MMR, search batches, readers seeing new generations, searches during syncs, the
LangChain retriever, wrong embedders, open_or_create. Not imported, because they are FAISS's own:
HNSW tombstones and IVF-PQ (Milvus has its own index types), rebuild (refused on Milvus for now,
tested below), and the corruption tests of FAISS files. The rest are Milvus's own: same scores as
FAISS, the collection kept in step through syncs and interrupted writes, and bad input.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("milvus_lite")
pytest.importorskip("pymilvus")

import indexes.kb as kb_module  # noqa: E402
from core.errors import ConfigError, CorruptKnowledgeBaseError, InputError, KnowledgeBaseError  # noqa: E402
from indexes import milvus  # noqa: E402
from indexes.backends import BACKENDS, BackendConfig, backend_settings  # noqa: E402
from indexes.config import IndexConfig  # noqa: E402
from indexes.embed import HashEmbedder  # noqa: E402
from indexes.kb import KnowledgeBase  # noqa: E402
from tests.indexes.conftest import make_docs  # noqa: E402

# The shared behaviour tests, run here on Milvus (see the module docstring).
from tests.indexes.test_kb import (  # noqa: E402,F401
    test_changed_document_from_same_source_replaces_the_old_one,
    test_create_refuses_an_existing_kb,
    test_each_mode_finds_the_relevant_document_with_descending_scores,
    test_filters_equality_in_and_date_ranges,
    test_hybrid_recovers_what_one_retriever_misses,
    test_langchain_retriever_and_document_conversion,
    test_mmr_diversifies,
    test_open_overrides_change_search_settings_only,
    test_opening_with_a_different_embedder_is_a_clear_error,
    test_prune_and_delete_remove_vectors_for_real,
    test_reopen_persists_and_readers_see_new_generations,
    test_search_batch_matches_single_searches,
    test_searches_in_threads_while_the_same_object_syncs,
    test_sync_counts_and_unchanged_resync_embeds_nothing,
    test_update_with_stable_id_reembeds_only_changed_chunks,
)
from tests.indexes.test_open_or_create import (  # noqa: E402,F401
    test_changed_stored_settings_are_one_line_naming_each,
    test_create_exist_ok_is_the_same_path,
    test_creates_when_missing_then_reuses_unchanged,
    test_search_time_settings_apply_and_none_opens_as_stored,
)

FAISS = BackendConfig("faiss")


@pytest.fixture(autouse=True)
def _milvus_by_default(monkeypatch):
    """``KnowledgeBase.create`` without an explicit backend uses Milvus Lite (a file in the KB directory)."""
    monkeypatch.setattr(kb_module, "backend_settings",
                        lambda cfg, explicit=None: explicit if explicit is not None else BackendConfig("milvus"))


@pytest.fixture
def mkb(kb):
    """The conftest ``kb`` (six documents, synced), on Milvus."""
    assert kb.stats()["backend"] == "milvus"
    return kb


def sources(hits):
    return [h.chunk.metadata["source"] for h in hits]


def in_step(kb: KnowledgeBase) -> bool:
    """The collection holds exactly the current generation's vectors."""
    s = kb.stats()
    return s["milvus_rows"] == s["chunks"] == s["vectors"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the registry -----------------------------------------------------------------------------------
def test_backends_are_a_registry_and_unknown_names_list_the_known():
    assert BACKENDS.names() == ["faiss", "milvus"]
    with pytest.raises(InputError, match="unknown vector backend 'qdrant'; known: faiss, milvus"):
        BackendConfig("qdrant")


def test_settings_come_from_the_index_config_or_an_explicit_backend_config():
    got = backend_settings(IndexConfig(embedder="hash", backend="milvus", milvus_collection="from_config"))
    assert got == BackendConfig("milvus", milvus_collection="from_config")
    assert backend_settings(IndexConfig(embedder="hash")) == BackendConfig()  # the default: FAISS
    assert backend_settings(None, FAISS) is FAISS


def test_backend_config_is_made_from_the_index_config_fields_not_declared_twice():
    declared = {f.name: f for f in dataclasses.fields(IndexConfig)}
    made = dataclasses.fields(BackendConfig)
    assert [f.name for f in made] == ["backend", "milvus_uri", "milvus_collection", "milvus_timeout",
                                      "milvus_consistency"]
    for f in made:
        assert (f.default, f.metadata["help"]) == (declared[f.name].default, declared[f.name].metadata["help"])


# -- the same answers as FAISS, and the collection in step --------------------------------------------
def test_dense_scores_and_ranks_match_the_faiss_backend(tmp_path, cfg, docs):
    queries = ["notice before ending the lease", "court fees appeal", "bake bread", "personal data requests"]
    out = {}
    for name in ("faiss", "milvus"):
        with KnowledgeBase.create(tmp_path / name, cfg, embedder=HashEmbedder(), backend=BackendConfig(name)) as kb:
            kb.sync(docs)
            assert kb.stats()["backend"] == name
            out[name] = [kb.search(q, k=5, mode=m) for q in queries for m in ("dense", "hybrid")]
    for (f_dense, f_hybrid), (m_dense, m_hybrid) in zip(zip(*[iter(out["faiss"])] * 2), zip(*[iter(out["milvus"])] * 2)):
        assert np.allclose([h.score for h in f_dense], [h.score for h in m_dense], atol=1e-5)
        # the same ranking; chunks with exactly equal scores may come in either order
        assert tied(f_dense) == tied(m_dense)
        assert {h.chunk.id for h in f_hybrid} == {h.chunk.id for h in m_hybrid}


def tied(hits) -> list[tuple[float, frozenset[str]]]:
    """The ranking as groups of chunk ids per (rounded) score, best first."""
    groups: dict[float, set[str]] = {}
    for h in hits:
        groups.setdefault(round(h.score, 5), set()).add(h.chunk.id)
    return [(score, frozenset(ids)) for score, ids in groups.items()]


def test_hnsw_knowledge_base_on_milvus(tmp_path, cfg, docs):
    with KnowledgeBase.create(tmp_path / "kb", dataclasses.replace(cfg, index="hnsw"), embedder=HashEmbedder()) as kb:
        kb.sync(docs)
        kb.sync(make_docs("2"))
        assert in_step(kb) and kb.stats()["index"] == "hnsw"
        assert kb.search("court fees civil claim appeal", k=3, mode="dense")[0].chunk.metadata["source"] == "court-fees.csv"
        index = kb._handle.call("describe the index", "describe_index", kb.stats()["milvus_collection"], "vector")
        assert index["index_type"] == "HNSW" and index["metric_type"] == "IP"


def test_collection_stays_in_step_through_updates_prune_and_delete(mkb, docs):
    assert in_step(mkb)
    mkb.sync(make_docs("2"))  # every document edited: old vectors deleted, new ones added
    assert in_step(mkb)
    mkb.sync(make_docs("2")[:3], prune=True)
    assert in_step(mkb) and mkb.stats()["documents"] == 3
    assert mkb.delete([make_docs("2")[0].id]) == 1
    assert in_step(mkb) and mkb.stats()["documents"] == 2
    assert not (mkb.path / milvus.JOURNAL).exists()


def test_manifest_records_the_collection_and_a_lite_path_relative_to_the_kb(mkb):
    entry = mkb.manifest["backend"]
    assert entry["name"] == "milvus" and entry["uri"] == "milvus.db" and entry["consistency"] == "Strong"
    assert entry["collection"] == milvus.default_collection(mkb.path)
    assert mkb.stats()["milvus_uri"] == str((mkb.path / "milvus.db").resolve())


def test_filters_wider_than_an_id_expression_filter_the_dense_hits_instead(mkb, monkeypatch):
    want = [sources(mkb.search("data requests", k=4, mode="dense", filters=f))
            for f in ({"source": ["privacy.html", "lease.md"]}, {"page": 2})]
    monkeypatch.setattr(milvus, "MAX_FILTER_IDS", 1)
    got = [sources(mkb.search("data requests", k=4, mode="dense", filters=f))
           for f in ({"source": ["privacy.html", "lease.md"]}, {"page": 2})]
    assert got == want and set(got[0]) == {"privacy.html", "lease.md"}


def test_a_write_interrupted_before_the_manifest_swap_is_cleaned_up_by_the_next(mkb, docs, monkeypatch):
    import indexes.store as store

    def crash(*a, **kw):
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as m:
        m.setattr(store, "write_manifest", crash)
        with pytest.raises(OSError, match="simulated"):
            mkb.sync(make_docs("2"))
    s = mkb.stats()
    assert s["milvus_rows"] > s["chunks"]  # the new vectors went in, no generation names them
    assert (mkb.path / milvus.JOURNAL).exists()
    # readers still answer from their generation only
    with KnowledgeBase.open(mkb.path, embedder=HashEmbedder()) as reader:
        hits = reader.search("version of the lease notice", k=6)
        assert len(hits) == 6 and not any("Version 2" in h.chunk.text for h in hits)
    assert mkb.sync(docs).changed == 0  # nothing to write, but the writer's turn cleans up
    assert in_step(mkb) and not (mkb.path / milvus.JOURNAL).exists()


def test_a_released_collection_is_loaded_when_opened(mkb):
    """A collection another process created, or a restarted server, starts released (unsearchable)."""
    path, name = mkb.path, mkb.stats()["milvus_collection"]
    want = sources(mkb.search("notice before ending the lease", k=3, mode="dense"))
    mkb._handle.call("release", "release_collection", name)
    mkb.close()
    with KnowledgeBase.open(path, embedder=HashEmbedder()) as again:
        assert sources(again.search("notice before ending the lease", k=3, mode="dense")) == want


def test_a_create_that_fails_leaves_no_collection_behind(tmp_path, cfg, monkeypatch):
    import indexes.store as store

    def crash(*a, **kw):
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as m:
        m.setattr(store, "write_manifest", crash)
        with pytest.raises(OSError, match="simulated"):
            KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder())
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:  # the same collection name
        assert kb.generation == 0 and kb.stats()["milvus_rows"] == 0


# -- filters in Milvus --------------------------------------------------------------------------------
FILTERS = [
    {"source": "privacy.html"},
    {"source": ["privacy.html", "lease.md", "missing.pdf"]},
    {"page": 2},
    {"page": {"$ne": 2}},
    {"modified": {"gte": "2022-01-01", "lt": "2024-06-30"}},
    {"modified": {"gt": __import__("datetime").date(2023, 1, 1)}, "page": {"in": [1, 2]}},
    {"source": {"ne": "lease.md"}, "mime": "text/plain"},
    {"source": "missing.pdf"},
]


def test_filters_translate_to_milvus_expressions_or_to_none():
    from indexes.filters import filter_milvus

    fields = {"source", "page", "modified", "flag"}
    assert filter_milvus({"source": ["a.md", "b.md"], "page": {"$gte": 2}}, fields) == \
        '(metadata["source"] == "a.md" or metadata["source"] == "b.md") and metadata["page"] >= 2'
    assert filter_milvus({"flag": True, "source": 'say "hi" \\ é'}, fields) == \
        'metadata["flag"] == 1 and metadata["source"] == "say \\"hi\\" \\\\ é"'
    for untranslatable in ({"source": None}, {"source": "tab\there"}, {"page": 2 ** 64},
                           {"page": list(range(1000))}):
        assert filter_milvus(untranslatable, fields) is None
    with pytest.raises(InputError, match="unknown filter field 'nope'"):  # the same checks as filter_sql
        filter_milvus({"nope": 1}, fields)


def _dense_hits(kb, filters):
    return [(h.chunk.id, round(h.score, 5)) for h in kb.search("notice data fees policy", k=6, mode="dense",
                                                               filters=filters)]


def test_filters_run_in_milvus_and_agree_with_sqlite_and_faiss(mkb, tmp_path, cfg, docs, monkeypatch):
    assert mkb.stats()["milvus_filters"].startswith("in Milvus")
    with KnowledgeBase.create(tmp_path / "faiss", cfg, embedder=HashEmbedder(), backend=FAISS) as fkb:
        fkb.sync(docs)
        want = [_dense_hits(fkb, f) for f in FILTERS]
    sent = []
    real_search = milvus.MilvusVectors.search
    monkeypatch.setattr(milvus.MilvusVectors, "search",
                        lambda self, *a, **kw: sent.append(kw.get("expr")) or real_search(self, *a, **kw))
    native = [_dense_hits(mkb, f) for f in FILTERS]
    assert all(e and "metadata[" in e for e in sent)  # every one ran as a metadata expression
    monkeypatch.setattr(milvus.MilvusVectors, "filter_expr", lambda self, filters, fields: None)
    sent.clear()
    id_lists = [_dense_hits(mkb, f) for f in FILTERS]
    assert not any(sent)  # the id-list fallback
    assert [[c for c, _ in h] for h in native] == [[c for c, _ in h] for h in id_lists] == \
        [[c for c, _ in h] for h in want]
    assert all(np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5) for a, b in zip(native, want))


def test_metadata_only_changes_reach_milvus_and_an_interrupted_one_is_undone(mkb, docs, monkeypatch):
    import indexes.store as store
    from core.types import Document

    moved = [Document(id=d.id, text=d.text, metadata={**d.metadata, "page": 7}) for d in docs[:2]]
    with monkeypatch.context() as m:  # a write that re-tags kept chunks, killed before the manifest swap
        m.setattr(store, "write_manifest", lambda *a, **kw: (_ for _ in ()).throw(OSError("simulated")))
        with pytest.raises(OSError, match="simulated"):
            mkb.sync(moved)
    assert mkb.sync([]).changed == 0  # the next writer's turn puts this generation's metadata back
    assert {h.chunk.doc_id for h in mkb.search("lease fees", k=6, mode="dense", filters={"page": 7})} == set()
    assert len(mkb.search("lease", k=6, mode="dense", filters={"page": {"in": [1, 2]}})) == 6
    report = mkb.sync(moved)
    assert report.chunks_embedded == 0  # same texts: the vectors are kept, only the metadata changed
    got = mkb.search("lease fees", k=6, mode="dense", filters={"page": 7})
    assert {h.chunk.doc_id for h in got} == {d.id for d in docs[:2]}
    assert mkb.stats()["milvus_filters"].startswith("in Milvus") and in_step(mkb)


def test_a_collection_made_before_the_metadata_field_still_opens_syncs_and_filters(tmp_path, cfg, docs, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(milvus, "WITH_METADATA", False)  # the collection layout of the earlier code: id, vector
        KnowledgeBase.create(tmp_path / "old", cfg, embedder=HashEmbedder()).close()
    with KnowledgeBase.create(tmp_path / "faiss", cfg, embedder=HashEmbedder(), backend=FAISS) as fkb:
        fkb.sync(docs)
        fkb.sync(make_docs("2")[:3])
        want = [_dense_hits(fkb, f) for f in FILTERS]
    with KnowledgeBase.open(tmp_path / "old", embedder=HashEmbedder()) as old:
        old.sync(docs)
        old.sync(make_docs("2")[:3])
        assert old.stats()["milvus_filters"].startswith("id lists")
        fields = {f["name"] for f in old._handle.call("describe", "describe_collection", old._handle.collection)["fields"]}
        assert fields == {"id", "vector"}
        assert [[c for c, _ in _dense_hits(old, f)] for f in FILTERS] == [[c for c, _ in h] for h in want]
        assert in_step(old)


# -- bad input ---------------------------------------------------------------------------------------
def test_an_unreachable_milvus_is_a_one_line_error(tmp_path, cfg):
    bc = BackendConfig("milvus", milvus_uri=f"http://127.0.0.1:{free_port()}", milvus_timeout=2)
    with pytest.raises(KnowledgeBaseError) as e:
        KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder(), backend=bc)
    assert "cannot reach Milvus at http://127.0.0.1:" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.timeout(120)
def test_a_server_that_never_answers_times_out_with_an_error(tmp_path, cfg):
    silent = socket.socket()  # accepts TCP connections (kernel backlog) and never speaks gRPC
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        bc = BackendConfig("milvus", milvus_uri=f"http://127.0.0.1:{silent.getsockname()[1]}", milvus_timeout=1)
        with pytest.raises(KnowledgeBaseError, match=r"cannot reach Milvus at .* within 1s"):
            KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder(), backend=bc)
    finally:
        silent.close()


def test_a_collection_built_with_another_embedder_is_refused(tmp_path, cfg, docs):
    lite = str(tmp_path / "shared.db")
    shared = BackendConfig("milvus", milvus_uri=lite, milvus_collection="shared")
    with KnowledgeBase.create(tmp_path / "a", cfg, embedder=HashEmbedder(), backend=shared) as a:
        a.sync(docs)
    small = dataclasses.replace(cfg, embedder="hash:32")
    with pytest.raises(KnowledgeBaseError) as e:
        KnowledgeBase.create(tmp_path / "b", small, embedder=HashEmbedder(32), backend=shared)
    msg = str(e.value)
    assert "\n" not in msg
    assert "collection shared" in msg and "dim 64" in msg and "dim 32" in msg
    # the same embedder is refused too: those vectors belong to another knowledge base
    with pytest.raises(KnowledgeBaseError, match="already holds .* vectors of another knowledge base"):
        KnowledgeBase.create(tmp_path / "c", cfg, embedder=HashEmbedder(), backend=shared)
    # a manifest pointed at a collection of another embedder is refused when opened
    other = BackendConfig("milvus", milvus_uri=lite, milvus_collection="small")
    KnowledgeBase.create(tmp_path / "d", small, embedder=HashEmbedder(32), backend=other).close()
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    man["backend"]["collection"] = "small"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(KnowledgeBaseError, match="collection small .* built with embedder hash-embedder .*dim 32"):
        KnowledgeBase.open(tmp_path / "a", embedder=HashEmbedder())


def test_lost_vectors_and_a_missing_collection_are_corruption(mkb):
    path, name = mkb.path, mkb.stats()["milvus_collection"]
    some = [int(r[0]) for r in mkb._state.db.execute("SELECT vid FROM chunks LIMIT 2")]
    milvus.delete(mkb._handle, some)
    mkb.close()
    with pytest.raises(CorruptKnowledgeBaseError, match="holds .* vectors but generation .* chunks.*rebuild"):
        KnowledgeBase.open(path)
    handle = milvus.MilvusHandle(str((path / "milvus.db").resolve()), name, 10, "Strong")
    handle.client.drop_collection(name)
    handle.close()
    with pytest.raises(CorruptKnowledgeBaseError, match=f"collection {name} is missing"):
        KnowledgeBase.open(path)


@pytest.mark.parametrize("settings,msg", [
    (dict(milvus_uri="kb.sqlite"), "a Milvus Lite file ending in .db"),
    (dict(milvus_collection="1-bad name"), "milvus_collection must be letters"),
])
def test_bad_milvus_settings_are_one_line_config_errors(tmp_path, cfg, settings, msg):
    with pytest.raises(ConfigError, match=msg):
        KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder(), backend=BackendConfig("milvus", **settings))


def test_bad_backend_settings_are_refused_when_made():
    with pytest.raises(ConfigError, match="milvus_consistency must be one of"):
        BackendConfig("milvus", milvus_consistency="strong-ish")
    with pytest.raises(ConfigError, match="milvus_timeout must be > 0"):
        BackendConfig("milvus", milvus_timeout=0)


def test_ivfpq_is_refused_on_milvus(tmp_path, cfg):
    with pytest.raises(ConfigError, match="index=ivfpq is not available with backend milvus"):
        KnowledgeBase.create(tmp_path / "kb", dataclasses.replace(cfg, index="ivfpq"), embedder=HashEmbedder())


def test_another_backend_for_an_existing_kb_is_a_config_error(mkb, cfg):
    with pytest.raises(ConfigError, match="keeps its vectors in backend milvus, not faiss"):
        KnowledgeBase.open_or_create(mkb.path, cfg, embedder=HashEmbedder(), backend=FAISS)


def test_rebuild_is_refused_with_what_to_do_instead(mkb):
    with pytest.raises(KnowledgeBaseError, match="rebuild is not available .* backend milvus"):
        KnowledgeBase.rebuild(mkb.path, embedder=HashEmbedder())
    assert in_step(mkb)


@pytest.mark.slow
def test_a_second_process_on_a_lite_file_gets_a_one_line_error(mkb):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from indexes.kb import KnowledgeBase
        try:
            KnowledgeBase.open({str(mkb.path)!r})
        except Exception as e:
            print(type(e).__name__, e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("KnowledgeBaseError cannot open the Milvus Lite file") and "one process at a time" in last
