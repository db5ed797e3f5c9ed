"""Every shipped YAML preset and app loads into its checked dataclass (a preset that rots fails here)."""

from pathlib import Path

import pytest

from core.config import load_config
from tests.conftest import ROOT


def _classes():
    from connectors.config import IngestConfig
    from hybrid.eval.runner import EvalConfig
    from hybrid.tuning import TuneConfig
    from indexes.config import IndexConfig

    return {"ingest.yaml": IngestConfig, "index.yaml": IndexConfig, "eval.yaml": EvalConfig,
            "lora.yaml": TuneConfig, "tiny-lora.yaml": TuneConfig, "ia3.yaml": TuneConfig,
            "prompt-tuning.yaml": TuneConfig, "prefix-tuning.yaml": TuneConfig, "full.yaml": TuneConfig, "demo-lora.yaml": TuneConfig}


PRESETS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_says_how_it_is_used(name):
    path = ROOT / "configs" / name
    head = path.read_text(encoding="utf-8").splitlines()[:3]
    assert head[0].startswith("#"), f"{name} must open with a comment"
    assert any(line.startswith("#") and "hybrid " in line for line in head), \
        f"{name} must say in its opening comment which command uses it"
    if name.startswith("router"):  # router.yaml and fitted router presets (router-fitted.yaml)
        from hybrid.routing.config import load_router_config

        load_router_config(path)
        return
    classes = _classes()
    assert name in classes, f"{name} has no dataclass mapping in this test: add it"
    load_config(classes[name], path)


@pytest.mark.parametrize("app", sorted(p.parent.name for p in (ROOT / "apps").glob("*/app.yaml")))
def test_shipped_app_loads(app):
    from hybrid.app import load_app

    cfg = load_app(ROOT / "apps" / app)
    assert cfg.render_system_prompt("2026-01-01").strip()
    for src in cfg.source_paths():
        assert Path(src).exists(), f"{app}: source {src} is missing"
