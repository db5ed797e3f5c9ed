"""hybrid.assemble's adapter lifecycle reads the adapter card through hybrid.tuning.card."""

from __future__ import annotations

import json

from hybrid.app import load_app
from hybrid.assemble import adapter_is_current, adapter_training_prompts, has_adapter_files
from hybrid.tuning.card import AdapterCard, DataFile, write_card


def test_training_prompts_come_from_the_cards_train_files_else_the_tune_data(app_dir):
    app = load_app(app_dir)
    assert has_adapter_files(app)
    # the fixture's card names no data: the app's tune.jsonl is what the adapter learned from
    assert adapter_training_prompts(app)[0] == "What does our house style say about topic 0?"
    (app_dir / "train.jsonl").write_text(json.dumps({"question": "Q from the card"}) + "\n")
    (app_dir / "held.jsonl").write_text(json.dumps({"question": "held out"}) + "\n")
    write_card(AdapterCard("scripted", "scripted", "lora", data=[
        DataFile("train.jsonl", "x", 1), DataFile("held.jsonl", "y", 1, split="eval")]), app.adapter_path)
    assert adapter_training_prompts(app) == ["Q from the card"]


def test_adapter_is_current_compares_the_cards_system_prompt_hash(app_dir):
    app = load_app(app_dir)
    ok, why = adapter_is_current(app)
    assert ok and "0 steps" in why
    write_card(AdapterCard("scripted", "scripted", "lora", system_prompt_hash="other", steps=3), app.adapter_path)
    assert adapter_is_current(app) == (False, "the adapter was trained with a different system prompt")
    write_card(AdapterCard("scripted", "scripted", "lora", system_prompt_hash=app.system_prompt_hash(), steps=3),
               app.adapter_path)
    assert adapter_is_current(app) == (True, f"adapter at {app.adapter_path} (3 steps)")
    (app.adapter_path / "adapter_card.json").write_text("{not json")
    ok, why = adapter_is_current(app)
    assert not ok and why.startswith("unreadable adapter card")


def test_make_generator_picks_the_backend_from_the_generators_registry(app_dir, monkeypatch):
    import dataclasses

    from hybrid.assemble import generator_backend, make_generator
    from hybrid.generation import GENERATORS, ScriptedGenerator

    app = load_app(app_dir)

    def with_model(model):
        return dataclasses.replace(app, generation=dataclasses.replace(app.generation, model=model))

    gen = make_generator(with_model("scripted"))  # the fake, by its backend name
    assert isinstance(gen, ScriptedGenerator) and gen.context_window == 4096
    made = []

    class FakeHF:
        def __init__(self, model, **kw):
            made.append((model, kw))

    monkeypatch.setitem(GENERATORS._items, "hf", FakeHF)  # no model is loaded: the registry's entry is called
    for model in ("embedded", "default"):
        assert isinstance(make_generator(with_model(model)), FakeHF) and made[-1][0] == "default"
    (app_dir / "local-model").mkdir()
    make_generator(with_model("local-model"))
    assert made[-1][0] == app_dir / "local-model"  # an existing directory, resolved against the app
    make_generator(with_model("org/some-model"))
    assert made[-1][0] == "org/some-model" and "system_prompt" in made[-1][1]
    assert [generator_backend(m) for m in ("scripted", "embedded", "hf", "x/y")] == ["scripted", "hf", "hf", "hf"]

    class Echo:
        pass

    with GENERATORS.registered("echo", Echo):  # a new backend is one registration, named by generation.model
        assert isinstance(make_generator(with_model("echo")), Echo)
