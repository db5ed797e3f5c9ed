"""core.hardware.bf16_fast is the one bf16 probe: the embedder, the generator and both trainers ask it,
each keeping its own policy (explicit bf16=, precision="fp32", batches only for generation)."""

from __future__ import annotations

import pytest

from core import hardware


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("0", False), ("false", False),
                                             ("no", False), ("", False)])
def test_the_variable_forces_the_cpu_answer(monkeypatch, value, expected):
    monkeypatch.setenv("HYBRID_BF16", value)
    assert hardware.bf16_fast() is expected
    assert hardware.bf16_fast("cpu") is expected


def test_without_the_variable_the_cpu_flags_decide(monkeypatch, tmp_path):
    monkeypatch.delenv("HYBRID_BF16", raising=False)
    flags = tmp_path / "cpuinfo"
    real_path = hardware.Path
    monkeypatch.setattr(hardware, "Path", lambda p: flags if p == "/proc/cpuinfo" else real_path(p))
    flags.write_text("flags\t: fpu sse avx512f avx512_bf16\n")
    assert hardware.bf16_fast() is True
    flags.write_text("flags\t: fpu sse avx2\n")
    assert hardware.bf16_fast() is False
    flags.unlink()
    assert hardware.bf16_fast() is False  # unreadable: fp32


@pytest.mark.parametrize("forced", [True, False])
def test_every_decider_asks_the_probe(monkeypatch, forced):
    import torch

    from hybrid.generation.hf import HFGenerator
    from hybrid.tuning.trainer import use_bf16
    from indexes.embed import SentenceTransformerEmbedder, bf16_fast

    monkeypatch.setenv("HYBRID_BF16", "1" if forced else "0")
    assert bf16_fast is hardware.bf16_fast  # the name the docs give still works
    assert SentenceTransformerEmbedder().bf16 is forced
    assert SentenceTransformerEmbedder(bf16=not forced).bf16 is (not forced)  # explicit wins
    gen = HFGenerator()
    assert gen.use_bf16(8) is forced
    assert gen.use_bf16(1) is False  # single sequences decode in fp32 either way
    assert HFGenerator(bf16=True).use_bf16(1) is True
    assert use_bf16("auto", torch.device("cpu")) is forced
    assert use_bf16("fp32", torch.device("cpu")) is False
    assert use_bf16("bf16", torch.device("cpu")) is True  # asked for: on, with a warning when slow
