"""The embedder-kind and vector-index-kind registries: lookup by name, one-line unknown-name errors
listing the known names, duplicates refused."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from indexes.config import IndexConfig
from indexes.embed import (EMBEDDERS, HashEmbedder, SentenceTransformerEmbedder, embedder_kind,
                           get_embedder)
from indexes.vectors import VECTOR_KINDS, VectorIndex, VectorKind


def test_embedder_kinds_are_registered_by_name():
    assert EMBEDDERS.names() == ["hash", "sentence-transformers"]
    assert embedder_kind("hash") == ("hash", "")
    assert embedder_kind("hash:256") == ("hash", "256")
    assert embedder_kind("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers", "sentence-transformers/all-MiniLM-L6-v2")
    assert embedder_kind("default") == ("sentence-transformers", "default")


def test_get_embedder_builds_the_named_kind():
    emb = get_embedder("hash:32", bf16=True)  # options a kind has no use for are ignored
    assert isinstance(emb, HashEmbedder) and emb.dim == 32
    assert get_embedder("hash").dim == 64


def test_an_existing_directory_is_a_model_dir_whatever_its_name(tmp_path):
    d = tmp_path / "hash:7"
    d.mkdir()
    assert embedder_kind(str(d)) == ("sentence-transformers", str(d))
    assert isinstance(get_embedder(str(d)), SentenceTransformerEmbedder)  # lazy: nothing loads yet


def test_unknown_embedder_kind_is_one_line_listing_the_known():
    with pytest.raises(InputError) as e:
        get_embedder("hsh:64")
    msg = str(e.value)
    assert msg == "unknown embedder kind 'hsh'; known: hash, sentence-transformers"
    assert "\n" not in msg


def test_duplicate_embedder_kind_is_refused():
    with pytest.raises(ValueError, match="embedder kind 'hash' is already registered"):
        EMBEDDERS.add("hash", lambda argument, **options: HashEmbedder(8))
    assert EMBEDDERS.get("hash")("", ).dim == 64  # the original entry stays


def test_vector_kinds_are_registered_by_name():
    assert VECTOR_KINDS.names() == ["flat", "hnsw", "ivfpq"]
    cfg = IndexConfig(embedder="hash", ivf_m=8, ivf_nlist=4, ivf_nprobe=2)
    vecs = HashEmbedder(16).embed(["a b c", "d e f", "a b d"])
    for kind in ("flat", "hnsw"):
        vi = VectorIndex.new(kind, 16, cfg)
        vi.add(np.array([5, 6, 7]), vecs)
        scores, ids = vi.search(vecs[:1], 1)
        assert ids[0, 0] == 5 and vi.kind == kind
    assert VectorIndex.new("ivfpq", 16, cfg).dim == 16


def test_unknown_vector_kind_is_one_line_listing_the_known():
    with pytest.raises(InputError) as e:
        VectorIndex.new("annoy", 16, IndexConfig(embedder="hash"))
    assert str(e.value) == "unknown index kind 'annoy'; known: flat, hnsw, ivfpq"


def test_duplicate_vector_kind_is_refused():
    flat = VECTOR_KINDS.get("flat")
    VECTOR_KINDS.add("flat", flat)  # the same entry again is a no-op
    with pytest.raises(ValueError, match="index kind 'flat' is already registered"):
        VECTOR_KINDS.add("flat", VectorKind(flat.build, flat.params))
    assert VECTOR_KINDS.get("flat") is flat
