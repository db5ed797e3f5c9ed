"""Model resolution and loading: bad names are one clear error; local directories just work."""

from __future__ import annotations

import json
import shutil

import pytest

from core.errors import ModelError
from hybrid.models import load_base_model, resolve_model, weights_sha


def test_unknown_model_id_offline_is_one_clear_error():
    with pytest.raises(ModelError) as e:
        resolve_model("some-org/not-downloaded-model")
    msg = str(e.value)
    assert "'some-org/not-downloaded-model' is not available offline" in msg
    assert "pass a local Hugging Face model directory" in msg and "\n" not in msg


@pytest.mark.parametrize("name", ["./no/such/dir", "not-a-model"])
def test_missing_paths_and_bare_names_are_refused(name):
    with pytest.raises(ModelError, match="not available offline"):
        resolve_model(name)


def test_a_directory_without_config_or_a_gguf_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="is not a directory"):
        resolve_model(gguf)


def test_weights_hash_tracks_content_and_is_cached(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert weights_sha(copy) == weights_sha(tiny_model_dir)  # same bytes, same hash
    f = copy / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    assert weights_sha(copy) != weights_sha(tiny_model_dir)
    (copy / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no \\*.safetensors weights"):
        weights_sha(copy)


def test_remote_code_needs_opt_in(tiny_model_dir, tmp_path):
    d = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="ships its own Python code.*trust_remote_code=True"):
        load_base_model(d)


def test_local_directory_loads_with_its_tokenizer(tiny_model_dir, one_thread):
    model, tok = load_base_model(tiny_model_dir)
    assert model.hybrid_resolved.sha == weights_sha(tiny_model_dir)
    assert tok.pad_token_id is not None and not model.training
    assert str(model.dtype) == "torch.float32"


def test_a_hub_id_already_in_the_local_cache_resolves_from_disk(tmp_path, monkeypatch):
    from hybrid.models import _offline_snapshot

    snap = tmp_path / "models--acme--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert _offline_snapshot("acme/tiny") == snap
    assert _offline_snapshot("acme/absent") is None
    assert _offline_snapshot("not-an-id") is None
