"""IVF-PQ with a refine stage (``ivf_refine`` = flat | sq8, ``ivf_k_factor``): recall, persistence, deletes, config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core.config import load_config
from core.errors import ConfigError
from core.types import Document
from indexes.config import IndexConfig, stored_setting_diff
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from indexes.vectors import VectorIndex

DIM = 32
# Every list probed (nprobe = nlist), so whatever the unrefined index misses is lost to PQ alone.
SMALL = dict(ivf_nlist=16, ivf_nprobe=16, ivf_m=8, ivf_nbits=6, ivf_k_factor=8)


def unit(rows: int, seed: int) -> np.ndarray:
    """Low-rank unit vectors (an 8-d latent plus noise), where PQ's coarse scores confuse close neighbours."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, DIM)).astype(np.float32)
    x = rng.standard_normal((rows, 8)).astype(np.float32) @ basis + 0.1 * rng.standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    vecs = unit(5000, seed=1)
    queries = unit(5040, seed=1)[5000:]  # same latent basis (same seed), vectors not in the index
    ids = np.arange(len(vecs), dtype=np.int64) * 1_000_003 + 17  # sparse, like hashed chunk ids
    exact = ids[np.argsort(-(queries @ vecs.T), axis=1, kind="stable")[:, :10]]
    return vecs, queries, ids, exact


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(e.tolist())) / e.shape[0] for f, e in zip(found, exact)]))


@pytest.fixture(scope="module")
def trained(data):
    """One index per refine kind, built once for the module (tests that change one work on a copy)."""
    vecs, _, ids, _ = data
    out = {}
    for refine in ("none", "flat", "sq8"):
        out[refine] = VectorIndex.new("ivfpq", DIM, IndexConfig(ivf_refine=refine, **SMALL))
        out[refine].add(ids, vecs)
    return out


@pytest.mark.parametrize("refine", ["flat", "sq8"])
def test_refined_recall_is_higher_than_pq_alone(data, trained, refine):
    _, queries, _, exact = data
    plain = recall(trained["none"].search(queries, 10)[1], exact)
    refined_index = trained[refine]
    assert refined_index.refine == refine
    refined = recall(refined_index.search(queries, 10)[1], exact)
    assert refined > plain


def test_a_larger_k_factor_finds_at_least_as_much(data, trained):
    """More candidates re-ranked exactly can only add true neighbours (the PQ top list is a prefix)."""
    _, queries, _, exact = data
    vi = trained["flat"].copy()
    vi.cfg = dataclasses.replace(vi.cfg, ivf_k_factor=1)
    narrow = recall(vi.search(queries, 10)[1], exact)
    vi.cfg = dataclasses.replace(vi.cfg, ivf_k_factor=16)
    wide = recall(vi.search(queries, 10)[1], exact)
    assert wide >= narrow and wide > recall(trained["none"].search(queries, 10)[1], exact)


def test_refined_scores_are_the_stored_vectors_inner_products(data, trained):
    vecs, queries, ids, _ = data
    vi = trained["flat"]
    scores, found = vi.search(queries[:5], 10)
    by_id = dict(zip(ids.tolist(), range(len(ids))))
    for q, srow, irow in zip(queries[:5], scores, found):
        np.testing.assert_allclose(srow, [float(q @ vecs[by_id[i]]) for i in irow.tolist()], rtol=1e-5, atol=1e-6)
        assert list(srow) == sorted(srow, reverse=True)


@pytest.mark.parametrize("refine", ["none", "flat", "sq8"])
def test_save_and_load_round_trip(tmp_path, data, trained, refine):
    _, queries, ids, _ = data
    vi = trained[refine]
    vi.save(tmp_path / "v.faiss")
    again = VectorIndex.load(tmp_path / "v.faiss", "ivfpq", vi.cfg)
    assert again.refine == refine and again.ntotal == vi.ntotal == len(ids) and again.is_trained
    for a, b in zip(vi.search(queries, 10), again.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(vi.reconstruct(ids[:20]), again.reconstruct(ids[:20]))


def test_an_index_written_before_refinement_loads_unchanged(tmp_path, data, trained):
    """A plain IVF-PQ file opened with a config asking for refinement still searches as it was written."""
    _, queries, _, _ = data
    old = trained["none"]
    old.save(tmp_path / "old.faiss")
    cfg = IndexConfig(**{**SMALL, "ivf_refine": "flat"})
    loaded = VectorIndex.load(tmp_path / "old.faiss", "ivfpq", cfg)
    assert loaded.refine == "none"
    for a, b in zip(old.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)


def test_refine_reconstructs_stored_vectors_not_pq_codes(data, trained):
    vecs, _, ids, _ = data
    pq_err = np.abs(trained["none"].reconstruct(ids[:50]) - vecs[:50]).max()
    assert np.abs(trained["flat"].reconstruct(ids[:50]) - vecs[:50]).max() == 0
    assert np.abs(trained["sq8"].reconstruct(ids[:50]) - vecs[:50]).max() < pq_err


@pytest.mark.parametrize("refine", ["flat", "sq8"])
def test_deletes_reach_both_stages_and_copies_are_independent(data, trained, refine):
    vecs, queries, ids, _ = data
    vi = trained[refine].copy()
    twin = vi.copy()
    gone = ids[::3]
    vi.remove(gone)
    assert vi.ntotal == len(ids) - len(gone) and twin.ntotal == len(ids)
    base, store = vi._refined()
    assert base.ntotal == store.ntotal == vi.ntotal
    _, found = vi.search(queries, 10)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    # the removed ids are still in the copy taken before
    _, found_twin = twin.search(vecs[:3], 1)
    assert found_twin[:, 0].tolist() == ids[:3].tolist()
    # a large allowed set (> 4,096 ids and > 5 %) goes through FAISS's IDSelector, then the refine stage
    allowed = np.setdiff1d(ids, ids[:500])
    _, found = twin.search(queries, 10, allowed=allowed)
    assert set(found.ravel().tolist()) <= set(allowed.tolist())


def test_a_refined_knowledge_base_syncs_deletes_and_reopens(tmp_path):
    cfg = IndexConfig(embedder="hash", index="ivfpq", chunk_size=16, chunk_overlap=0, ivf_nlist=4, ivf_nprobe=4,
                      ivf_m=8, ivf_nbits=4, ivf_refine="sq8", ivf_k_factor=4)
    docs = [Document.create(f"Clause {i}: the {w} must be reported within {i} days.", {"source": f"s{i}"})
            for i, w in enumerate(["fire", "flood", "theft", "damage", "loss", "injury", "delay", "defect"] * 6)]
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs)
        kb.sync(docs[:30], prune=True)
        assert kb.stats()["vectors"] == kb.stats()["chunks"]
        found = {h.chunk.metadata["source"] for h in kb.search("reported within days", k=30, mode="dense")}
        assert found == {f"s{i}" for i in range(30)}
    with KnowledgeBase.open(tmp_path / "kb", embedder=HashEmbedder(), overrides={"ivf_k_factor": 2}) as again:
        assert again.cfg.ivf_k_factor == 2 and again.cfg.ivf_refine == "sq8"
        assert again.search("theft must be reported", k=1, mode="dense")[0].chunk.text.count("theft") == 1


# -- config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, -3])
def test_k_factor_below_one_is_refused(value):
    with pytest.raises(ValueError, match=rf"^ivf_k_factor must be an integer >= 1, got {value}$"):
        IndexConfig(ivf_k_factor=value)


def test_k_factor_that_is_not_an_integer_is_refused():
    with pytest.raises(ValueError, match=r"^ivf_k_factor must be an integer >= 1, got 2.5$"):
        IndexConfig(ivf_k_factor=2.5)


def test_unknown_refine_kind_is_refused():
    with pytest.raises(ValueError, match=r"^ivf_refine must be one of none, flat, sq8, got 'pq'$"):
        IndexConfig(ivf_refine="pq")


@pytest.mark.parametrize("item,message", [
    ("ivf_refine=opq", r"ivf_refine must be one of \['none', 'flat', 'sq8'\], got 'opq'"),
    ("ivf_k_factor=0", r"ivf_k_factor must be an integer >= 1, got 0"),
    ("ivf_k_factor=many", r"ivf_k_factor must be an integer, got 'many'"),
])
def test_bad_refine_settings_from_a_config_file_are_one_line_errors(tmp_path: Path, item, message):
    f = tmp_path / "index.yaml"
    f.write_text("index: ivfpq\n")
    with pytest.raises(ConfigError, match=message) as e:
        load_config(IndexConfig, f, [item])
    assert "\n" not in str(e.value)


def test_stored_refine_setting_is_compared_for_ivfpq_only():
    cfg = IndexConfig(index="ivfpq", ivf_refine="flat")
    # a manifest written before refinement existed holds no ivf_refine: its IVF-PQ has none
    legacy = {k: v for k, v in dataclasses.asdict(IndexConfig(index="ivfpq")).items() if k != "ivf_refine"}
    assert stored_setting_diff(legacy, cfg) == ["ivf_refine: stored 'none', asked 'flat'"]
    assert stored_setting_diff(legacy, dataclasses.replace(cfg, ivf_refine="none")) == []
    assert stored_setting_diff({**legacy, "ivf_refine": "flat"}, cfg) == []
    # a flat or HNSW knowledge base is not affected by the setting, old or new
    flat_legacy = {**legacy, "index": "flat"}
    assert stored_setting_diff(flat_legacy, IndexConfig(index="flat", ivf_refine="sq8")) == []
    # k_factor is a search-time setting: never a stored difference
    assert stored_setting_diff({**legacy, "ivf_refine": "flat"}, dataclasses.replace(cfg, ivf_k_factor=99)) == []


def _age_manifest(path: Path) -> None:
    """Make ``path``'s manifest look written before the newer stored keys (``IndexConfig.LEGACY``) existed,
    and by a version with a setting since removed."""
    f = path / "manifest.json"
    m = json.loads(f.read_text())
    m.pop("backend")
    m["config"] = {k: v for k, v in m["config"].items() if k not in IndexConfig.LEGACY and not k.startswith("milvus_")}
    m["config"]["ivf_opq"] = False  # a key this version does not know
    f.write_text(json.dumps(m))


def test_a_kb_whose_manifest_predates_the_newer_keys_opens_with_their_legacy_values(tmp_path):
    assert IndexConfig().ivf_refine != IndexConfig.LEGACY["ivf_refine"]  # else the test could not tell
    cfg = IndexConfig(embedder="hash", index="ivfpq", chunk_size=16, chunk_overlap=0, ivf_nlist=4, ivf_nprobe=4,
                      ivf_m=8, ivf_nbits=4, ivf_refine="none")  # what every IVF-PQ was before refinement
    docs = [Document.create(f"Clause {i}: the {w} must be reported within {i} days.", {"source": f"s{i}"})
            for i, w in enumerate(["fire", "flood", "theft", "damage"] * 25)]
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs)
        want = [h.chunk.id for h in kb.search("theft within 7 days", k=5, mode="dense")]
    with KnowledgeBase.create(tmp_path / "flat", IndexConfig(embedder="hash"), embedder=HashEmbedder()) as kb:
        kb.sync(docs[:4])
    _age_manifest(tmp_path / "kb")
    _age_manifest(tmp_path / "flat")
    with KnowledgeBase.open(tmp_path / "kb", embedder=HashEmbedder()) as old:
        assert (old.cfg.ivf_refine, old.cfg.ivf_fastscan, old.cfg.backend) == ("none", False, "faiss")
        assert old.stats()["backend"] == "faiss"
        assert [h.chunk.id for h in old.search("theft within 7 days", k=5, mode="dense")] == want
        assert old.sync(docs + [Document.create("A new clause on theft.", {"source": "new"})]).chunks_embedded == 1
    # its own settings are no stored difference, and a rebuild keeps the index it has
    KnowledgeBase.open_or_create(tmp_path / "kb", dataclasses.replace(cfg, ivf_nprobe=2),
                                 embedder=HashEmbedder()).close()
    rebuilt, _ = KnowledgeBase.rebuild(tmp_path / "kb", embedder=HashEmbedder())
    with rebuilt:
        assert rebuilt.manifest["config"]["ivf_refine"] == "none" and rebuilt.stats()["documents"] == 101
    # a flat knowledge base gets today's default for a setting that means nothing to it
    with KnowledgeBase.open(tmp_path / "flat", embedder=HashEmbedder()) as flat:
        assert flat.cfg.ivf_refine == IndexConfig().ivf_refine and flat.stats()["documents"] == 4


# -- fast-scan IVF-PQ (4-bit codes) under the refine stage -----------------------------------------
FAST = {**SMALL, "ivf_nbits": 4, "ivf_fastscan": True}


@pytest.fixture(scope="module")
def fast(data):
    vecs, _, ids, _ = data
    vi = VectorIndex.new("ivfpq", DIM, IndexConfig(ivf_refine="flat", **FAST))
    vi.add(ids, vecs)
    return vi


def test_fastscan_recall_grows_with_the_refine_stage(data, fast):
    """k_factor=1 only re-orders the fast-scan top 10, so it has fast-scan's own recall."""
    _, queries, _, exact = data
    assert type(fast._inner()).__name__ == "IndexIVFPQFastScan"
    alone = fast.copy()
    alone.cfg = dataclasses.replace(alone.cfg, ivf_k_factor=1)
    assert recall(fast.search(queries, 10)[1], exact) > recall(alone.search(queries, 10)[1], exact)


def test_fastscan_round_trip_and_deletes(tmp_path, data, fast):
    _, queries, ids, _ = data
    vi = fast.copy()
    vi.remove(ids[:100])
    vi.save(tmp_path / "f.faiss")
    again = VectorIndex.load(tmp_path / "f.faiss", "ivfpq", vi.cfg)
    assert type(again._inner()).__name__ == "IndexIVFPQFastScan" and again.refine == "flat"
    assert again.ntotal == len(ids) - 100 == fast.ntotal - 100
    for a, b in zip(vi.search(queries, 10), again.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert not set(again.search(queries, 10)[1].ravel().tolist()) & set(ids[:100].tolist())


def test_fastscan_with_other_than_4_bits_is_refused():
    with pytest.raises(ValueError, match=r"^ivf_fastscan needs ivf_nbits=4 \(fast-scan codes are 4-bit\), got ivf_nbits=8$"):
        IndexConfig(ivf_fastscan=True, ivf_nbits=8)


def test_fastscan_without_a_refine_store_is_refused():
    with pytest.raises(ValueError, match=r"^ivf_fastscan needs ivf_refine flat or sq8 "):
        IndexConfig(ivf_fastscan=True, ivf_nbits=4, ivf_refine="none")
