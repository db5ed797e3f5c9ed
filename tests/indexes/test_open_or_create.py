"""KnowledgeBase.open_or_create, the one open-or-create path (``create(exist_ok=True)`` and
``hybrid index build`` use it): reuse of an unchanged knowledge base, a one-line ConfigError naming
every stored setting that differs, and an explicit rebuild."""

from __future__ import annotations

import dataclasses

import pytest

from core.errors import ConfigError
from indexes.embed import DEFAULT_EMBEDDER, HashEmbedder, same_embedder_spec
from indexes.kb import KnowledgeBase, stored_setting_diff


def test_creates_when_missing_then_reuses_unchanged(tmp_path, cfg, docs):
    path = tmp_path / "kb"
    with KnowledgeBase.open_or_create(path, cfg, embedder=HashEmbedder()) as kb:
        assert kb.generation == 0
        kb.sync(docs)
        gen = kb.generation
    with KnowledgeBase.open_or_create(path, cfg, embedder=HashEmbedder()) as kb:
        assert kb.generation == gen and len(kb.documents()) == len(docs)
        assert kb.sync(docs).changed == 0  # nothing re-embedded


def test_create_exist_ok_is_the_same_path(kb, cfg):
    with KnowledgeBase.create(kb.path, cfg, embedder=HashEmbedder(), exist_ok=True) as again:
        assert again.generation == kb.generation
    other = dataclasses.replace(cfg, chunk_size=100)
    with pytest.raises(ConfigError, match="chunk_size: stored 24, asked 100"):
        KnowledgeBase.create(kb.path, other, embedder=HashEmbedder(), exist_ok=True)


def test_changed_stored_settings_are_one_line_naming_each(kb, cfg):
    other = dataclasses.replace(cfg, chunk_size=100, index="hnsw")
    with pytest.raises(ConfigError) as e:
        KnowledgeBase.open_or_create(kb.path, other, embedder=HashEmbedder())
    msg = str(e.value)
    assert "\n" not in msg
    assert "chunk_size: stored 24, asked 100" in msg and "index: stored 'flat', asked 'hnsw'" in msg
    assert f"hybrid index rebuild --kb {kb.path}" in msg


def test_search_time_settings_apply_and_none_opens_as_stored(kb, cfg):
    faster = dataclasses.replace(cfg, rrf_k=10, hnsw_ef_search=8)
    with KnowledgeBase.open_or_create(kb.path, faster, embedder=HashEmbedder()) as again:
        assert again.cfg.rrf_k == 10 and again.cfg.chunk_size == 24
    with KnowledgeBase.open_or_create(kb.path, None, embedder=HashEmbedder()) as again:
        assert again.cfg == cfg


def test_rebuild_true_rebuilds_with_the_new_settings(kb, cfg, docs):
    other = dataclasses.replace(cfg, chunk_size=48)
    with KnowledgeBase.open_or_create(kb.path, other, embedder=HashEmbedder(), rebuild=True) as again:
        assert again.cfg.chunk_size == 48
        assert {d.id for d in again.documents()} == {d.id for d in docs}
    assert stored_setting_diff(KnowledgeBase.open(kb.path).manifest["config"], other) == []


def test_embedder_aliases_name_the_same_model(tmp_path):
    assert same_embedder_spec("default", DEFAULT_EMBEDDER)
    assert same_embedder_spec("all-MiniLM-L6-v2", DEFAULT_EMBEDDER)
    assert same_embedder_spec("hash", "hash:64") and not same_embedder_spec("hash", "hash:32")
    assert same_embedder_spec(str(tmp_path), str(tmp_path / "." ))
    assert not same_embedder_spec("hash", DEFAULT_EMBEDDER)
    assert not same_embedder_spec("hash:32", "hash:64")
