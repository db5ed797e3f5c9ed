"""Data formats, validation by line number, completion-only labels, the system prompt, over-long rows."""

from __future__ import annotations

import pytest

from core.errors import InputError
from hybrid.tuning.data import (IGNORE_INDEX, encode_rows, read_rows, rows_from_records, split_by_source)
from tests.tuning.conftest import chat_row, tiny_cfg, write_rows

SYSTEM = "You are a test shop assistant."


def test_reads_three_formats(tmp_path):
    p = write_rows(tmp_path / "mixed.jsonl", [
        chat_row("Price of the X1?", "It costs 5 euros."),
        {"instruction": "Name the colour.", "input": "The X1 tent", "output": "Green."},
        {"text": "The X1 tent is green and weighs 2 kg.", "id": "doc-x1"},
    ])
    rows, report = read_rows(p)
    assert [r.kind for r in rows] == ["chat", "chat", "text"]
    assert rows[1].messages[0]["content"] == "Name the colour.\n\nThe X1 tent"
    assert rows[1].messages[1] == {"role": "assistant", "content": "Green."}
    assert rows[2].source == "doc-x1"
    assert report.n_skipped == 0


def test_bad_rows_are_reported_by_line_and_skipped(tmp_path):
    p = write_rows(tmp_path / "bad.jsonl", [
        chat_row("ok?", "yes"),                                       # 1 good
        "{not json",                                                  # 2 bad json
        {"messages": [{"role": "user", "content": "hi"}]},            # 3 no assistant
        chat_row("empty?", "   "),                                    # 4 empty answer
        {"instruction": "do it"},                                     # 5 alpaca without output
        {"foo": 1},                                                   # 6 unknown shape
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 7
        chat_row("fine?", "fine"),                                    # 8 good
    ])
    rows, report = read_rows(p)
    assert [r.line for r in rows] == [1, 8]
    assert report.n_skipped == 6
    assert report.skipped["bad_json"] == 1 and report.skipped["empty_answer"] == 1
    assert report.skipped["missing_field"] == 3 and report.skipped["bad_role"] == 1
    lines = [int(msg.split(":")[1]) for msg in report.problems]
    assert lines == [2, 3, 4, 5, 6, 7]
    assert "6 skipped" in report.summary()


def test_labels_mask_the_prompt(tokenizer):
    cfg = tiny_cfg("data.max_length=256")
    rows, _ = rows_from_records([chat_row("How much is the Aster tent?", "KESTREL SAYS: 35 euros.")])
    (ex,), _ = encode_rows(rows, tokenizer, cfg.data, system_prompt=SYSTEM)
    labels = ex.labels
    assert len(labels) == len(ex.input_ids)
    first = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
    # every prompt token is ignored, every token after the first answer token is trained on
    assert all(t == IGNORE_INDEX for t in labels[:first])
    assert all(t != IGNORE_INDEX for t in labels[first:])
    prompt = tokenizer.decode(ex.input_ids[:first])
    answer = tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert SYSTEM in prompt and "How much is the Aster tent?" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert answer.startswith("KESTREL SAYS: 35 euros.")
    assert answer.strip().endswith("<|im_end|>")  # the model also learns to stop


def test_training_rendering_equals_inference_rendering(tokenizer):
    """The prompt part of a training example is byte-identical to what inference renders."""
    from hybrid.chat import encode_rendered, render_chat

    cfg = tiny_cfg("data.max_length=256")
    msgs = [{"role": "user", "content": "Is the Birch Pro backpack waterproof?"}]
    rows, _ = rows_from_records([{"messages": msgs + [{"role": "assistant", "content": "Yes."}]}])
    (ex,), _ = encode_rows(rows, tokenizer, cfg.data, system_prompt=SYSTEM)
    first = ex.loss_mask.index(True)
    inference_ids = encode_rendered(tokenizer, render_chat(tokenizer, msgs, SYSTEM, add_generation_prompt=True))
    assert ex.input_ids[:first] == inference_ids


def test_multi_turn_trains_every_assistant_turn(tokenizer):
    cfg = tiny_cfg("data.max_length=256")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
            {"role": "user", "content": "Price?"}, {"role": "assistant", "content": "Ten euros."}]
    rows, _ = rows_from_records([{"messages": msgs}])
    (ex,), _ = encode_rows(rows, tokenizer, cfg.data, system_prompt=SYSTEM)
    trained = tokenizer.decode([t for t in ex.labels if t != IGNORE_INDEX])
    assert "Hello there." in trained and "Ten euros." in trained
    assert "Price?" not in trained and "Hi" not in trained.replace("Hello", "")


def test_text_rows_train_every_token_in_windows(tokenizer):
    cfg = tiny_cfg("data.max_length=16")
    rows, _ = rows_from_records([{"text": " ".join(f"word{i}" for i in range(40)), "id": "d1"}])
    exs, _ = encode_rows(rows, tokenizer, cfg.data)
    assert len(exs) > 1 and all(len(e) <= 16 for e in exs)
    assert all(all(e.loss_mask) for e in exs)
    assert sum(len(e) for e in exs) == len(tokenizer(rows[0].text, add_special_tokens=False)["input_ids"]) + 1


@pytest.mark.parametrize("policy", ["truncate", "skip"])
def test_row_longer_than_the_context(tokenizer, policy):
    cfg = tiny_cfg("data.max_length=48", f"data.overlong={policy}")
    long_answer = " ".join(["very"] * 200) + " long."
    rows, _ = rows_from_records([chat_row("short?", "Short."), chat_row("long?", long_answer)])
    exs, report = encode_rows(rows, tokenizer, cfg.data, system_prompt=SYSTEM)
    if policy == "truncate":
        assert len(exs) == 2 and len(exs[1]) == 48 and report.truncated == 1
        assert exs[1].n_targets > 0
    else:
        assert len(exs) == 1 and report.skipped["too_long"] == 1
        assert "over data.max_length=48" in report.problems[0]


def test_prompt_longer_than_the_context_is_skipped_even_when_truncating(tokenizer):
    cfg = tiny_cfg("data.max_length=24", "data.overlong=truncate")
    rows, _ = rows_from_records([chat_row(" ".join(["question"] * 100), "Answer.")])
    exs, report = encode_rows(rows, tokenizer, cfg.data, system_prompt=SYSTEM)
    assert exs == [] and report.skipped["too_long"] == 1 and "prompt alone" in report.problems[0]


def test_split_by_source_keeps_documents_whole_and_is_deterministic():
    rows, _ = rows_from_records([chat_row(f"q{i}", f"a{i}", source=f"doc{i % 10}") for i in range(100)])
    tr, ev = split_by_source(rows, 0.3, seed=1)
    assert tr and ev and len(tr) + len(ev) == 100
    assert not {r.source for r in tr} & {r.source for r in ev}
    tr2, ev2 = split_by_source(list(reversed(rows)), 0.3, seed=1)
    assert {r.source for r in ev2} == {r.source for r in ev}
    # a document added later does not move existing ones
    more, _ = rows_from_records([chat_row("q", "a", source="doc-new")])
    _, ev3 = split_by_source(rows + more, 0.3, seed=1)
    assert {r.source for r in ev} <= {r.source for r in ev3}


def test_empty_and_all_invalid_datasets_are_clear_errors(tmp_path, tokenizer, tiny_model):
    from hybrid.tuning.trainer import train

    empty = write_rows(tmp_path / "empty.jsonl", [])
    with pytest.raises(InputError, match="the dataset is empty"):
        train(tiny_cfg(), [empty], None, model=tiny_model, tokenizer=tokenizer)
    bad = write_rows(tmp_path / "bad.jsonl", [{"foo": 1}, chat_row("q", ""), "nope"])
    with pytest.raises(InputError, match=r"all 3 rows .* are invalid; first problem: .*bad.jsonl:1: missing_field"):
        train(tiny_cfg(), [bad], None, model=tiny_model, tokenizer=tokenizer)
