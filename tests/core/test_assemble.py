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
