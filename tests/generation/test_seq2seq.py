"""``Seq2SeqGenerator`` on a tiny random T5 saved from a config (``tests.generation.tiny_t5``; no download):
loading, plain-format rendering, generation equal to transformers' own, batching, streaming, stop
strings, adapters by name, clear refusals, and the app-level backend pick."""

from __future__ import annotations

import threading

import pytest

from core.errors import ModelError
from hybrid.generation import HFGenerator, make_params
from hybrid.generation.seq2seq import Seq2SeqGenerator, is_encoder_decoder_model, pick_transformers_class
from tests.generation.tiny_t5 import save_tiny_t5

PROMPTS = ["How much does the tent cost?", "hi", "Returns are accepted within thirty days with a receipt?"]


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5") / "t5")


@pytest.fixture
def t5_gen(t5_dir, one_thread):
    gen = Seq2SeqGenerator(str(t5_dir), bf16=False, batch_size=2)
    gen.warm_up()
    return gen


def make_t5_lora(gen, out, *, seed: int):
    """A LoRA with random non-zero weights (so it changes outputs at once) and a card naming the base."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from hybrid.chat import template_hash
    from hybrid.tuning.card import AdapterCard, write_card

    base = AutoModelForSeq2SeqLM.from_pretrained(gen.name)
    torch.manual_seed(seed)
    cfg = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=64, target_modules=["q", "v", "wo"],
                     init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(out)
    write_card(AdapterCard(base_model_id=gen.model_id, base_model_sha=gen.sha, method="lora",
                           template_hash=template_hash(gen.tokenizer)), out)
    return out


def test_the_config_picks_the_class(t5_dir, tiny_model_dir, tmp_path):
    assert is_encoder_decoder_model(t5_dir) and not is_encoder_decoder_model(tiny_model_dir)
    assert pick_transformers_class(t5_dir) is Seq2SeqGenerator
    assert pick_transformers_class(tiny_model_dir) is HFGenerator
    # names that are not local model directories stay with HFGenerator, which loads or explains them
    assert pick_transformers_class("default") is HFGenerator
    assert pick_transformers_class(tmp_path / "missing") is HFGenerator
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert pick_transformers_class(tmp_path / "broken") is HFGenerator


def test_loads_a_local_t5_with_its_hash_and_window(t5_gen, t5_dir):
    from core.protocols import Generator
    from hybrid.models import weights_sha

    assert isinstance(t5_gen, Generator)
    assert t5_gen.model_id == str(t5_dir.resolve()) and t5_gen.sha == weights_sha(t5_dir)
    assert t5_gen.model.config.is_encoder_decoder
    # no position table and a tokenizer without a real limit: T5's trained input length
    assert t5_gen.context_window == 512


def test_t5_renders_the_plain_format_and_counts_the_eos(t5_gen):
    t5_gen.system_prompt = "You are Tee."
    text = t5_gen.render(user("Price of the X1?"))
    assert text == "system: You are Tee.\nuser: Price of the X1?\nassistant:"
    ids = t5_gen.tokenizer(text)["input_ids"]
    assert ids[-1] == t5_gen.tokenizer.eos_token_id  # T5-style: the tokenizer closes the encoder input
    assert t5_gen.count_tokens(user("Price of the X1?")) == len(ids)


def test_generate_equals_transformers_generate_on_the_encoder_input(t5_gen):
    import torch

    p = make_params(max_new_tokens=12, repetition_penalty=1.0)
    for q in PROMPTS:
        got = t5_gen.generate(user(q), params=p)
        ids = t5_gen.tokenizer(t5_gen.render(user(q)))["input_ids"]
        with torch.inference_mode():
            ref = t5_gen.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0]
        assert int(ref[0]) == t5_gen.model.generation_config.decoder_start_token_id
        new = [int(t) for t in ref[1:] if int(t) not in (t5_gen.tokenizer.eos_token_id, t5_gen.tokenizer.pad_token_id)]
        assert got.text == t5_gen.tokenizer.decode(new, skip_special_tokens=True).strip()
        assert got.prompt_tokens == len(ids) and 0 < got.completion_tokens <= 12


def test_batch_equals_one_by_one_with_right_padding(t5_gen):
    p = make_params(max_new_tokens=10)
    single = [t5_gen.generate(user(q), params=p).text for q in PROMPTS]
    done: list[int] = []
    batch = t5_gen.generate_batch([user(q) for q in PROMPTS], params=p, on_row=done.append)
    assert [g.text for g in batch] == single
    assert sorted(done) == [0, 1, 2]
    assert len(set(single)) > 1  # the prompts really reach the decoder


def test_stream_joins_to_the_generated_text_and_stop_strings_cut(t5_gen):
    p = make_params(max_new_tokens=12)
    full = t5_gen.generate(user(PROMPTS[0]), params=p)
    with t5_gen.stream(user(PROMPTS[0]), params=p) as s:
        pieces = list(s)
    assert len(pieces) >= 1 and "".join(pieces).strip() == full.text
    word = next(w for w in full.text.split() if w)
    cut = t5_gen.generate(user(PROMPTS[0]), params=make_params(max_new_tokens=12, stop=[word]))
    assert word not in cut.text and full.text.startswith(cut.text) and cut.finish_reason == "stop"


def test_a_cancelled_generation_stops(t5_gen):
    cancel = threading.Event()
    cancel.set()
    g = t5_gen.generate(user(PROMPTS[0]), params=make_params(max_new_tokens=40), cancel=cancel)
    assert g.finish_reason in ("cancelled", "stop") and g.completion_tokens <= 1


def test_two_adapters_switch_per_request_and_leave_the_base_alone(t5_gen, tmp_path):
    p = make_params(max_new_tokens=10)
    base = [t5_gen.generate(user(q), params=p).text for q in PROMPTS]
    t5_gen.load_adapter("a", make_t5_lora(t5_gen, tmp_path / "a", seed=1))
    t5_gen.load_adapter("b", make_t5_lora(t5_gen, tmp_path / "b", seed=2))
    assert t5_gen.adapters() == ["a", "b"] and type(t5_gen.model).__name__ == "PeftModelForSeq2SeqLM"
    out = {n: [t5_gen.generate(user(q), adapter=n, params=p).text for q in PROMPTS] for n in (None, "a", "b")}
    assert out[None] == base and out["a"] != base and out["b"] != base and out["a"] != out["b"]
    assert [g.text for g in t5_gen.generate_batch([user(q) for q in PROMPTS], adapter="b", params=p)] == out["b"]
    with t5_gen.stream(user(PROMPTS[0]), adapter="a", params=p) as s:
        assert "".join(s).strip() == out["a"][0]
    with pytest.raises(ModelError, match="adapter 'c' is not loaded"):
        t5_gen.generate(user("hi"), adapter="c")


def test_an_adapter_for_another_base_is_refused(t5_gen, tmp_path):
    from hybrid.tuning.card import AdapterCard, write_card

    d = make_t5_lora(t5_gen, tmp_path / "other", seed=3)
    write_card(AdapterCard(base_model_id="flan-t5-base", base_model_sha="0123456789abcdef", method="lora"), d)
    with pytest.raises(ModelError, match="trained on base model 'flan-t5-base'"):
        t5_gen.load_adapter("other", d)
    assert t5_gen.adapters() == []


def test_a_causal_model_is_refused_with_one_line(tiny_model_dir):
    with pytest.raises(ModelError, match="not an encoder-decoder model") as e:
        Seq2SeqGenerator(str(tiny_model_dir)).warm_up()
    assert "\n" not in str(e.value)


def test_a_t5_without_decoder_start_is_refused(tmp_path):
    import json

    d = save_tiny_t5(tmp_path / "t5")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["decoder_start_token_id"]
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "generation_config.json").unlink()
    with pytest.raises(ModelError, match="no decoder_start_token_id"):
        Seq2SeqGenerator(str(d)).warm_up()


def _t5_app(root, t5_dir):
    from tests.api.conftest import LEGAL_DOCS, LEGAL_EX, write_app

    return write_app(root, "t5app", LEGAL_DOCS, LEGAL_EX, model=str(t5_dir), max_new_tokens=8)


def test_an_app_whose_model_is_a_t5_dir_gets_the_seq2seq_generator(t5_dir, tmp_path, one_thread):
    from hybrid.app import load_app
    from hybrid.assemble import make_generator

    gen = make_generator(load_app(_t5_app(tmp_path, t5_dir)))
    assert isinstance(gen, Seq2SeqGenerator)
    assert gen.generate(user("hi"), params=make_params(max_new_tokens=4)).completion_tokens > 0
