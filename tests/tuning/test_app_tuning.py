"""The tuning path a new user walks: an app's prompt, its Q/A rows and `hybrid tune --app`."""

from __future__ import annotations

import logging

from hybrid.app import AppConfig
from hybrid.chat import card_mismatches, normalize_system_prompt, system_prompt_hash
from hybrid.config import load_config
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
