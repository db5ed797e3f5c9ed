"""System prompts and chat rendering (the tiny tokenizer carries a real ChatML template)."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from hybrid.chat import (
    SystemPrompt,
    card_mismatches,
    encode_rendered,
    render_chat,
    render_prompt_completion,
    system_prompt_hash,
    template_hash,
    warn_card_mismatch,
)
from core.errors import InputError
from tests.generation.conftest import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


USER = [{"role": "user", "content": "Price of the X1?"}]


def test_system_prompt_renders_variables_and_date():
    sp = SystemPrompt("You are {app_name}. Today is {date}.", defaults={"app_name": "ShopBot"})
    assert sp.render() == f"You are ShopBot. Today is {dt.date.today().isoformat()}."
    assert sp.render(app_name="LegalBot", date="2020-01-02") == "You are LegalBot. Today is 2020-01-02."
    assert sp.variables == ["app_name", "date"]


def test_system_prompt_unknown_and_missing_variables_are_clear():
    sp = SystemPrompt("You are {app_name}.")
    with pytest.raises(InputError, match=r"unknown system prompt variable.*'nme'.*uses: app_name"):
        sp.render(app_name="x", nme="y")
    with pytest.raises(InputError, match="needs a value for app_name"):
        sp.render()


@pytest.mark.parametrize("bad", ["You are {0}.", "You are {}.", "Unclosed {app_name", "attr {a.b}"])
def test_malformed_system_prompt_fails_at_construction(bad):
    with pytest.raises(InputError):
        SystemPrompt(bad)


def test_literal_braces_survive():
    assert SystemPrompt("JSON like {{\"a\": 1}} for {app_name}").render(app_name="X") == 'JSON like {"a": 1} for X'


def test_render_chat_inserts_system_prompt_with_models_template(tok):
    text = render_chat(tok, USER, "Be brief.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nPrice of the X1?<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_render_chat_replaces_existing_system_messages(tok):
    msgs = [{"role": "system", "content": "old one"}, *USER, {"role": "system", "content": "another"}]
    text = render_chat(tok, msgs, SystemPrompt("new {app_name}", defaults={"app_name": "A"}))
    assert "old one" not in text and "another" not in text
    assert text.count("<|im_start|>system") == 1 and "new A" in text


def test_render_chat_none_keeps_callers_system_message(tok):
    msgs = [{"role": "system", "content": "caller's"}, *USER]
    assert "caller's" in render_chat(tok, msgs, None)


def test_without_generation_prompt(tok):
    assert not render_chat(tok, USER, "S", add_generation_prompt=False).endswith("<|im_start|>assistant\n")


def test_template_that_rejects_system_role_gets_it_in_first_user_turn(tok):
    strict = build_tiny_tokenizer()
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    )
    text = render_chat(strict, USER, "Be brief.")
    assert text.startswith("[user] Be brief.\n\nPrice of the X1?")


def test_plain_fallback_without_template():
    assert render_chat(None, USER, "S") == "system: S\nuser: Price of the X1?\nassistant:"


@pytest.mark.parametrize("bad", [[], "hi", [{"role": "robot", "content": "x"}], [{"content": "x"}],
                                 [{"role": "user", "content": 3}]])
def test_bad_messages_are_one_line_input_errors(tok, bad):
    with pytest.raises(InputError):
        render_chat(tok, bad, "S")


def test_prompt_completion_split_matches_inference_prompt(tok):
    conv = [*USER, {"role": "assistant", "content": "49 euros."}]
    prompt, completion = render_prompt_completion(tok, conv, "S")
    assert prompt == render_chat(tok, USER, "S")  # identical to what inference renders
    assert completion == "49 euros.<|im_end|>\n"
    with pytest.raises(InputError, match="last message must be the assistant"):
        render_prompt_completion(tok, USER, "S")


def test_encode_rendered_adds_no_second_bos(tok):
    ids = encode_rendered(tok, render_chat(tok, USER, "S"))
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(tok.bos_token_id) == 3  # one per turn marker, none added by the tokenizer


def test_hashes_are_stable_and_sensitive(tok):
    other = build_tiny_tokenizer()
    assert template_hash(tok) == template_hash(other)
    other.chat_template = other.chat_template + " "
    assert template_hash(tok) != template_hash(other)
    sp = SystemPrompt("Today is {date}.")
    assert system_prompt_hash(sp) == system_prompt_hash("Today is {date}.")  # template, not the day
    assert system_prompt_hash("a") != system_prompt_hash("b")
    assert system_prompt_hash(None) == system_prompt_hash("")


def test_card_mismatch_warnings(tok, caplog):
    card = {"template_hash": template_hash(tok), "system_prompt_hash": system_prompt_hash("Be brief."),
            "system_prompt": "Be brief."}
    assert card_mismatches(card, tokenizer=tok, system_prompt="Be brief.") == []
    with caplog.at_level(logging.WARNING):
        problems = warn_card_mismatch(card, tokenizer=tok, system_prompt="Be verbose.", name="adapter 'shop'")
    assert len(problems) == 1 and "system prompt differs" in problems[0] and "Be brief." in problems[0]
    assert "adapter 'shop'" in caplog.text
    card["template_hash"] = "0" * 16
    assert any("chat template differs" in p for p in card_mismatches(card, tokenizer=tok, system_prompt="Be brief."))
    # empty card fields (foreign adapters) are not compared
    assert card_mismatches({}, tokenizer=tok, system_prompt="x") == []


def test_system_prompt_recognises_its_renderings():
    sp = SystemPrompt("You are {app_name}. Today is {date}.\nCite (sources).")
    assert sp.matches(sp.render(app_name="Shop Bot"))
    assert sp.matches("You are X. Today is 1999-01-01.\nCite (sources).")
    assert not sp.matches("You are X. Today is 1999-01-01.")
    assert not sp.matches("Something else entirely.")
