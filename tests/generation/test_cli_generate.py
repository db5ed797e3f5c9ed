"""``hybrid generate`` end to end: the tiny model for speed, the embedded model for real output."""

from __future__ import annotations

import contextlib
import io

import pytest

from hybrid.cli import main
from tests.generation.conftest import make_lora


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["generate", *args])
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_generate_with_a_local_model_dir_and_adapter(tiny_model_dir, tiny_gen, tmp_path, monkeypatch):
    code, out, err = run("hi", "--model", str(tiny_model_dir), "-n", "8", "--no-stream")
    assert code == 0, err
    base = out.strip()
    assert base == tiny_gen.generate([{"role": "user", "content": "hi"}],
                                     params=tiny_gen_params(8)).text
    adapters = tmp_path / "adapters"
    make_lora(tiny_model_dir, adapters / "shop", seed=1, base_sha=tiny_gen.sha, base_id=tiny_gen.model_id,
              tokenizer=tiny_gen.tokenizer)
    monkeypatch.chdir(tmp_path)  # names resolve under ./adapters/
    code, out, err = run("hi", "--model", str(tiny_model_dir), "--adapter", "shop", "-n", "8", "--no-stream")
    assert code == 0, err
    assert out.strip() != base
    code, streamed, err = run("hi", "--model", str(tiny_model_dir), "--adapter", "shop", "-n", "8", "--stream")
    assert code == 0 and streamed.strip() == out.strip()


def tiny_gen_params(n):
    from hybrid.generation import make_params

    return make_params(max_new_tokens=n)


@pytest.mark.parametrize("args, message", [
    (["hi", "--temperature", "nan"], "error: temperature must be a finite number >= 0, got nan"),
    (["hi", "--max-new-tokens", "0"], "error: max_new_tokens must be > 0, got 0"),
    (["hi", "--model", "some-org/not-here"], "error: model 'some-org/not-here' is not available offline"),
    (["hi", "--adapter", "no-such-adapter"], "error: adapter 'no-such-adapter' not found"),
    (["   "], "error: prompt is empty"),
])
def test_bad_inputs_are_one_line_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(*args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_adapter_for_another_base_is_refused_by_the_cli(tiny_model_dir, tiny_gen, tmp_path):
    bad = make_lora(tiny_model_dir, tmp_path / "other", seed=1, base_sha="feedfacefeedface", base_id="Other-7B",
                    tokenizer=tiny_gen.tokenizer)
    code, out, err = run("hi", "--model", str(tiny_model_dir), "--adapter", str(bad), "--no-stream")
    assert code == 2 and "trained on base model 'Other-7B'" in err and err.count("\n") == 1


@pytest.mark.slow
def test_generate_with_the_embedded_model(real_gen):
    code, out, err = run("What is the capital of France?", "-n", "16", "--no-stream")
    assert code == 0, err
    assert "Paris" in out


def test_adapter_card_system_prompt_is_rendered_with_its_training_values(tiny_model_dir, tiny_gen, tmp_path):
    from hybrid.cli.generate import _card_system_prompt
    from core.errors import InputError
    from hybrid.tuning.card import read_card, write_card

    path = make_lora(tiny_model_dir, tmp_path / "sp", seed=1, base_sha=tiny_gen.sha, base_id=tiny_gen.model_id,
                     tokenizer=tiny_gen.tokenizer, system_prompt="You are {app_name}. Today is {date}.")
    card = read_card(path)
    with pytest.raises(InputError, match="needs a value for app_name"):
        _card_system_prompt(card)  # the card does not say which app it was trained for
    card.hyperparameters = {"config": {"data": {"app_name": "ShopBot"}}}
    write_card(card, path)
    sp = _card_system_prompt(read_card(path))
    assert sp.render().startswith("You are ShopBot. Today is ")
    code, out, err = run("hi", "--model", str(tiny_model_dir), "--adapter", str(path), "-n", "4", "--no-stream")
    assert code == 0 and out.strip() and "Warning" not in err
