import json

import pytest

from core.errors import InputError
from hybrid.eval.data import load_questions
from tests.conftest import SHARED


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_jsonl_rows_load_with_several_references(tmp_path):
    p = write(tmp_path, "q.jsonl", json.dumps({"id": "a", "question": "How long?", "answer": ["30 days", "thirty days"],
                                               "type": "retrieval", "relevant_docs": ["lease.md"]}) + "\n")
    qs = load_questions(p)
    q = qs.questions[0]
    assert q.answers == ["30 days", "thirty days"] and q.type == "retrieval" and q.relevant_docs == ["lease.md"]
    assert qs.flagged == []


def test_empty_question_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="empty question file"):
        load_questions(write(tmp_path, "q.jsonl", ""))
    with pytest.raises(InputError, match="empty question file"):
        load_questions(write(tmp_path, "q2.jsonl", "\n\n"))


def test_row_without_reference_is_flagged_not_dropped(tmp_path):
    rows = [{"id": "1", "question": "a?", "answer": "x"}, {"id": "2", "question": "b?"}]
    qs = load_questions(write(tmp_path, "q.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    assert len(qs.questions) == 2
    assert qs.flagged == [("2", "no_reference")]
    assert "no_reference" in qs.questions[1].flags


def test_unanswerable_rows_are_not_flagged(tmp_path):
    row = {"id": "u", "question": "What is the fee on Mars?", "answer": "", "tags": ["unanswerable"]}
    qs = load_questions(write(tmp_path, "q.jsonl", json.dumps(row) + "\n"))
    assert qs.questions[0].unanswerable and qs.flagged == []


def test_duplicate_ids_are_refused(tmp_path):
    rows = [{"id": "1", "question": "a?", "answer": "x"}, {"id": "1", "question": "b?", "answer": "y"}]
    with pytest.raises(InputError, match="duplicate question ids: 1"):
        load_questions(write(tmp_path, "q.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))


def test_bad_json_line_names_the_line(tmp_path):
    with pytest.raises(InputError, match=r"q\.jsonl:2: invalid JSON"):
        load_questions(write(tmp_path, "q.jsonl", '{"question": "a?", "answer": "x"}\n{oops\n'))


def test_squad_v2_contexts_become_documents(tmp_path):
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "The sky is blue.", "qas": [
        {"id": "q1", "question": "What colour is the sky?", "answers": [{"text": "blue", "answer_start": 11}]},
        {"id": "q2", "question": "What colour is grass?", "answers": [], "is_impossible": True},
    ]}]}]}
    qs = load_questions(write(tmp_path, "s.json", json.dumps(data)))
    assert len(qs.documents) == 1 and qs.documents[0].text == "The sky is blue."
    assert qs.questions[0].relevant_doc_ids == [qs.documents[0].id]
    assert qs.questions[1].unanswerable and qs.flagged == []


def test_squad_file_given_by_a_relative_path(tmp_path, monkeypatch):
    data = {"data": [{"paragraphs": [{"context": "Rain is wet.", "qas": [
        {"id": "q1", "question": "Is rain wet?", "answers": [{"text": "wet"}]}]}]}]}
    write(tmp_path, "rel.json", json.dumps(data))
    monkeypatch.chdir(tmp_path)
    qs = load_questions("rel.json")  # the documents' URIs need an absolute path
    assert qs.documents[0].metadata["uri"] == (tmp_path / "rel.json").as_uri() + "#0-0"


def test_shared_covidqa_loads():
    path = SHARED / "data" / "covidqa" / "covidqa-squad2.json"
    if not path.is_file():
        pytest.skip("shared COVID-QA not present")
    qs = load_questions(path)
    assert len(qs.questions) == 1380
    assert len(qs.documents) == 98
    ids = {d.id for d in qs.documents}
    assert all(q.relevant_doc_ids[0] in ids for q in qs.questions)
