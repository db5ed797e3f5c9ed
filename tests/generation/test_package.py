"""The ``hybrid.generation`` package: its backend registry, and the names it keeps re-exporting."""

from __future__ import annotations

import pytest

import hybrid.generation as generation
from core.errors import InputError
from hybrid.generation import GENERATORS, HFGenerator, ScriptedGenerator


def test_the_backends_are_registered_by_name():
    assert GENERATORS.names() == ["hf", "openai", "scripted", "transformers", "vllm"]
    assert GENERATORS.get("hf") is HFGenerator
    assert GENERATORS.get("scripted") is ScriptedGenerator
    assert "hf" in GENERATORS and "scripted" in GENERATORS and "nope" not in GENERATORS


def test_a_looked_up_factory_builds_a_generator():
    gen = GENERATORS.get("scripted")(context_window=4096)
    assert isinstance(gen, ScriptedGenerator)
    assert gen.generate([{"role": "user", "content": "Hello THERE"}]).text == "hello there"


def test_a_second_factory_under_a_taken_name_is_refused():
    class Other:
        pass

    with pytest.raises(ValueError, match="^generator backend 'hf' is already registered$"):
        GENERATORS.add("hf", Other)
    with pytest.raises(ValueError, match="^generator backend 'scripted' is already registered$"):
        GENERATORS.register("scripted")(Other)
    assert GENERATORS.get("hf") is HFGenerator and GENERATORS.get("scripted") is ScriptedGenerator
    GENERATORS.add("hf", HFGenerator)  # the same factory again (a re-import) is no duplicate
    assert GENERATORS.names() == ["hf", "openai", "scripted", "transformers", "vllm"]


def test_an_unknown_name_is_a_one_line_error_listing_the_known_ones():
    with pytest.raises(InputError) as err:
        GENERATORS.get("llamacpp")
    assert str(err.value) == "unknown generator backend 'llamacpp'; known: hf, openai, scripted, transformers, vllm"


@pytest.mark.parametrize("name, module", [
    ("HFGenerator", "hf"), ("_generated_repetition_penalty", "controls.generated_repetition_penalty"),
    ("ScriptedGenerator", "scripted"), ("ScriptedCall", "scripted"), ("canonical", "scripted"),
    ("GenerationStream", "stream"),
    ("check_params", "params"), ("make_params", "params"), ("cut_at_stop", "params"),
    ("GenerationParams", "params"),
])
def test_names_of_the_old_module_are_re_exported_from_their_new_home(name, module):
    import importlib

    module, _, new_name = module.partition(".")  # "module.name": it lives on under a new name
    assert getattr(generation, name) is getattr(importlib.import_module(f"hybrid.generation.{module}"), new_name or name)
