"""Reader training data: bad rows are counted skips reported by line/id, v2 no-answer rows are kept,
long contexts are windowed, an empty file is one clear error (and exit 2 in the CLI)."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from hybrid.reader.train import load_qa, make_features, split_rows

CTX = "Rent is due on the first day of each month. Late fees are 5 percent."


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_bad_rows_are_counted_by_line_with_reason(tmp_path):
    f = _jsonl(tmp_path / "qa.jsonl", [
        {"question": "When is rent due?", "context": CTX, "answer": "the first day of each month"},
        {"question": "How much are late fees?", "context": CTX, "answer": "12 percent"},           # not in context
        {"question": "When is rent due?", "context": CTX, "answer": "first day", "answer_start": 3},  # wrong offset
        {"question": "  ", "context": CTX, "answer": "5 percent"},                                  # empty question
        {"question": "How much are late fees?", "context": CTX, "answer": "5 percent", "answer_start": CTX.index("5 percent")},
    ])
    rows, report = load_qa([f])
    assert [r.answer for r in rows] == ["the first day of each month", "5 percent"]
    assert rows[0].start == CTX.index("the first day")  # found in the context when answer_start is missing
    assert report.skipped == {"answer not found in context": ["qa.jsonl:2"],
                              "text at answer_start does not match the answer": ["qa.jsonl:3"],
                              "empty question": ["qa.jsonl:4"]}
    assert report.to_dict()["skipped"] == 3


def test_squad_v2_rows_without_answers_are_kept_as_no_answer(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "lease", "paragraphs": [{"context": CTX, "qas": [
        {"id": "q1", "question": "When is rent due?", "answers": [{"text": "the first day of each month",
                                                                 "answer_start": CTX.index("the first")}]},
        {"id": "q2", "question": "Who is the landlord?", "answers": [], "is_impossible": True},
        {"id": "q3", "question": "How much?", "answers": [{"text": "5 percent", "answer_start": 0}]},
    ]}]}]}
    f = tmp_path / "squad.json"
    f.write_text(json.dumps(squad))
    rows, report = load_qa([f])
    assert [(r.id, r.start is None) for r in rows] == [("q1", False), ("q2", True)]
    assert report.unanswerable == 1 and report.kept == 2
    assert report.skipped == {"text at answer_start does not match the answer": ["squad.json#q3"]}


def test_long_context_is_windowed_and_the_answer_still_found(tmp_path):
    from transformers import AutoTokenizer

    from hybrid.reader.model import default_base

    filler = " ".join(f"Clause {i} says nothing of interest here." for i in range(60))
    ctx = filler + " The deposit is returned within 14 days. " + filler
    f = _jsonl(tmp_path / "long.jsonl", [{"question": "When is the deposit returned?", "context": ctx,
                                          "answer": "within 14 days"}])
    rows, _ = load_qa([f])
    tok = AutoTokenizer.from_pretrained(str(default_base()))
    feats = make_features(tok, rows, max_length=128, stride=32)
    assert len(feats) > 5  # one context, many windows
    hits = [ft for ft in feats if ft["start_positions"] > 0]
    assert hits, "no window holds the answer"
    for ft in hits:
        span = tok.decode(ft["input_ids"][ft["start_positions"]:ft["end_positions"] + 1])
        assert span == "within 14 days"
    # windows without the whole answer are trained to point at [CLS]
    assert sum(ft["start_positions"] == 0 for ft in feats) == len(feats) - len(hits)


def test_empty_file_is_one_line_error(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    with pytest.raises(InputError, match="empty.jsonl: the file is empty") as e:
        load_qa([f])
    assert "\n" not in str(e.value)


def test_all_rows_bad_is_one_line_error(tmp_path):
    f = _jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "context": CTX, "answer": "nowhere"}])
    with pytest.raises(InputError, match="no usable question/answer rows .*answer not found in context: 1"):
        load_qa([f])


def test_cli_empty_file_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    p = subprocess.run([sys.executable, "-m", "hybrid", "tune", "reader", "--data", str(f), "--out",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {f}: the file is empty (no question/answer rows)"]


def test_eval_split_is_by_title_never_by_question(tmp_path):
    rows = [r for t in range(10) for r in load_qa([_jsonl(tmp_path / f"t{t}.jsonl", [
        {"question": f"Q{q} about {t}?", "context": f"Topic {t}: answer {q}.", "answer": f"answer {q}",
         "title": f"title-{t}"} for q in range(3)])])[0]]
    train, ev = split_rows(rows, 0.2, seed=0)
    assert ev and train
    assert not {r.title for r in train} & {r.title for r in ev}
    assert split_rows(rows, 0.2, seed=0)[1] == ev  # seeded


def test_negatives_keep_every_answer_window_and_n_answerless_ones(tmp_path):
    from transformers import AutoTokenizer

    from hybrid.reader.model import default_base

    filler = " ".join(f"Clause {i} says nothing of interest here." for i in range(60))
    ctx = filler + " The deposit is returned within 14 days. " + filler
    f = _jsonl(tmp_path / "long.jsonl", [
        {"question": "When is the deposit returned?", "context": ctx, "answer": ["within 14 days"]},
        {"question": "Is there a pool?", "context": ctx, "answer": [], "unanswerable": True}])
    rows, report = load_qa([f])
    assert len(rows) == 2  # the question format's answer list and its unanswerable flag are understood
    tok = AutoTokenizer.from_pretrained(str(default_base()))
    every = make_features(tok, rows, max_length=128, stride=32)
    some = make_features(tok, rows, max_length=128, stride=32, negatives=1)
    pos = [ft for ft in every if ft["start_positions"] > 0]
    assert pos and [ft for ft in some if ft["start_positions"] > 0] == pos
    per_row = {r: sum(1 for ft in some if ft["row"] == r and ft["start_positions"] == 0) for r in (0, 1)}
    assert per_row == {0: 1, 1: 1} and len(every) > len(some) + 10
