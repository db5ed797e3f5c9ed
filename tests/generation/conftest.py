"""Fixtures for generator tests: a tiny random Llama (built from a config) and the real embedded model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

# ChatML, like SmolLM2's own template, written out so the tiny tokenizer has a real chat template.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The X1 blender costs 49 euros and ships in two days.",
    "Returns are accepted within thirty days with a receipt.",
    "What is the capital of France? Paris is the capital of France.",
    "You are a helpful assistant. Answer the question briefly.",
    "hello world, the quick brown fox jumps over the lazy dog 0123456789",
]


def build_tiny_tokenizer():
    """A byte-level BPE trained on a few sentences: encodes any text, ~300 tokens, ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def build_tiny_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id,
                      # untied, wider init: a random model that emits varied tokens instead of one
                      # repeated newline, so tests can tell outputs apart
                      tie_word_embeddings=False, initializer_range=0.2)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama saved as a normal Hugging Face directory (safetensors + tokenizer)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def one_thread():
    """Run torch on one thread: for a model this small, a second thread only adds sync overhead
    (measured 4 ms/token on 1 thread vs 48 ms/token on 2 on the busy shared CI box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_gen(tiny_model_dir, one_thread):
    """A fresh HFGenerator over the tiny model (fp32 so batched and single runs agree exactly)."""
    from hybrid.generation import HFGenerator

    gen = HFGenerator(str(tiny_model_dir), bf16=False, batch_size=4)
    gen.warm_up()
    return gen


def make_lora(model_dir: Path, out: Path, *, seed: int, base_sha: str, base_id: str, tokenizer=None,
              system_prompt: str = "") -> Path:
    """Save a LoRA adapter with random (non-zero) weights and a card naming its base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hybrid.chat import system_prompt_hash, template_hash
    from hybrid.tuning.card import AdapterCard, write_card

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    # init_lora_weights=False makes B non-zero, so the adapter changes outputs right away.
    cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out)
    write_card(AdapterCard(base_model_id=base_id, base_model_sha=base_sha, method="lora",
                           template_hash=template_hash(tokenizer) if tokenizer is not None else "",
                           system_prompt=system_prompt,
                           system_prompt_hash=system_prompt_hash(system_prompt) if tokenizer is not None else ""),
               out)
    return out


@pytest.fixture(scope="session")
def real_gen_session():
    """The embedded SmolLM2 model, loaded once per session (converted on first use)."""
    import os

    from hybrid.generation import HFGenerator
    from tests.conftest import ROOT

    # Session fixtures run before the per-test cache fixture: point at the same test cache by hand.
    os.environ.setdefault("HYBRID_CACHE", str(ROOT / ".cache" / "test-cache"))
    gen = HFGenerator("default")
    gen.warm_up()
    return gen


@pytest.fixture
def real_gen(real_gen_session, one_thread):
    """A per-test view of the session model: fresh settings, the same weights (never mutated here)."""
    gen = copy.copy(real_gen_session)  # shares the model, lock and adapter tables: load no adapters here
    gen.system_prompt = None
    return gen
