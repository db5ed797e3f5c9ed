"""Tuning fixtures: the real SmolLM2 tokenizer (loaded once) and tiny random Llama models built from it.

The tiny model shares the real tokenizer and chat template, so data handling, masking, packing and the
training loop run exactly as with the real model, only fast. The real 135M model is used by the
``slow`` tests (learning, merge, benchmarks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CATALOGUE = HERE / "data" / "catalogue.jsonl"


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from hybrid.models import resolve_model

    resolved = resolve_model("default")
    tok = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def make_tiny_model(tokenizer, *, seed: int = 0, layers: int = 2, sha: str = "tiny-sha-0"):
    """A 2-layer Llama with the tokenizer's vocabulary; ``hybrid_resolved`` as the loader would set it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hybrid.models import ResolvedModel

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    model.hybrid_resolved = ResolvedModel("tiny-llama", Path("/nonexistent/tiny"), sha)
    return model


@pytest.fixture
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


def write_rows(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def chat_row(q: str, a: str, source: str | None = None) -> dict:
    row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    if source:
        row["source"] = source
    return row


def tiny_cfg(*overrides: str):
    """A TuneConfig sized for the tiny model: short rows, few steps, no progress bar."""
    from core.config import load_config
    from hybrid.tuning.config import TuneConfig

    base = ["data.max_length=96", "train.batch_tokens=384", "train.max_steps=4", "train.eval_every=2",
            "train.lr=0.01", "train.progress=false", "train.tensorboard=false", "train.warmup_steps=1",
            "data.system_prompt=You are a test shop assistant."]
    return load_config(TuneConfig, None, base + list(overrides))


@pytest.fixture
def catalogue_file(tmp_path):
    from hybrid.tuning.sample import catalogue_rows

    return write_rows(tmp_path / "cat.jsonl", catalogue_rows(n_products=12))


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory):
    """A tiny model saved as a Hugging Face directory, so the CLI's real loading path can use it."""
    d = tmp_path_factory.mktemp("tiny-model")
    model = make_tiny_model(tokenizer)
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    return d
