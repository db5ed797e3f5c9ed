"""The ask / chat / app init / router train commands, on a test app with fake components."""

from __future__ import annotations

import json

import pytest

from hybrid.cli import main
from tests.core.conftest import DOCS, write_app


@pytest.fixture
def cli_app(tmp_path):
    """An app the CLI can build on its own: hash embedder, scripted model, a tiny corpus."""
    root = write_app(tmp_path / "cliapp")
    (root / "corpus").mkdir()
    for i, (text, md) in enumerate(DOCS):
        (root / "corpus" / md["source"]).write_text(text + "\n")
    text = (root / "app.yaml").read_text().replace(
        "knowledge_base:\n", f"knowledge_base:\n  sources: [corpus]\n  path: {tmp_path / 'kb'}\n")
    (root / "app.yaml").write_text(text)
    return root


def run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def run_ok(capsys, *args):
    try:
        main(list(args))
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr()
    return capsys.readouterr().out


def test_app_init_scaffolds_a_loadable_app(tmp_path, capsys):
    out = run_ok(capsys, "app", "init", "myapp", "--dir", str(tmp_path / "myapp"))
    assert "created" in out
    for f in ("app.yaml", "examples.jsonl", "tune.jsonl", "questions.jsonl", "corpus"):
        assert (tmp_path / "myapp" / f).exists()
    assert "# " in (tmp_path / "myapp" / "app.yaml").read_text()  # commented
    code, _, err = run(capsys, "app", "init", "myapp", "--dir", str(tmp_path / "myapp"))
    assert code == 2 and "not empty" in err
    code, _, err = run(capsys, "app", "init", "bad name!", "--dir", str(tmp_path / "x"))
    assert code == 2 and "app name" in err


def test_ask_errors_are_one_line(capsys, cli_app, tmp_path):
    code, _, err = run(capsys, "ask", "", "--app", str(cli_app))
    assert code == 2 and err.strip() == "error: query is empty: ask a question"
    code, _, err = run(capsys, "ask", "hi", "--app", str(tmp_path / "nowhere"))
    assert code == 2 and err.startswith("error: app not found") and len(err.strip().splitlines()) == 1


def test_ask_json_and_text(capsys, cli_app):
    out = run_ok(capsys, "ask", "What is the lease notice period?", "--app", str(cli_app), "--json")
    d = json.loads(out)
    assert d["strategy"] in ("rag", "tuned_rag", "extract") and d["citations"][0]["source"]
    assert d["decision"]["reason"]
    out = run_ok(capsys, "ask", "What is the lease notice period?", "--app", str(cli_app), "-S", "tuned")
    assert "route: tuned" in out and "reason: tuned: fixed by request" in out and "timings:" in out


def test_router_train_writes_a_model_the_app_then_uses(capsys, cli_app, tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [{"query": f"What is the lease notice period for case {i}?", "scores": {"rag": 0.9, "few_shot": 0.2}}
            for i in range(6)]
    rows += [{"query": f"Draft a polite reminder number {i}", "scores": {"rag": 0.1, "few_shot": 0.8}}
             for i in range(6)]
    rows += [{"nonsense": True}]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_ok(capsys, "router", "train", "--from", str(labels), "--app", str(cli_app), "--json")
    report = json.loads(out)
    assert report["rows"] == 12 and report["skipped_rows"] == 1
    oof = report["out_of_fold"]  # each question routed by a model trained without it
    assert oof["questions"] == 12 and oof["fixed"] == {"few_shot": 0.5, "rag": 0.5} and oof["oracle"] == 0.85
    assert oof["learned"] > 0.5 and oof["vs_best_fixed"]["diff"] > 0
    assert (cli_app / "router.json").is_file()
    out = run_ok(capsys, "ask", "What is the lease notice period?", "--app", str(cli_app), "--router", "learned",
                 "--json")
    assert "learned" in json.loads(out)["decision"]["reason"] or "unsure" in json.loads(out)["decision"]["reason"]


def test_router_train_reads_evaluation_rows(tmp_path):
    from hybrid.cli.router import read_labels

    q = tmp_path / "questions.jsonl"
    q.write_text(json.dumps({"id": "q1", "question": "What is the deposit cap?"}) + "\n")
    res = tmp_path / "results.jsonl"
    res.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": "q1", "strategy": "rag", "scores": {"primary": 0.8}},
        {"question_id": "q1", "strategy": "tuned", "scores": {"primary": 0.3}},
        {"question_id": "q1", "strategy": "auto", "routed_to": "rag", "scores": {"primary": 0.8}},
        {"question_id": "q2", "strategy": "rag", "scores": {"primary": 0.5}},  # unknown text: skipped
    ]) + "\n")
    queries, scores, skipped = read_labels(res, q)
    assert queries == ["What is the deposit cap?"] and scores == [{"rag": 0.8, "tuned": 0.3}] and skipped == 2


def test_router_trained_for_another_app_is_refused_by_ask(capsys, cli_app, tmp_path):
    from hybrid.routing.learned import train_learned
    from indexes.embed import HashEmbedder
    import numpy as np

    X = np.random.default_rng(0).normal(size=(6, 256 + 9))
    router, _ = train_learned(X, [{"rag": 1.0, "tuned": 0.0}, {"rag": 0.0, "tuned": 1.0}] * 3,
                              app_name="shopping", embedder=HashEmbedder(256))
    router.save(cli_app / "router.json")
    code, _, err = run(capsys, "ask", "What is the lease notice period?", "--app", str(cli_app), "-r", "learned")
    assert code == 2 and "trained for app 'shopping', not 'testapp'" in err


def test_chat_streams_and_keeps_history(capsys, cli_app, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("What is the lease notice period?\n/why\n\n/strategy tuned\n"
                                                 "and for commercial tenants?\n/quit\n"))
    out = run_ok(capsys, "chat", "--app", str(cli_app))
    assert out.count("bot> ") == 2
    assert "[tuned] bot> [cliapp]" in out or "[tuned] bot> [testapp]" in out
    assert "(strategy: tuned)" in out


def test_main_job_runs_end_to_end_with_fakes(cli_app, capsys):
    """What `make demo` runs (hybrid.demo.run_main_job: ingest -> KB -> adapter reuse -> routed answers),
    on the fake-backed test app."""
    from hybrid.app import load_app
    from hybrid.demo import run_main_job

    answers = run_main_job(load_app(cli_app), questions=["What is the lease notice period?",
                                                          "Draft a reminder that rent is due"])
    text = capsys.readouterr().out
    assert "1/4 Ingest" in text and "3 documents from 3 files" in text
    assert "2/4 Knowledge base" in text and "search (hybrid): " in text
    assert "3/4 Adapter" in text and "reused the cached adapter" in text and "with adapter: " in text
    assert "4/4 Answers through the router" in text
    assert len(answers) == 2 and all(a.decision and a.decision.reason for a in answers)
    assert text.count("    Q: ") == 3 and "route: " in text and "lease.md" in text


def test_app_show_reports_paths_and_adapter_state(capsys, cli_app):
    out = run_ok(capsys, "app", "show", str(cli_app))
    assert "app: testapp (Test Helper)" in out and "examples: 4" in out and "(present)" in out
