"""``hybrid router train`` prints the comparison table, and says in words why rows were skipped."""

import json

from hybrid.cli import main
from hybrid.cli.router import explain_skipped, read_labels
from tests.core.conftest import write_app


def eval_rows(n=12):
    rows = []
    for i in range(n):
        style = i % 2 == 0
        q = f"Draft a polite reminder number {i}" if style else f"What is the lease notice period for case {i}?"
        for st, sc in (("rag", 0.2 if style else 0.9), ("few_shot", 0.8 if style else 0.1)):
            rows.append({"question_id": f"q{i}", "question": q, "strategy": st, "scores": {"primary": sc}})
        for st in ("auto", "learned_cv", "langchain"):
            rows.append({"question_id": f"q{i}", "question": q, "strategy": st, "routed_to": "rag",
                         "scores": {"primary": 0.5}})
    for i in range(2):  # a question without a reference: its F1 labels nothing
        rows.append({"question_id": f"n{i}", "question": "Tell me about deposits", "strategy": "rag",
                     "flags": ["no_reference"], "scores": {"primary": 0.0}})
    return rows


def test_skipped_rows_are_explained(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in eval_rows()))
    reasons = {}
    queries, scores, skipped = read_labels(p, None, reasons)
    assert len(queries) == 12 and skipped == 12 * 3 + 2
    assert reasons == {"router:auto": 12, "router:learned_cv": 12, "router:langchain": 12, "no reference": 2}
    assert explain_skipped(reasons) == ("38 rows skipped: 36 are router or baseline rows (auto 12, langchain 12, "
                                        "learned_cv 12), whose answers are another strategy's, "
                                        "2 had no reference answer")


def test_router_train_prints_a_table_and_json_on_request(tmp_path, capsys):
    app = write_app(tmp_path / "app")
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in eval_rows()))
    try:
        main(["router", "train", "--from", str(p), "--app", str(app)])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "learned router fitted on 12 labelled questions" in out
    assert "38 rows skipped: 36 are router or baseline rows" in out
    for line in ("learned router (oof)", "best fixed: ", "oracle", "learned - ", "p ", "routes: "):
        assert line in out, out
    assert not out.lstrip().startswith("{")
    try:
        main(["router", "train", "--from", str(p), "--app", str(app), "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["skipped_rows"] == 38 and report["skipped_reasons"]["no reference"] == 2
