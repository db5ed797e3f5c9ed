"""HFGenerator on a tiny random Llama: batching, streaming, cancellation, stop strings, adapters."""

from __future__ import annotations

import json
import logging
import shutil
import threading

import pytest

from core.errors import InputError, ModelError
from hybrid.generation import HFGenerator, make_params
from hybrid.models import resolve_model
from core.protocols import GenerationParams, Generator
from tests.generation.conftest import make_lora

PROMPTS = ["hi", "What is the capital of France?", "The X1 blender costs", "a", "Returns within thirty days?"]


def user(text):
    return [{"role": "user", "content": text}]


def test_loads_a_local_directory_and_records_its_hash(tiny_gen, tiny_model_dir):
    assert isinstance(tiny_gen, Generator)
    r = resolve_model(tiny_model_dir)
    assert tiny_gen.model_id == str(tiny_model_dir.resolve()) and tiny_gen.sha == r.sha and len(r.sha) == 16
    assert tiny_gen.context_window == 1024


def test_system_prompt_is_in_the_rendered_prompt(tiny_gen):
    tiny_gen.system_prompt = "You are ShopBot."
    assert tiny_gen.render(user("hi")).startswith("<|im_start|>system\nYou are ShopBot.<|im_end|>\n")
    own = tiny_gen.render([{"role": "system", "content": "Mine."}, *user("hi")])
    assert "Mine." in own and "ShopBot" not in own
    assert tiny_gen.count_tokens(user("hi")) == len(tiny_gen.tokenizer(tiny_gen.render(user("hi")),
                                                                        add_special_tokens=False)["input_ids"])


def test_batch_equals_one_by_one_with_left_padding(tiny_gen):
    p = make_params(max_new_tokens=12)
    singles = [tiny_gen.generate(user(q), params=p) for q in PROMPTS]
    batch = tiny_gen.generate_batch([user(q) for q in PROMPTS], params=p)  # batch_size=4: two batches
    assert [b.text for b in batch] == [s.text for s in singles]
    assert [b.prompt_tokens for b in batch] == [s.prompt_tokens for s in singles]
    assert len({s.prompt_tokens for s in singles}) > 1  # lengths differ, so padding really happened
    assert all(s.text for s in singles)
    assert tiny_gen.generate_batch([], params=p) == []


def test_greedy_is_deterministic_and_seed_controls_sampling(tiny_gen):
    g = make_params(max_new_tokens=16)
    assert tiny_gen.generate(user("hi"), params=g).text == tiny_gen.generate(user("hi"), params=g).text
    s1 = make_params(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=1)
    s2 = make_params(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=2)
    a, b, c = (tiny_gen.generate(user("hi"), params=p).text for p in (s1, s1, s2))
    assert a == b and a != c


def test_stop_string_cuts_output(tiny_gen):
    full = tiny_gen.generate(user("hi"), params=make_params(max_new_tokens=24)).text
    stop = full[6:8]
    assert stop.strip() and full.find(stop) == 6, "need a stop string that first occurs mid-output"
    cut = tiny_gen.generate(user("hi"), params=make_params(max_new_tokens=24, stop=[stop]))
    assert cut.text == full[:6].strip() and cut.finish_reason == "stop"
    assert cut.completion_tokens < 24  # generation ended early, not just trimmed afterwards
    streamed = "".join(tiny_gen.stream(user("hi"), params=make_params(max_new_tokens=24, stop=[stop])))
    assert streamed.strip() == full[:6].strip()


def test_stream_joins_to_the_same_text_as_generate(tiny_gen):
    # the random tiny model emits text with spaces (so the streamer yields several pieces) for this
    # prompt and penalty; most settings give one run of byte fragments, which streams as one piece
    p = make_params(max_new_tokens=30, repetition_penalty=1.3)
    with tiny_gen.stream(user("hello world"), params=p) as s:
        pieces = list(s)
    assert len(pieces) > 1
    assert "".join(pieces).strip() == tiny_gen.generate(user("hello world"), params=p).text
    assert s.generation.finish_reason == "length" and s.generation.completion_tokens == 30


def test_closing_a_stream_stops_generation(tiny_gen):
    p = make_params(max_new_tokens=900)
    s = tiny_gen.stream(user("hi"), params=p)
    next(s)
    s.close()
    assert not s.running
    assert s.generation.finish_reason == "cancelled"
    assert s.generation.completion_tokens < 300  # stopped long before max_new_tokens
    # the lock is free again: the next request runs normally to its limit
    assert tiny_gen.generate(user("hi"), params=make_params(max_new_tokens=5)).completion_tokens == 5


def test_cancel_event_stops_generation_from_another_thread(tiny_gen):
    cancel = threading.Event()
    s = tiny_gen.stream(user("hi"), params=make_params(max_new_tokens=900), cancel=cancel)
    next(s)
    threading.Timer(0.0, cancel.set).start()
    rest = list(s)  # iteration ends by itself once the generating thread sees the event
    assert not s.running and s.generation.completion_tokens < 900
    assert isinstance(rest, list)
    g = tiny_gen.generate(user("hi"), params=make_params(max_new_tokens=900), cancel=_set_event())
    assert g.finish_reason == "cancelled" and g.completion_tokens <= 1


def test_dropping_a_stream_cancels_it(tiny_gen):
    """What a web server does when the client disconnects: stop iterating and let go."""
    import gc
    import weakref

    s = tiny_gen.stream(user("hi"), params=make_params(max_new_tokens=900))
    state, thread, ref = s._state, s._thread, weakref.ref(s)
    next(s)
    del s
    gc.collect()
    assert ref() is None  # nothing else (not the generating thread) keeps the stream alive
    thread.join(timeout=60)
    assert not thread.is_alive() and state.counter[0] < 900

    cancel = threading.Event()
    for _ in tiny_gen.stream(user("hi"), params=make_params(max_new_tokens=900), cancel=cancel):
        break
    assert cancel.is_set()


def _set_event():
    e = threading.Event()
    e.set()
    return e


def test_errors_inside_the_stream_thread_reach_the_consumer(tiny_gen, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(tiny_gen.model, "generate", boom)
    with pytest.raises(ModelError, match="generation failed: RuntimeError: kaboom"):
        list(tiny_gen.stream(user("hi")))


@pytest.fixture
def two_adapters(tiny_gen, tiny_model_dir, tmp_path):
    a = make_lora(tiny_model_dir, tmp_path / "a", seed=1, base_sha=tiny_gen.sha, base_id=tiny_gen.model_id,
                  tokenizer=tiny_gen.tokenizer)
    b = make_lora(tiny_model_dir, tmp_path / "b", seed=2, base_sha=tiny_gen.sha, base_id=tiny_gen.model_id,
                  tokenizer=tiny_gen.tokenizer)
    return a, b


def test_two_adapters_switch_per_request_and_leave_the_base_alone(tiny_gen, two_adapters):
    p = make_params(max_new_tokens=12)
    base_before = [tiny_gen.generate(user(q), params=p).text for q in PROMPTS[:3]]
    base_model = tiny_gen.model
    tiny_gen.load_adapter("a", two_adapters[0])
    tiny_gen.load_adapter("b", two_adapters[1])
    assert tiny_gen.adapters() == ["a", "b"] and tiny_gen.has_adapter("a")
    assert tiny_gen.model.base_model.model is base_model  # wrapped, not reloaded
    out = {name: [tiny_gen.generate(user(q), adapter=name, params=p).text for q in PROMPTS[:3]]
           for name in (None, "a", "b", "a")}
    assert out[None] == base_before
    assert out["a"] != base_before and out["b"] != base_before and out["a"] != out["b"]
    # interleaving does not leak state: "a" answered the same before and after "b"
    assert [tiny_gen.generate(user(q), adapter="a", params=p).text for q in PROMPTS[:3]] == out["a"]
    batch = tiny_gen.generate_batch([user(q) for q in PROMPTS[:3]], adapter="b", params=p)
    assert [g.text for g in batch] == out["b"]
    with tiny_gen.stream(user(PROMPTS[0]), adapter="a", params=p) as s:
        assert "".join(s).strip() == out["a"][0]
    tiny_gen.unload_adapter("b")
    assert tiny_gen.adapters() == ["a"]
    with pytest.raises(ModelError, match="adapter 'b' is not loaded"):
        tiny_gen.generate(user("hi"), adapter="b")


def test_requests_from_threads_get_their_own_adapter(tiny_gen, two_adapters):
    p = make_params(max_new_tokens=8)
    tiny_gen.load_adapter("a", two_adapters[0])
    tiny_gen.load_adapter("b", two_adapters[1])
    expected = {n: tiny_gen.generate(user("hi"), adapter=n, params=p).text for n in (None, "a", "b")}
    results: dict[int, tuple[str | None, str]] = {}

    def ask(i, name):
        results[i] = (name, tiny_gen.generate(user("hi"), adapter=name, params=p).text)

    threads = [threading.Thread(target=ask, args=(i, [None, "a", "b"][i % 3])) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(text == expected[name] for name, text in results.values()) and len(results) == 9


def test_adapter_from_another_base_model_is_refused(tiny_gen, tiny_model_dir, tmp_path):
    bad = make_lora(tiny_model_dir, tmp_path / "other", seed=1, base_sha="0123456789abcdef",
                    base_id="SomeOtherModel-1B", tokenizer=tiny_gen.tokenizer)
    with pytest.raises(ModelError, match="trained on base model 'SomeOtherModel-1B'.*loaded base model is"):
        tiny_gen.load_adapter("other", bad)
    assert tiny_gen.adapters() == []


def test_pickle_only_or_non_adapter_dirs_are_refused(tiny_gen, tiny_model_dir, tmp_path, two_adapters):
    pickled = tmp_path / "pickled"
    shutil.copytree(two_adapters[0], pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(ModelError, match="only safetensors adapters are loaded"):
        tiny_gen.load_adapter("p", pickled)
    with pytest.raises(ModelError, match="not a peft adapter directory"):
        tiny_gen.load_adapter("m", tiny_model_dir)
    with pytest.raises(InputError, match="adapter name must be a non-empty string"):
        tiny_gen.load_adapter("", two_adapters[0])


def test_adapter_card_mismatch_warns_once(tiny_gen, tiny_model_dir, tmp_path, caplog):
    path = make_lora(tiny_model_dir, tmp_path / "sp", seed=1, base_sha=tiny_gen.sha, base_id=tiny_gen.model_id,
                     tokenizer=tiny_gen.tokenizer, system_prompt="You are ShopBot.")
    tiny_gen.load_adapter("sp", path)
    p = make_params(max_new_tokens=2)
    with caplog.at_level(logging.WARNING, logger="hybrid.chat"):
        tiny_gen.system_prompt = "You are ShopBot."
        tiny_gen.generate(user("hi"), adapter="sp", params=p)
        assert "differs" not in caplog.text
        tiny_gen.system_prompt = "You are LegalBot."
        tiny_gen.generate(user("hi"), adapter="sp", params=p)
        tiny_gen.generate(user("hi"), adapter="sp", params=p)
    assert caplog.text.count("system prompt differs from training") == 1


def test_rendered_dated_system_message_counts_as_the_cards_template(tiny_gen, tiny_model_dir, tmp_path, caplog):
    from hybrid.chat import SystemPrompt

    template = "You are {app_name}. Today is {date}."
    path = make_lora(tiny_model_dir, tmp_path / "dated", seed=1, base_sha=tiny_gen.sha, base_id=tiny_gen.model_id,
                     tokenizer=tiny_gen.tokenizer, system_prompt=template)
    tiny_gen.system_prompt = SystemPrompt(template, defaults={"app_name": "ShopBot"})
    tiny_gen.load_adapter("dated", path)
    msgs = [{"role": "system", "content": "You are ShopBot. Today is 2031-05-06."}, *user("hi")]
    with caplog.at_level(logging.WARNING, logger="hybrid.chat"):
        tiny_gen.generate(msgs, adapter="dated", params=make_params(max_new_tokens=2))
        assert "differs" not in caplog.text  # a rendering of the same template, another day
        tiny_gen.generate([{"role": "system", "content": "Be rude."}, *user("hi")], adapter="dated",
                          params=make_params(max_new_tokens=2))
    assert "system prompt differs from training" in caplog.text


def test_adapter_without_card_loads_with_a_warning(tiny_gen, two_adapters, tmp_path, caplog):
    bare = tmp_path / "bare"
    shutil.copytree(two_adapters[0], bare)
    (bare / "adapter_card.json").unlink()
    with caplog.at_level(logging.WARNING, logger="hybrid.generation"):
        tiny_gen.load_adapter("bare", bare)
    assert "base model cannot be verified" in caplog.text and tiny_gen.has_adapter("bare")


def test_adapter_with_mismatched_shapes_is_a_model_error(tiny_gen, two_adapters, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(two_adapters[0], broken)
    cfg = json.loads((broken / "adapter_config.json").read_text())
    cfg["r"] = 8  # weights on disk have rank 4
    (broken / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="could not load adapter 'broken'"):
        tiny_gen.load_adapter("broken", broken)


def test_bad_generation_inputs(tiny_gen):
    with pytest.raises(InputError, match="temperature must be a finite number >= 0, got nan"):
        make_params(temperature=float("nan"))
    with pytest.raises(InputError, match="max_new_tokens must be > 0, got 0"):
        make_params(max_new_tokens=0)
    p = GenerationParams()
    p.temperature = float("nan")
    with pytest.raises(InputError, match="temperature must be a finite number"):
        tiny_gen.generate(user("hi"), params=p)
    with pytest.raises(InputError, match="exceeds the context window of 1024"):
        tiny_gen.generate(user("word " * 400), params=make_params(max_new_tokens=1000))
    with pytest.raises(InputError, match="unknown role"):
        tiny_gen.generate([{"role": "robot", "content": "hi"}])
    with pytest.raises(ModelError, match="adapter 'nope' is not loaded"):
        tiny_gen.generate(user("hi"), adapter="nope")


def test_from_loaded_wraps_a_model_without_touching_its_tokenizer(tiny_model_dir, one_thread):
    from hybrid.models import load_base_model

    model, tok = load_base_model(tiny_model_dir)
    tok.padding_side = "right"  # what a trainer uses
    gen = HFGenerator.from_loaded(model, tok, model_id="tiny", sha=model.hybrid_resolved.sha, bf16=False)
    p = make_params(max_new_tokens=6)
    out = gen.generate_batch([user("hi"), user("The X1 blender costs")], params=p)
    assert [g.text for g in out] == [gen.generate(user(q), params=p).text for q in ("hi", "The X1 blender costs")]
    assert tok.padding_side == "right" and gen.model_id == "tiny"


def test_repetition_penalty_leaves_prompt_tokens_alone():
    """Only tokens after the prompt are penalized, positive logits divided and negative multiplied."""
    import torch

    from hybrid.generation.controls import generated_repetition_penalty

    proc = generated_repetition_penalty(2.0, prompt_len=3)
    ids = torch.tensor([[5, 6, 7, 1, 2]])  # prompt 5, 6, 7; generated 1, 2
    scores = torch.tensor([[1.0, 4.0, -4.0, 3.0, 3.0, 3.0, 3.0, 3.0]])
    out = proc(ids, scores.clone())
    assert out.tolist() == [[1.0, 2.0, -8.0, 3.0, 3.0, 3.0, 3.0, 3.0]]
    assert torch.equal(generated_repetition_penalty(2.0, prompt_len=5)(ids, scores.clone()), scores)
