"""Atomic adapter output (disk full keeps the previous adapter), refusing another base model, merging."""

from __future__ import annotations

import errno
import json
import os

import pytest

from core.errors import HybridError, ModelError
from hybrid.tuning import save as save_mod
from hybrid.tuning.card import read_card
from hybrid.tuning.trainer import train
from tests.tuning.conftest import make_tiny_model, tiny_cfg


def test_disk_full_while_saving_leaves_the_previous_adapter_intact(tmp_path, tokenizer, catalogue_file,
                                                                  monkeypatch):
    out = tmp_path / "shop"
    train(tiny_cfg("train.max_steps=2"), [catalogue_file], out, model=make_tiny_model(tokenizer), tokenizer=tokenizer)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(tensors, path, metadata=None):
        with open(path, "wb") as f:  # half a file hits the disk, then the device is full
            f.write(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(save_mod, "safetensors_save", full_disk)
    with pytest.raises(HybridError, match="disk full while saving the adapter to .*shop; the previous adapter is intact"):
        train(tiny_cfg("train.max_steps=3"), [catalogue_file], out, model=make_tiny_model(tokenizer),
              tokenizer=tokenizer)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.jsonl", "shop", "shop.run"]  # no temp dirs left
    assert read_card(out).steps == 2


def test_disk_full_on_the_first_save_leaves_nothing(tmp_path, tokenizer, catalogue_file, monkeypatch):
    def full_disk(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(save_mod, "safetensors_save", full_disk)
    with pytest.raises(HybridError, match="nothing was written"):
        train(tiny_cfg("train.max_steps=1"), [catalogue_file], tmp_path / "new", model=make_tiny_model(tokenizer),
              tokenizer=tokenizer)
    assert not (tmp_path / "new").exists()


def test_every_file_of_the_adapter_is_flushed_before_the_rename(tmp_path, tokenizer, catalogue_file, monkeypatch):
    import core.io as hio

    flushed, real = [], hio.fsync
    monkeypatch.setattr(hio, "fsync", lambda target: (flushed.append(target), real(target)))
    out = tmp_path / "a"
    train(tiny_cfg("train.max_steps=1"), [catalogue_file], out, model=make_tiny_model(tokenizer),
          tokenizer=tokenizer)
    # written by safetensors/peft into the temporary directory, which is then renamed to `out`
    names = {os.path.basename(t) for t in flushed if isinstance(t, str) and ".a." in t}
    assert {p.name for p in out.iterdir()} <= names


def test_adapter_from_another_base_model_is_refused(tmp_path, tokenizer, catalogue_file):
    out = tmp_path / "a"
    train(tiny_cfg("train.max_steps=1"), [catalogue_file], out, model=make_tiny_model(tokenizer),
          tokenizer=tokenizer)
    same = make_tiny_model(tokenizer)
    peft_model = save_mod.load_adapter(same, out)  # same base: loads
    assert "default" in peft_model.peft_config
    other = make_tiny_model(tokenizer, seed=1, sha="another-sha-1")
    with pytest.raises(ModelError, match=r"trained on base model 'tiny-llama' \(sha tiny-sha-0\).*another-sh"):
        save_mod.load_adapter(other, out)


def test_merge_equals_the_adapter(tmp_path, tokenizer, tiny_model_dir, catalogue_file):
    """`hybrid tune merge` on a real model directory: merged weights give the adapter's outputs."""
    import torch
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM

    from hybrid.cli import cli
    from hybrid.models import load_base_model

    out, merged = tmp_path / "ad", tmp_path / "merged"
    cfg = tiny_cfg("train.max_steps=3", "train.lr=0.05", f"base_model={tiny_model_dir}")
    train(cfg, [catalogue_file], out)
    r = CliRunner().invoke(cli, ["tune", "merge", "--adapter", str(out), "--out", str(merged)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert read_card(merged).extra["merged_method"] == "lora"
    base, _ = load_base_model(str(tiny_model_dir))
    with_adapter = save_mod.load_adapter(base, out).eval()
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = torch.tensor([tokenizer("The Aster tent costs")["input_ids"]])
    with torch.no_grad():
        a = with_adapter(input_ids=ids).logits
        b = plain(input_ids=ids).logits
        c = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter changed something
    assert json.loads((merged / "config.json").read_text())["model_type"] == "llama"
