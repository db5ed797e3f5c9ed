"""The scripted fake: deterministic, records what the model would have seen."""

from __future__ import annotations

import threading

import pytest

from core.errors import InputError, ModelError
from hybrid.generation import ScriptedGenerator, make_params
from core.protocols import GenerationParams, Generator


def user(text):
    return [{"role": "user", "content": text}]


def test_is_a_generator_and_echoes_canonical_last_user_message():
    gen = ScriptedGenerator()
    assert isinstance(gen, Generator)
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "  Hello   THERE "}]
    assert gen.generate(msgs).text == "hello there"


def test_scripted_replies_by_key_substring_and_order():
    gen = ScriptedGenerator({"price of the x1": "The X1 costs 49 euros."})
    assert gen.generate(user("Price of the X1")).text == "The X1 costs 49 euros."
    assert gen.generate(user("What is the price of the X1 today?")).text == "The X1 costs 49 euros."
    assert gen.generate(user("unrelated")).text == "unrelated"
    seq = ScriptedGenerator(["one", "two"])
    assert [seq.generate(user("q")).text for _ in range(2)] == ["one", "two"]
    with pytest.raises(ModelError, match="ran out of replies after 2"):
        seq.generate(user("q"))
    fn = ScriptedGenerator(lambda msgs, adapter: f"{len(msgs)}:{adapter}")
    assert fn.generate(user("q")).text == "1:None"


def test_system_prompt_reaches_the_recorded_prompt():
    gen = ScriptedGenerator(system_prompt="You are ShopBot.")
    gen.generate(user("hi"))
    assert gen.calls[-1].prompt == "system: You are ShopBot.\nuser: hi\nassistant:"
    assert gen.calls[-1].messages[0] == {"role": "system", "content": "You are ShopBot."}
    # a caller's own system message wins over the default
    gen.generate([{"role": "system", "content": "Custom."}, *user("hi")])
    assert gen.prompts[-1].startswith("system: Custom.\n") and "ShopBot" not in gen.prompts[-1]


def test_adapters_by_name():
    gen = ScriptedGenerator(adapters=["shop"])
    gen.load_adapter("legal", "adapters/legal")
    assert gen.adapters() == ["legal", "shop"] and gen.has_adapter("shop") and not gen.has_adapter("x")
    assert gen.generate(user("Hi"), adapter="legal").text == "[legal] hi"
    assert gen.calls[-1].adapter == "legal"
    with pytest.raises(ModelError, match="adapter 'nope' is not loaded"):
        gen.generate(user("Hi"), adapter="nope")


def test_max_new_tokens_stop_and_finish_reason():
    gen = ScriptedGenerator({"q": "alpha beta gamma delta"})
    g = gen.generate(user("q"), params=GenerationParams(max_new_tokens=2))
    assert (g.text, g.finish_reason, g.completion_tokens) == ("alpha beta", "length", 2)
    g = gen.generate(user("q"), params=GenerationParams(stop=["gam"]))
    assert (g.text, g.finish_reason) == ("alpha beta", "stop")


def test_stream_pieces_join_to_generate_and_respect_stop_and_cancel():
    gen = ScriptedGenerator({"q": "alpha beta gamma delta"})
    assert "".join(gen.stream(user("q"))).strip() == gen.generate(user("q")).text
    assert "".join(gen.stream(user("q"), params=GenerationParams(stop=["a d"]))) == "alpha beta gamm"
    cancel = threading.Event()
    got = []
    for piece in gen.stream(user("q"), cancel=cancel):
        got.append(piece)
        cancel.set()
    assert got == ["alpha "]


def test_batch_keeps_order_and_records_each():
    gen = ScriptedGenerator()
    out = gen.generate_batch([user("B"), user("a")])
    assert [g.text for g in out] == ["b", "a"] and [c.kind for c in gen.calls] == ["batch", "batch"]


def test_bad_params_and_context_window():
    gen = ScriptedGenerator(context_window=8)
    with pytest.raises(InputError, match="temperature must be a finite number"):
        make_params(temperature=float("nan"))
    with pytest.raises(InputError, match="max_new_tokens must be > 0, got 0"):
        make_params(max_new_tokens=0)
    p = GenerationParams()
    p.max_new_tokens = 0  # mutated after validation: generators re-check
    with pytest.raises(InputError, match="max_new_tokens must be > 0, got 0"):
        gen.generate(user("q"), params=p)
    with pytest.raises(InputError, match="exceeds the context window of 8"):
        gen.generate(user("q"), params=GenerationParams(max_new_tokens=7))


@pytest.mark.parametrize("field, value, message", [
    ("max_new_tokens", 0, "max_new_tokens must be > 0, got 0"),
    ("max_new_tokens", 2.5, "max_new_tokens must be an integer, got 2.5"),
    ("top_p", float("nan"), "top_p must be in"),
    ("repetition_penalty", 0.0, "repetition_penalty must be > 0, got 0.0"),
    ("stop", [""], "stop strings must be non-empty strings"),
])
def test_params_have_one_check_on_creation_and_on_use(field, value, message):
    # the same InputError (still a ValueError) whether the value is given or mutated in later
    with pytest.raises(InputError, match=message):
        GenerationParams(**{field: value})
    p = GenerationParams()
    setattr(p, field, value)
    with pytest.raises(InputError, match=message):
        ScriptedGenerator().generate(user("q"), params=p)
    assert issubclass(InputError, ValueError)
