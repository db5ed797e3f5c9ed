"""Forgetting on the tiny random Llama: base vs base+adapter on general tasks, paired CIs; bad task sets."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from hybrid.tuning.forgetting import forgetting_markdown, general_tasks, measure_forgetting
from hybrid.tuning.trainer import train
from tests.tuning.conftest import make_tiny_model, tiny_cfg, write_rows


@pytest.fixture
def tasks_file(tmp_path):
    rows = [{"id": f"t{i}", "instruction": f"Name a colour number {i}.",
             "instances": [{"input": "" if i % 2 else f"hint {i}", "output": f"Colour {i} is blue."}]}
            for i in range(6)]
    rows.append({"id": "bad", "instruction": "no output", "instances": [{"input": ""}]})
    return write_rows(tmp_path / "general.jsonl", rows + ["{not json"])


def test_general_tasks_skip_unusable_rows_and_sample_with_a_seed(tasks_file):
    tasks = general_tasks(tasks_file)
    assert [t.id for t in tasks] == [f"t{i}" for i in range(6)]
    assert tasks[0].prompt == "Name a colour number 0.\n\nhint 0" and tasks[1].prompt == "Name a colour number 1."
    assert [t.id for t in general_tasks(tasks_file, limit=3, seed=1)] == \
        [t.id for t in general_tasks(tasks_file, limit=3, seed=1)]
    assert len(general_tasks(tasks_file, limit=3)) == 3


def test_bad_task_sets_are_one_line(tmp_path):
    with pytest.raises(InputError, match="general task set not found: .*none.jsonl"):
        general_tasks(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"instruction": "x", "instances": []}) + "\n")
    with pytest.raises(InputError, match=r"empty.jsonl: no usable general tasks"):
        general_tasks(tmp_path / "empty.jsonl")


def test_an_adapter_that_changed_the_model_shows_a_measured_difference(tmp_path, tokenizer, catalogue_file,
                                                                       tasks_file):
    out = tmp_path / "a"
    train(tiny_cfg("train.max_steps=3", "train.lr=0.05", "track.enabled=false"), [catalogue_file], out,
          model=make_tiny_model(tokenizer), tokenizer=tokenizer)
    tasks = general_tasks(tasks_file)
    rep = measure_forgetting(make_tiny_model(tokenizer), tokenizer, out, tasks, max_new_tokens=6)
    assert rep["n_tasks"] == 6 and len(rep["per_task"]) == 6
    # the trained LoRA moved the weights: general text has another likelihood under the adapter
    assert rep["base"]["ppl"] != pytest.approx(rep["adapter_scores"]["ppl"], rel=1e-6)
    for m in ("f1", "rouge_l", "nll_per_token"):
        d = rep["drop"][m]
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1] and 0 <= d["p"] <= 1
    assert rep["drop"]["f1"]["mean"] == pytest.approx(rep["base"]["f1"] - rep["adapter_scores"]["f1"])
    md = forgetting_markdown(rep)
    assert "| token F1 |" in md and "perplexity on the references" in md


def test_cli_reports_the_drop_and_writes_the_json(tmp_path, tokenizer, catalogue_file, tasks_file):
    """`hybrid eval forgetting` on a saved tiny base model and an adapter tuned on it."""
    from click.testing import CliRunner

    from hybrid.cli.eval import cli

    base = tmp_path / "base"
    model = make_tiny_model(tokenizer)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path / "a"
    train(tiny_cfg("train.max_steps=2", "train.lr=0.05", "track.enabled=false", f"base_model={base}"),
          [catalogue_file], out)
    r = CliRunner().invoke(cli, ["forgetting", "--adapter", str(out), "--tasks", str(tasks_file), "-n", "4",
                                 "--max-new-tokens", "4", "--model", str(base), "--json", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "f.json").read_text())
    assert rep["n_tasks"] == 4 and "| token F1 |" in r.output and f"{rep['drop']['f1']['mean']:+.4f}" in r.output


def test_cli_bad_inputs_are_one_line(tmp_path, tasks_file):
    from click.testing import CliRunner

    from hybrid.cli.eval import cli

    (tmp_path / "a").mkdir()
    r = CliRunner().invoke(cli, ["forgetting", "--adapter", str(tmp_path / "a"), "--tasks", str(tasks_file), "-n", "1"])
    assert r.exit_code == 2 and "must be at least 2" in r.output
    r = CliRunner().invoke(cli, ["forgetting", "--adapter", str(tmp_path / "a"), "--tasks", str(tmp_path / "no.jsonl")])
    assert r.exit_code != 0 and "general task set not found" in str(r.exception)
