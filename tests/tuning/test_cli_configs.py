"""`hybrid tune` end to end on a model directory, the builders, and every shipped tuning preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybrid.cli import cli
from core.config import load_config
from hybrid.tuning.config import TuneConfig

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ["lora", "tiny-lora", "prompt-tuning", "prefix-tuning", "ia3", "full"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_tuning_preset_loads_and_names_its_command(name):
    path = ROOT / "configs" / f"{name}.yaml"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# hybrid tune ") and f"configs/{name}.yaml" in first
    cfg = load_config(TuneConfig, path)
    assert cfg.method in ("lora", "prompt_tuning", "prefix_tuning", "ia3", "full")


def test_cli_tune_runs_and_reports(tmp_path, tiny_model_dir, catalogue_file):
    out = tmp_path / "adapters" / "shop"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(catalogue_file.read_text() + '{"messages": []}\n')
    r = CliRunner().invoke(cli, [
        "tune", "--data", str(bad), "--config", str(ROOT / "configs" / "lora.yaml"), "--out", str(out),
        "--set", f"base_model={tiny_model_dir}", "--set", "train.max_steps=2", "--set", "data.max_length=96",
        "--set", "train.batch_tokens=384", "--set", "train.tensorboard=false", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "60 rows kept, 1 skipped (bad_type: 1)" in r.output
    assert "bad.jsonl:61: bad_type" in r.output
    assert "trained lora for 2 steps" in r.output and f"adapter: {out}" in r.output
    card = json.loads((out / "adapter_card.json").read_text())
    assert card["data"][0]["skipped"] == 1 and card["hyperparameters"]["config"]["lora"]["r"] == 16


def test_cli_errors_are_one_line(tmp_path, capsys):
    from hybrid.cli import main

    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["tune", "--data", str(empty), "--out", str(tmp_path / "o"), "--set", "lora.r=0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lora.r (rank) must be > 0, got 0" in err


def test_cli_build_raft_and_split(tmp_path):
    docs = ROOT / "tests" / "tuning" / "data" / "catalogue-docs.jsonl"
    r = CliRunner().invoke(cli, ["tune", "build", "raft", "--docs", str(docs), "--out", str(tmp_path / "t.jsonl"),
                                 "--eval-out", str(tmp_path / "e.jsonl"), "--eval-fraction", "0.2"])
    assert r.exit_code == 0, r.output
    tr = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    ev = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(tr) + len(ev) == 60 and ev
    assert not {x["source"] for x in tr} & {x["source"] for x in ev}
