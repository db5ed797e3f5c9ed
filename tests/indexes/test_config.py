import pytest

from core.config import load_config
from core.errors import ConfigError
from indexes.config import IndexConfig
from tests.conftest import ROOT


def test_shipped_preset_loads_and_names_its_command():
    path = ROOT / "configs" / "index.yaml"
    assert path.read_text().startswith("# hybrid index build")
    cfg = load_config(IndexConfig, path)
    assert cfg == IndexConfig()  # the preset documents the defaults


@pytest.mark.parametrize("override,needle", [
    ("chunk_overlap=300", "chunk_overlap"),
    ("index=annoy", "index"),
    ("ivf_nprobe=5000", "ivf_nprobe"),
    ("hnsw_max_tombstones=1.5", "hnsw_max_tombstones"),
    ("rrf_k=0", "rrf_k"),
    ("no_such_key=1", "no_such_key"),
])
def test_bad_settings_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(IndexConfig, ROOT / "configs" / "index.yaml", [override])


def test_every_field_has_help():
    import dataclasses

    for f in dataclasses.fields(IndexConfig):
        assert f.metadata.get("help"), f.name


def test_index_backend_is_checked_against_the_backend_registry():
    from indexes.backends import BACKENDS
    from indexes.config import IndexConfig

    with pytest.raises(ValueError, match="backend must be one of faiss, milvus, got 'qdrant'"):
        IndexConfig(backend="qdrant")
    with BACKENDS.registered("qdrant", object()):  # a backend registered later is a valid setting
        assert IndexConfig(backend="qdrant").backend == "qdrant"


def test_backend_settings_load_from_yaml_keys_and_overrides():
    from indexes.backends import BackendConfig, backend_settings

    cfg = load_config(IndexConfig, ROOT / "configs" / "index.yaml",
                      ["backend=milvus", "milvus_uri=http://milvus:19530", "milvus_collection=legal",
                       "milvus_timeout=3", "milvus_consistency=Bounded"])
    assert backend_settings(cfg) == BackendConfig("milvus", milvus_uri="http://milvus:19530",
                                                  milvus_collection="legal", milvus_timeout=3.0,
                                                  milvus_consistency="Bounded")


@pytest.mark.parametrize("override,needle", [
    ("milvus_timeout=0", "milvus_timeout must be > 0"),
    ("milvus_consistency=strong", "milvus_consistency must be one of"),
])
def test_bad_backend_settings_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(IndexConfig, ROOT / "configs" / "index.yaml", [override])
