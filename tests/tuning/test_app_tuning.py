"""The tuning path a new user walks: an app's prompt, its Q/A rows and `hybrid tune --app`."""

from __future__ import annotations

import logging

from hybrid.app import AppConfig
from hybrid.chat import card_mismatches, normalize_system_prompt, system_prompt_hash
from core.config import load_config
from hybrid.tuning.config import TuneConfig
from hybrid.tuning.trainer import _system_prompt


def test_a_copied_prompt_with_trailing_white_space_hashes_like_the_apps(tokenizer, caplog):
    app = AppConfig(name="legal", title="LegalBot", system_prompt="You are {app_name}. Be brief.\n")
    # the prompt copied into a tuning preset, trailing newline and space included
    cfg = load_config(TuneConfig, None, ["data.app_name=LegalBot"],
                      data={"data": {"system_prompt": "You are {app_name}. Be brief. \n"}})
    rendered, template, digest = _system_prompt(cfg)
    assert template == app.system_prompt == "You are {app_name}. Be brief."
    assert digest == app.system_prompt_hash() == system_prompt_hash("  You are {app_name}. Be brief.\n\n")
    assert rendered == app.render_system_prompt()
    card = {"template_hash": "", "system_prompt_hash": digest, "system_prompt": template}
    with caplog.at_level(logging.WARNING):
        assert card_mismatches(card, tokenizer=tokenizer, system_prompt=app.system_prompt + "\n") == []
    assert normalize_system_prompt(None) == ""


def test_question_answer_rows_are_accepted_and_context_is_quoted_like_rag(tmp_path, tokenizer):
    from hybrid.strategies.rag import _quote, data_user_turn
    from hybrid.tuning.data import encode_rows, read_rows
    from tests.tuning.conftest import write_rows

    p = write_rows(tmp_path / "qa.jsonl", [
        {"question": "What is the notice period?", "answer": "Thirty days."},
        {"question": "Who pays the deposit?", "context": "The tenant pays the deposit.\n",
         "answer": "The tenant.", "title": "lease.md"},
    ])
    rows, report = read_rows(p)
    assert report.n_skipped == 0 and len(rows) == 2
    assert rows[0].messages == [{"role": "user", "content": "What is the notice period?"},
                                {"role": "assistant", "content": "Thirty days."}]
    want = data_user_turn("Who pays the deposit?", [f"[1] source: lease.md\n{_quote('The tenant pays the deposit.')}"])
    assert rows[1].messages[0]["content"] == want
    examples, _ = encode_rows(rows, tokenizer, TuneConfig().data, system_prompt="Be brief.")
    assert len(examples) == 2 and all(e.n_targets > 0 for e in examples)


def test_an_unknown_row_shape_lists_every_accepted_shape(tmp_path):
    from hybrid.tuning.data import read_rows
    from tests.tuning.conftest import write_rows

    _, report = read_rows(write_rows(tmp_path / "x.jsonl", [{"prompt": "hi", "reply": "yo"}]))
    (problem,) = report.problems
    assert "missing_field" in problem
    for shape in ('"messages"', '"instruction", "output"', '"question", "answer"', '"context"', '"text"'):
        assert shape in problem, shape


def test_the_app_scaffold_documents_the_accepted_tune_data_shapes():
    from hybrid.cli import app as app_cli

    src = open(app_cli.__file__, encoding="utf-8").read()
    assert '{{"question", "answer"}}' in src and '{{"question", "context", "answer"}}' in src


def test_train_loss_is_the_token_weighted_mean_of_the_last_epoch():
    from hybrid.tuning.trainer import last_epoch_loss

    losses = [9.0, 9.0, 4.0, 1.0, 2.0]
    assert last_epoch_loss(losses, [1, 1, 10, 10, 20], 3) == ((40 + 10 + 40) / 40, 3)
    assert last_epoch_loss(losses, [], 3) == ((4 + 1 + 2) / 3, 3)  # an older checkpoint: no weights
    assert last_epoch_loss([2.0, 4.0], [1, 1], 10) == (3.0, 2)       # shorter than an epoch: all steps
    assert last_epoch_loss([], [], 4) == (None, 0)


def test_card_skipped_counts_come_from_the_printed_report(tmp_path, tokenizer, tiny_model):
    from hybrid.tuning.card import read_card
    from hybrid.tuning.trainer import train
    from tests.tuning.conftest import chat_row, tiny_cfg, write_rows

    long_q = "Tell me everything about the tent. " * 40  # the prompt alone is over data.max_length
    rows = [chat_row(f"Price of item {i}?", f"Item {i} costs {i} euros.", source=f"d{i}") for i in range(12)]
    rows += [chat_row(long_q, "Green.", source=f"long{i}") for i in range(3)] + [{"foo": 1}]
    data = write_rows(tmp_path / "mixed.jsonl", rows)
    out = tmp_path / "adapter"
    res = train(tiny_cfg("train.max_steps=2", "train.eval_every=0"), [data], out, model=tiny_model,
                tokenizer=tokenizer)
    assert res.report.skipped == {"too_long": 3, "missing_field": 1}
    (f,) = read_card(out).data
    assert f.skipped == 4 and f.skipped_reasons == {"missing_field": 1, "too_long": 3}
    assert f.rows == 12
    readme = (out / "README.md").read_text()
    assert "| 4 (missing_field: 1, too_long: 3) |" in readme
    assert "token-weighted mean over" in res.train_loss_basis and res.train_loss_basis in readme


def _write_app(root, *, tune_rows):
    from tests.tuning.conftest import write_rows

    root.mkdir(parents=True, exist_ok=True)
    (root / "app.yaml").write_text(
        "name: shop\ntitle: ShopBot\nsystem_prompt: |\n  You are {app_name}, the shop assistant.\n"
        "adapter:\n  path: out/adapter\n  tune_data: tune.jsonl\n", encoding="utf-8")
    write_rows(root / "tune.jsonl", tune_rows)
    return root


def test_tune_app_uses_the_apps_prompt_data_and_adapter_path(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from hybrid.app import load_app
    from hybrid.cli.tune import cli
    from hybrid.tuning.card import read_card

    rows = [{"question": f"Price of item {i}?", "answer": f"Item {i} costs {i} euros."} for i in range(10)]
    app_dir = _write_app(tmp_path / "shop", tune_rows=rows)
    args = ["--app", str(app_dir), "--set", f"base_model={tiny_model_dir}", "--set", "train.max_steps=2",
            "--set", "train.eval_every=0", "--set", "train.tensorboard=false", "--set", "data.max_length=96",
            "--set", "train.batch_tokens=384", "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    app = load_app(app_dir)
    card = read_card(app.adapter_path)
    assert app.adapter_path == (app_dir / "out" / "adapter").resolve()
    assert card.system_prompt == app.system_prompt and card.system_prompt_hash == app.system_prompt_hash()
    assert card.data[0].path.endswith("tune.jsonl") and card.data[0].rows == 10
    assert "train loss" in res.output and "mean over" in res.output
    from hybrid.pipeline import adapter_is_current

    assert adapter_is_current(app)[0]

    # --out and --data still win; --set data.app_name wins over the app's title
    other = tmp_path / "other.jsonl"
    other.write_text((app_dir / "tune.jsonl").read_text())
    res = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "elsewhere"), "--data", str(other),
                                          "--set", "data.app_name=Kestrel"])
    assert res.exit_code == 0, res.output
    card = read_card(tmp_path / "elsewhere")
    assert card.data[0].path == str(other)
    cfg = __import__("json").loads((tmp_path / "elsewhere" / "tune_config.json").read_text())
    assert cfg["data"]["app_name"] == "Kestrel" and cfg["data"]["system_prompt"] == app.system_prompt


def test_tune_app_without_tune_data_is_one_line(tmp_path, capsys):
    import pytest

    from hybrid.cli import main

    app_dir = _write_app(tmp_path / "shop", tune_rows=[])
    (app_dir / "tune.jsonl").unlink()
    with pytest.raises(SystemExit) as e:
        main(["tune", "--app", str(app_dir)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "adapter.tune_data" in err and "--data" in err
