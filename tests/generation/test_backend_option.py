"""``--backend`` (hybrid.cli.options.app_set_option): folded into the overrides as
generation.backend=NAME, in either order with --set, and checked against the backend registry."""

from __future__ import annotations

import click
from click.testing import CliRunner

from hybrid.cli.options import app_set_option


@click.command()
@app_set_option
def show(overrides):
    from hybrid.app import AppConfig
    from core.config import load_config

    click.echo(repr(overrides))
    cfg = load_config(AppConfig, None, overrides, data={"name": "demo", "system_prompt": "Hi."})
    click.echo(f"backend={cfg.generation.backend} model={cfg.generation.model}")


def run(*args):
    return CliRunner().invoke(show, list(args))


def test_backend_becomes_an_override_in_either_order():
    r = run("--backend", "openai", "--set", "generation.model=base")
    assert r.exit_code == 0 and "backend=openai model=base" in r.output
    r = run("--set", "generation.model=base", "--backend", "openai")
    assert r.exit_code == 0 and "backend=openai model=base" in r.output
    assert "('generation.model=base', 'generation.backend=openai')" in r.output


def test_without_backend_nothing_changes_and_a_bad_name_is_refused():
    r = run()
    assert r.exit_code == 0 and "()" in r.output and "backend=transformers model=embedded" in r.output
    r = run("--backend", "tgi")
    assert r.exit_code == 2 and "'tgi' is not one of 'hf', 'openai', 'scripted', 'transformers', 'vllm'" in r.output


def test_every_command_that_generates_takes_backend():
    """ask, chat, eval and serve all offer --backend, beside --set."""
    from apps.api.cli import serve
    from hybrid.cli import ask, chat, eval as eval_

    for cmd in (ask.cli, chat.cli, eval_.cli, serve):
        opts = {o for p in cmd.params for o in p.opts}
        assert {"--backend", "--set"} <= opts, (cmd.name, sorted(opts))
