"""The embedded SmolLM2-135M-Instruct, for real: conversion, reload, greedy answers, system prompts."""

from __future__ import annotations

import json
import threading

import pytest

from hybrid.generation import make_params

pytestmark = pytest.mark.slow


def user(text):
    return [{"role": "user", "content": text}]


def test_gguf_converts_once_into_safetensors_and_reloads(tmp_path, monkeypatch):
    """A fresh cache: two threads ask at once, one conversion happens, later loads reuse it."""
    import hybrid.models as models

    monkeypatch.setenv("HYBRID_CACHE", str(tmp_path))
    calls = []
    real_convert = models._convert_gguf

    def counting(gguf, dest):
        calls.append(dest)
        real_convert(gguf, dest)

    monkeypatch.setattr(models, "_convert_gguf", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(models.resolve_model("default"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    path = results[0].path
    assert path.parent == tmp_path / "models" and (path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("models/.*.tmp"))  # no leftover temp dirs
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    meta = json.loads((path / "hybrid_model.json").read_text())
    assert meta["weights_sha"] == results[0].sha and meta["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    before = (path / "model.safetensors").stat().st_mtime_ns

    model, tok = models.load_base_model("SmolLM2-135M-Instruct")  # alias of "default"
    assert len(calls) == 1 and (path / "model.safetensors").stat().st_mtime_ns == before
    assert model.hybrid_resolved.model_id == "SmolLM2-135M-Instruct"
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    assert "<|im_start|>" in (tok.chat_template or "")
    assert models.weights_sha(path, use_cache=False) == results[0].sha


def test_greedy_generation_answers_a_simple_question(real_gen):
    g = real_gen.generate(user("What is the capital of France?"), params=make_params(max_new_tokens=16))
    assert "Paris" in g.text
    assert g.finish_reason == "stop" and 0 < g.completion_tokens < 16 and g.prompt_tokens > 5


def test_system_prompt_reaches_the_model(real_gen):
    real_gen.system_prompt = "You are ShopBot, the assistant of the Vellmar store."
    prompt = real_gen.render(user("Who are you?"))
    assert prompt.startswith("<|im_start|>system\nYou are ShopBot, the assistant of the Vellmar store.<|im_end|>")
    assert "SmolLM" not in prompt  # the template's built-in default system prompt is replaced
    p = make_params(max_new_tokens=16)
    with_prompt = real_gen.generate(user("Who are you?"), params=p).text
    real_gen.system_prompt = None
    assert real_gen.generate(user("Who are you?"), params=p).text != with_prompt  # it changed the answer


def test_stream_and_batch_give_sensible_answers(real_gen):
    p = make_params(max_new_tokens=12)
    with real_gen.stream(user("What is the capital of France?"), params=p) as s:
        pieces = list(s)
    assert len(pieces) > 2 and "Paris" in "".join(pieces)
    # (Italy was asked here before: SmolLM2-135M says "Il Coriobella" without the prompt-wide penalty,
    # single or batched, and said "Rome" only while the penalty also pushed it off the prompt's words)
    out = real_gen.generate_batch([user("What is the capital of France?"), user("What is the capital of Germany?"),
                                   user("Hello!")], params=p)
    assert "Paris" in out[0].text and "Berlin" in out[1].text and out[2].text


def test_a_grounded_answer_can_copy_a_phrase_from_its_source(real_gen):
    """The repetition penalty counts generated tokens only. transformers' own penalty also hits the
    prompt, and on this very prompt turned "thirty-six months" into "36 weeks" at 1.1 (and into an
    unrelated paragraph at 1.3)."""
    from hybrid.strategies.rag import data_user_turn

    src = ("The Harbourline Warranty covers manufacturing defects for thirty-six months from the date of "
           "delivery, excluding wear parts such as seals and gaskets.")
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": data_user_turn(
                "How long does the Harbourline Warranty cover manufacturing defects?",
                [f'[1] source: warranty.md\n"""\n{src}\n"""'])}]
    for penalty in (1.1, 1.3):
        g = real_gen.generate(msgs, params=make_params(max_new_tokens=48, repetition_penalty=penalty))
        assert "thirty-six months from the date of delivery" in g.text, (penalty, g.text)
