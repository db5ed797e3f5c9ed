"""The shipped app.yaml files and the AppConfig checks."""

from __future__ import annotations

import pytest

from hybrid.app import AppConfig, load_app
from core.errors import ConfigError
from hybrid.routing.config import load_router_config
from hybrid.strategies.examples import ExampleBank
from indexes.embed import HashEmbedder
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["legal", "shopping"])
def test_shipped_apps_load_and_point_at_real_data(name):
    app = load_app(ROOT / "apps" / name)
    assert app.name == name
    prompt = app.render_system_prompt("2026-01-02")
    assert (app.title in prompt) and "2026-01-02" in prompt and "{" not in prompt
    assert all(p.is_dir() for p in app.source_paths())
    bank = ExampleBank.load(app.resolve(app.examples.path), HashEmbedder())
    assert len(bank) >= 20 and bank.skipped == 0
    assert app.resolve(app.adapter.tune_data).is_file()
    cfg = load_router_config(None, app.router.overrides)
    assert cfg.rules.rag_low < cfg.rules.rag_high


def test_system_prompt_is_the_one_tuning_gets():
    from hybrid.pipeline import tune_config

    app = load_app(ROOT / "apps" / "legal")
    cfg = tune_config(app)
    assert cfg.data.system_prompt == app.system_prompt and cfg.data.app_name == app.title
    from hybrid.chat import SystemPrompt, system_prompt_hash

    # what hybrid.tuning renders into every training row, and hashes into the adapter card
    rendered = SystemPrompt(cfg.data.system_prompt).render(app_name=cfg.data.app_name)
    assert rendered == app.render_system_prompt()
    assert system_prompt_hash(SystemPrompt(cfg.data.system_prompt)) == app.system_prompt_hash()


@pytest.mark.parametrize("yaml_text, match", [
    ("name: x\nsystem_prompt: 'Hi {nme}'\n", "unknown variable {nme}"),
    ("name: x\nsystem_prompt: '  '\n", "must not be empty"),
    ("name: 'bad name'\nsystem_prompt: hi\n", "name must be"),
    ("name: x\nsystem_prompt: hi\nrouter: {kind: fixed:magic}\n", "router.kind"),
    ("name: x\nsystem_prompt: hi\nexamples: {max_k: 0}\n", "max_k"),
    ("name: x\nsystem_prompt: hi\nsurprise: 1\n", "unknown key 'surprise'"),
])
def test_bad_app_yaml_is_a_clear_error(tmp_path, yaml_text, match):
    (tmp_path / "app.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=match) as e:
        load_app(tmp_path)
    assert "app.yaml" in str(e.value)


def test_missing_app_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="app.yaml is missing"):
        load_app(tmp_path)


def test_default_artifact_paths_are_in_the_cache():
    app = AppConfig(name="demo", system_prompt="Hi")
    assert app.kb_path.parts[-3:] == ("apps", "demo", "kb")
    assert app.adapter_path.parts[-3:] == ("apps", "demo", "adapter")
