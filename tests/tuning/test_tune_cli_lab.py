"""The tuning lab on the command line: `hybrid tune sweep` is a subcommand of `hybrid tune`, and
`hybrid tune --no-track` / `hybrid eval --no-track` turn MLflow tracking off."""

from __future__ import annotations

from click.testing import CliRunner

from hybrid.cli import eval as eval_cli
from hybrid.cli import tune as tune_cli


def test_sweep_is_a_tune_subcommand_with_its_own_flags():
    assert tune_cli.cli.get_command(None, "sweep") is not None
    r = CliRunner().invoke(tune_cli.cli, ["sweep", "--help"])
    assert r.exit_code == 0 and "--space" in r.output and "--trials" in r.output


def test_no_track_becomes_track_enabled_false(monkeypatch, tmp_path):
    seen = {}

    def fake_resolve(app_dir, data, out, config_path, overrides):
        seen["overrides"] = overrides
        raise SystemExit(0)

    monkeypatch.setattr(tune_cli, "resolve_run", fake_resolve)
    r = CliRunner().invoke(tune_cli.cli, ["--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"),
                                          "--no-track"])
    assert r.exit_code == 0 and seen["overrides"][-1] == "track.enabled=false"
    assert "--no-track" in {o for p in eval_cli.cli.params for o in p.opts}
