"""``hybrid app import``: a SQuAD file becomes an app with corpus, split questions, examples and tune rows."""

import json

import pytest

from hybrid.cli import main
from core.errors import InputError
from hybrid.eval.data import load_questions, select_titles
from hybrid.eval.importer import import_qa, parse_split, read_qa_file
from tests.conftest import SHARED


def squad(titles=("alpha", "beta", "gamma", "delta", "epsilon"), per=4, v2=False):
    data = []
    for t in titles:
        paras = []
        for p in range(2):
            ctx = f"{t} policy paragraph {p}. We keep data for {p + 10} days. Contact {t}@example.com."
            qas = [{"id": f"{t}-{p}-{i}", "question": f"How long does {t} keep data ({p}/{i})?",
                    "answers": [{"text": f"{p + 10} days", "answer_start": ctx.index(f"{p + 10} days")}]}
                   for i in range(per // 2)]
            if v2:
                qas.append({"id": f"{t}-{p}-u", "question": f"Does {t} sell data?", "answers": [],
                            "is_impossible": True})
            paras.append({"context": ctx, "qas": qas})
        data.append({"title": t, "paragraphs": paras})
    return {"version": "v2.0" if v2 else "1.1", "data": data}


def write(tmp_path, obj, name="data.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj, encoding="utf-8")
    return p


def run(capsys, *args):
    """(exit code, stdout, stderr) of the real entry point, which maps errors to one line + exit 2."""
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_import_writes_corpus_and_a_split_by_title(tmp_path, capsys):
    code, output, err = run(capsys, "app", "import", str(tmp_path / "pol"), "--data", str(write(tmp_path, squad())))
    assert code == 0, err
    app = tmp_path / "pol"
    assert sorted(p.name for p in (app / "corpus").iterdir()) == [f"{t}.txt" for t in
                                                                   sorted(["alpha", "beta", "gamma", "delta", "epsilon"])]
    assert (app / "corpus" / "alpha.txt").read_text().count("\n\n") == 1  # two paragraphs, one blank line
    splits = {s: rows(app / "questions" / f"{s}.jsonl") for s in ("train", "dev", "test")}
    titles = {s: {r["title"] for r in rs} for s, rs in splits.items()}
    assert all(titles.values()) and not (titles["train"] & titles["test"]) and not (titles["dev"] & titles["test"])
    assert sum(len(v) for v in splits.values()) == 20
    r = splits["test"][0]
    assert r["relevant_docs"] == [f"{r['title']}.txt"] and r["answer"] and r["context"][r["answer_start"]:].startswith(r["answer"][0])
    train_q = {r["question"] for r in splits["train"]}
    assert {r["question"] for r in rows(app / "examples.jsonl")} <= train_q
    assert {r["question"] for r in rows(app / "tune.jsonl")} == train_q
    assert "test  " in output and "titles:" in output
    readme = (app / "README.md").read_text()
    assert "hybrid tune reader --app" in readme and "hybrid app fit" in readme and "questions/test.jsonl" in readme
    # the written questions load as eval questions, with titles to select on
    qs = load_questions(app / "questions" / "test.jsonl")
    assert {q.title for q in qs.questions} == titles["test"]
    # a second import into the filled app needs --force
    code, _, err = run(capsys, "app", "import", str(app), "--data", str(write(tmp_path, squad())))
    assert code == 2 and "--force" in err


def test_split_is_seeded(tmp_path):
    a = import_qa(write(tmp_path, squad()), tmp_path / "a", seed=3)
    b = import_qa(write(tmp_path, squad()), tmp_path / "b", seed=3)
    assert a.titles == b.titles


def test_fewer_than_three_titles_split_by_question_and_say_so(tmp_path):
    rep = import_qa(write(tmp_path, squad(titles=("alpha", "beta"), per=6)), tmp_path / "app")
    assert rep.split_by == "question"
    assert "only 2 title(s)" in rep.split_note and "empty" in rep.split_note
    assert all(rep.questions[s] > 0 for s in ("train", "dev", "test"))


def test_bad_spans_are_fixed_or_skipped_and_unanswerable_rows_kept(tmp_path):
    data = squad(v2=True)
    qa = data["data"][0]["paragraphs"][0]["qas"]
    qa[0]["answers"][0]["answer_start"] = 0  # text occurs elsewhere in the context: fixed
    qa[1]["answers"][0]["text"] = "never mentioned"  # nowhere in the context: skipped
    rep = import_qa(write(tmp_path, data), tmp_path / "app")
    assert rep.fixed_spans == ["id alpha-0-0"]
    assert rep.skipped["answer not in its context"] == ["id alpha-0-1"]
    assert rep.unanswerable == 10
    text = "\n".join(rep.summary())
    assert "fixed 1 answer_start" in text and "skipped 1 (answer not in its context): id alpha-0-1" in text
    every = [r for s in ("train", "dev", "test") for r in rows(tmp_path / "app" / "questions" / f"{s}.jsonl")]
    fixed = next(r for r in every if r["id"] == "alpha-0-0")
    assert fixed["context"][fixed["answer_start"]:].startswith("10 days")
    assert sum(1 for r in every if r.get("unanswerable")) == 10
    assert all(r["answer"] for r in rows(tmp_path / "app" / "tune.jsonl"))


def test_jsonl_rows_missing_fields_are_counted_with_line_numbers(tmp_path):
    lines = [{"question": f"q{i}?", "context": f"ctx {i} says yes", "answer": "yes", "title": f"t{i % 3}"}
             for i in range(6)]
    lines.insert(2, {"question": "no context?", "answer": "x"})
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    rows_, rep = read_qa_file(write(tmp_path, text, "d.jsonl"))
    assert len(rows_) == 6
    assert rep.skipped["missing context"] == ["line 3"] and rep.skipped["invalid JSON"] == ["line 8"]


def test_jsonl_line_numbers_with_blank_lines_crlf_and_a_line_separator_inside_a_string(tmp_path):
    ok = {"question": "q?", "context": "the answer is yes", "answer": "yes"}
    sep = dict(ok, context="the answer\u2028is yes")  # U+2028 inside a JSON string does not end the line
    text = "\r\n".join([json.dumps(ok), "", json.dumps(sep, ensure_ascii=False), "[1, 2]", "{bad", json.dumps(ok)]) + "\r\n"
    rows_, rep = read_qa_file(write(tmp_path, text, "d.jsonl"))
    assert [r.where for r in rows_] == ["line 1", "line 3", "line 6"]
    assert rows_[1].context == "the answer\u2028is yes"
    assert rep.skipped == {"not a JSON object": ["line 4"], "invalid JSON": ["line 5"]}


def test_empty_file_and_bad_split_are_one_line_errors(tmp_path, capsys):
    code, _, err = run(capsys, "app", "import", str(tmp_path / "x"), "--data", str(write(tmp_path, "", "e.json")))
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing is written for a bad file
    with pytest.raises(InputError, match="sum to 1"):
        parse_split("0.5,0.2,0.2")


def test_titles_select_and_exclude_and_shrink_a_squad_kb(tmp_path):
    p = write(tmp_path, squad())
    qs = load_questions(p)
    sel = select_titles(qs, ["alpha", "beta"])
    assert {q.title for q in sel.questions} == {"alpha", "beta"} and len(sel.documents) == 4
    ex = select_titles(qs, exclude=["alpha"])
    assert "alpha" not in {q.title for q in ex.questions} and len(ex.documents) == 8
    with pytest.raises(InputError, match="unknown title 'zeta'"):
        select_titles(qs, ["zeta"])


@pytest.mark.skipif(not (SHARED / "data" / "policyqa" / "policyqa-dev.json").is_file(), reason="no PolicyQA")
def test_policyqa_imports(tmp_path):
    rep = import_qa(SHARED / "data" / "policyqa" / "policyqa-dev.json", tmp_path / "pol")
    assert rep.articles == 20 and rep.split_by == "title" and sum(rep.questions.values()) == 3809


def test_imported_app_evaluates_with_titles_and_retrieval_hits(tmp_path, capsys):
    """The new user's path: import, then eval the test split (fakes: hash embedder, scripted generator)."""
    app = tmp_path / "pol"
    assert run(capsys, "app", "import", str(app), "--data", str(write(tmp_path, squad())))[0] == 0
    kb = f"--set=knowledge_base.path={tmp_path / 'kb'}"
    test_rows = rows(app / "questions" / "test.jsonl")
    title = test_rows[0]["title"]
    code, out, err = run(capsys, "eval", "--app", str(app), "--questions", str(app / "questions" / "test.jsonl"),
                         "--strategies", "rag", "--out", str(tmp_path / "rep"), "--titles", title,
                         "--set", "knowledge_base.embedder=hash:256", "--set", "generation.model=scripted", kb)
    assert code == 0, err
    assert "titles: kept" in err
    assert "Retrieval hit@1" in out and "over 4 questions with known sources" in out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["retrieval"]["n"] == 4 and summary["retrieval"]["hit@k"] > 0
    res = [json.loads(x) for x in (tmp_path / "rep" / "results.jsonl").read_text().splitlines()]
    assert {r["question_id"] for r in res} == {r["id"] for r in test_rows if r["title"] == title}
    assert all("retrieval_hit" in r for r in res)


def test_scope_document_gives_every_question_a_filter_on_its_own_article(tmp_path):
    import_qa(write(tmp_path, squad()), tmp_path / "app", scope="document")
    qs = load_questions(tmp_path / "app" / "questions" / "train.jsonl").questions
    assert qs and all(q.filter == {"source": q.relevant_docs[0]} for q in qs)
    assert (tmp_path / "app" / "corpus" / qs[0].relevant_docs[0]).is_file()
    import_qa(write(tmp_path, squad()), tmp_path / "plain")  # the default leaves questions unscoped
    assert all(q.filter is None for q in load_questions(tmp_path / "plain" / "questions" / "train.jsonl").questions)
    with pytest.raises(InputError, match="scope must be"):
        import_qa(write(tmp_path, squad()), tmp_path / "bad", scope="page")
