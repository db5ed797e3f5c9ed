"""``hybrid app fit``: evaluate, train the learned router, switch app.yaml to it only when it wins out of fold."""

from __future__ import annotations

import json

import pytest

import hybrid.cli.router as router_cli
from hybrid.app import load_app
from hybrid.cli.app_fit import switch_verdict
from tests.core.test_cli import cli_app, run, run_ok  # noqa: F401  (fixture)

FACTS = [("What is the lease notice period?", "60 days"),
         ("When must security deposits be returned?", "within 14 days after the tenancy ends"),
         ("How long are warranty claims on appliances handled?", "within 30 days")]


def questions(tmp_path, n=12):
    rows = []
    for i in range(n):
        q, a = FACTS[i % len(FACTS)]
        rows.append({"id": f"q{i}", "question": f"{q} (case {i})", "answer": a, "type": "retrieval"})
    p = tmp_path / "dev.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_verdict_needs_the_ci_lower_bound_above_minus_margin():
    oof = {"learned": 0.30, "fixed": {"rag": 0.29}, "vs_best_fixed": {"strategy": "rag", "diff": 0.01,
                                                                         "ci95": [-0.005, 0.03], "p": 0.4}}
    assert switch_verdict(oof, 0.01)[0]
    oof["vs_best_fixed"]["ci95"] = [-0.05, 0.02]
    ok, why = switch_verdict(oof, 0.01)
    assert not ok and "lower bound -0.050 < -0.01" in why
    assert not switch_verdict({"skipped": "cross-validation needs at least 10"}, 0.01)[0]


def test_app_fit_evaluates_trains_and_switches(tmp_path, capsys, cli_app):  # noqa: F811
    text = (cli_app / "app.yaml").read_text() + "router:\n  kind: rules    # my comment\n  model: router.json\n"
    (cli_app / "app.yaml").write_text(text)
    out = run_ok(capsys, "app", "fit", str(cli_app), "--questions", str(questions(tmp_path)),
                 "--out", str(tmp_path / "fit"), "--strategies", "few_shot,extract,rag,tuned")
    assert "evaluated 12 questions" in out
    for line in ("learned router (oof)", "best fixed: ", "oracle", "learned - "):
        assert line in out, out
    assert "switched router.kind: learned" in out, out
    assert (cli_app / "router.json").is_file() and (tmp_path / "fit" / "results.jsonl").is_file()
    app_text = (cli_app / "app.yaml").read_text()
    assert "kind: learned" in app_text and "# my comment" in app_text
    assert load_app(cli_app).router.kind == "learned"
    rows = [json.loads(x) for x in (tmp_path / "fit" / "results.jsonl").read_text().splitlines()]
    assert all(r["confidence"] is not None for r in rows if r["strategy"] == "extract")  # fit-rules reads these
    # a second run from those labels only: nothing to change
    out = run_ok(capsys, "app", "fit", str(cli_app), "--router-only", "--from", str(tmp_path / "fit" / "results.jsonl"),
                 "--out", str(tmp_path / "fit2"))
    assert "kept router.kind: learned" in out


def test_app_fit_does_not_switch_when_the_learned_router_loses(tmp_path, capsys, cli_app, monkeypatch):  # noqa: F811
    def losing(*a, **kw):
        return {"questions": 12, "learned": 0.2, "learned_ci95": [0.1, 0.3], "fixed": {"rag": 0.4, "few_shot": 0.1},
                "oracle": 0.5, "vs_best_fixed": {"strategy": "rag", "diff": -0.2, "ci95": [-0.3, -0.1], "p": 0.01},
                "routes": {"rag": 4, "few_shot": 8}}

    monkeypatch.setattr(router_cli, "out_of_fold_report", losing)
    before = (cli_app / "app.yaml").read_text()
    qfile = questions(tmp_path)
    out = run_ok(capsys, "app", "fit", str(cli_app), "-q", str(qfile), "-o", str(tmp_path / "fit"),
                 "--strategies", "few_shot,rag")
    assert "kept router.kind: rules" in out and "lower bound -0.300 < -0.01" in out, out
    assert (cli_app / "app.yaml").read_text() == before and not (cli_app / "router.json").exists()
    assert (tmp_path / "fit" / "router.json").is_file()  # the candidate is kept for inspection
    out = run_ok(capsys, "app", "fit", str(cli_app), "--router-only", "--from", str(tmp_path / "fit" / "results.jsonl"),
                 "-o", str(tmp_path / "fit"), "--force")
    assert "switched router.kind: learned (forced: " in out and load_app(cli_app).router.kind == "learned"


def test_app_fit_errors_are_one_line(tmp_path, capsys, cli_app):  # noqa: F811
    code, _, err = run(capsys, "app", "fit", str(cli_app))
    assert code == 2 and "needs --questions" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "app", "fit", str(cli_app), "--router-only")
    assert code == 2 and "--router-only needs --from" in err
    code, _, err = run(capsys, "app", "fit", str(cli_app), "-q", "x.jsonl", "--strategies", "auto")
    assert code == 2 and "fixed strategies" in err


@pytest.mark.parametrize("text", ["name: x\nrouter: {kind: rules}\n"])
def test_flow_style_router_is_refused_not_mangled(tmp_path, text):
    from hybrid.cli.app_fit import set_router_kind
    from core.errors import ConfigError

    p = tmp_path / "app.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="by hand"):
        set_router_kind(p, "learned")
    assert p.read_text() == text
