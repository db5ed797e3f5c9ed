"""RAFT rows fit the tuner's budget, split sensibly with few documents, and come from the user's own Q/A."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from hybrid.cli.tune import cli
from core.errors import InputError
from hybrid.tuning.builders import (BuildReport, QAPair, build_raft, build_raft_from_qa, load_chunks, make_budget,
                                    read_qa_pairs)
from hybrid.tuning.data import encode_rows, rows_from_records, split_rows

LONG = " ".join(f"Clause {i} of the lease says the tenant must keep the flat in good order." for i in range(60))


def _docs(n_docs=2, per_doc=6):
    return [{"id": f"doc{d}", "text": "\n\n".join(f"# Part {d}-{k}\n\n{LONG}" for k in range(per_doc)),
             "metadata": {"source": f"doc{d}.md"}} for d in range(n_docs)]


def test_raft_rows_fit_the_budget_instead_of_being_dropped(tokenizer):
    from core.config import load_config
    from hybrid.tuning.config import TuneConfig

    chunks = load_chunks(_docs(), max_words=400)
    budget = make_budget(256, "You are a test assistant.", tokenizer)
    report = BuildReport()
    rows = build_raft(chunks, n_distractors=3, seed=0, budget=budget, report=report)
    assert len(rows) == len(chunks) and not report.skipped
    assert max(report.lengths) <= 256 and report.trimmed["distractor"] > 0
    cfg = load_config(TuneConfig, None, ["data.max_length=256", "data.overlong=skip"])
    parsed, rep = rows_from_records(rows)
    examples, rep = encode_rows(parsed, tokenizer, cfg.data, system_prompt="You are a test assistant.", report=rep)
    assert rep.skipped == {} and len(examples) == len(rows)  # nothing too long for the tuner
    for r in rows:  # the cited block still holds the (possibly trimmed) oracle with the answer
        answer = r["messages"][1]["content"]
        m = re.search(r"^(.*) \[(\d+)\]$", answer)
        if m:
            blocks = re.split(r"^\[\d+\] source: ", r["messages"][0]["content"], flags=re.M)[1:]
            assert " ".join(m.group(1).split()) in " ".join(blocks[int(m.group(2)) - 1].split())


def test_the_estimate_is_used_without_a_tokenizer():
    budget = make_budget(200, "Be brief.")
    assert not budget.exact and budget.count("one two three four five") == 7


def test_few_documents_split_by_row_and_every_document_keeps_training_rows():
    rows = [{"source": s, "i": i} for s in ("a", "b") for i in range(10)]
    train, evals, how = split_rows(rows, 0.2, seed=0, key=lambda r: r["source"])
    assert len(evals) == 4 and {r["source"] for r in evals} == {"a", "b"}
    assert {r["source"] for r in train} == {"a", "b"} and "by row" in how
    many = [{"source": f"d{k}", "i": i} for k in range(8) for i in range(3)]
    _, ev, how = split_rows(many, 0.25, seed=0, key=lambda r: r["source"])
    assert "by document" in how and all(sum(r["source"] == s for r in ev) in (0, 3) for s in {r["source"] for r in ev})


def _qa_file(tmp_path):
    ctxs = [f"The {w} policy says refunds take {n} days. " + LONG[:300] for w, n in
            (("refund", 14), ("shipping", 3), ("privacy", 30), ("cookie", 7))]
    rows = [{"question": f"How long do refunds take under the {w} policy?", "context": c,
             "answer": f"{n} days", "title": f"{w}.md", "id": f"q{i}"}
            for i, (w, n, c) in enumerate(zip(("refund", "shipping", "privacy", "cookie"), (14, 3, 30, 7), ctxs))]
    rows.append({"question": "What is the fee?", "context": ctxs[0], "answer": "99 euros", "id": "bad"})
    rows.append({"question": "Who is the CEO?", "context": ctxs[1], "answer": "", "id": "none"})
    p = tmp_path / "qa.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_raft_from_your_own_questions(tmp_path, tokenizer):
    report = BuildReport()
    pairs = read_qa_pairs(_qa_file(tmp_path), report)
    rows = build_raft_from_qa(pairs, n_distractors=2, oracle_fraction=1.0, dont_know="No idea.", seed=0,
                              budget=make_budget(400, "Be brief.", tokenizer), report=report)
    assert report.skipped == {"answer_not_in_context": 1} and "(id bad)" in report.problems[0]
    assert len(rows) == 5 and max(report.lengths) <= 400
    for r in rows[:4]:
        user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        n = int(re.search(r"\[(\d+)\]$", answer).group(1))
        assert re.search(rf"^\[{n}\] source: {r['source']}$", user, re.M)  # cites the oracle's number
        assert len(re.findall(r"^\[\d+\] source: ", user, re.M)) == 3      # oracle + 2 distractors
        assert answer.split(" [")[0] in user
    assert rows[4]["messages"][1]["content"] == "No idea." and not rows[4]["answerable"]


def test_a_broken_question_line_is_a_counted_skip(tmp_path):
    p = _qa_file(tmp_path)
    p.write_text(p.read_text() + "{not json\n")
    report = BuildReport()
    pairs = read_qa_pairs(p, report)
    assert len(pairs) == 6 and report.skipped == {"bad_json": 1}


def test_squad_v2_and_empty_files(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Cats sleep 16 hours a day.", "qas": [
        {"id": "a", "question": "How long do cats sleep?", "answers": [{"text": "16 hours", "answer_start": 11}]},
        {"id": "b", "question": "Do cats fly?", "answers": [], "is_impossible": True}]}]},
        {"title": "U", "paragraphs": [{"context": "Dogs bark.", "qas": []}]}]}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(squad))
    pairs = read_qa_pairs(p)
    assert [(q.answer, q.answer_start) for q in pairs] == [("16 hours", 11), (None, None)]
    rows = build_raft_from_qa(pairs, n_distractors=1, oracle_fraction=1.0, dont_know="Unknown.")
    assert rows[0]["messages"][1]["content"].startswith("16 hours [")
    assert rows[1]["messages"][1]["content"] == "Unknown."
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no questions"):
        read_qa_pairs(tmp_path / "e.jsonl")


def test_cli_build_raft_questions_prints_a_summary(tmp_path):
    out = tmp_path / "raft.jsonl"
    r = CliRunner().invoke(cli, ["build", "raft", "--questions", str(_qa_file(tmp_path)), "--out", str(out),
                                 "--set", "data.max_length=256", "--distractors", "2", "--dont-know", "No idea."])
    assert r.exit_code == 0, r.output
    assert "rows written: 5" in r.output and "budget data.max_length=256" in r.output
    assert "skipped: 1 (answer_not_in_context: 1)" in r.output
    assert len(out.read_text().splitlines()) == 5
