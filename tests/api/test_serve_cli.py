"""``hybrid serve`` lives with the service (apps/api/cli.py) and joins the CLI through the
``hybrid.commands`` entry point, so the library under hybrid/ never imports apps/."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def hybrid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_serve_help_works_and_serve_is_listed():
    r = hybrid("serve", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: hybrid serve [OPTIONS]")
    for flag in ("--app", "--host", "--port", "--api-key", "--concurrency", "--queue-size", "--timeout",
                 "--drain-grace", "--set"):
        assert flag in r.stdout
    top = hybrid("--help")
    assert top.returncode == 0 and "  serve     Serve the apps over HTTP" in top.stdout


def test_serve_is_registered_through_the_entry_point():
    from apps.api.cli import serve
    from hybrid.cli import COMMANDS, LazyGroup, cli

    declared = {ep.name: ep.value for ep in entry_points(group="hybrid.commands")}
    assert declared.get("serve") == "apps.api.cli:serve", (
        "entry point missing: re-install after editing pyproject.toml (pip install -e . --no-deps)")
    assert COMMANDS["serve"] == "apps.api.cli:serve"
    assert LazyGroup.get_command(cli, None, "serve") is serve


def test_pyproject_declares_the_serve_entry_point():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["hybrid.commands"]["serve"] == "apps.api.cli:serve"


def _imports_apps(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names = [node.args[0].value]
        found += [(node.lineno, n) for n in names if n == "apps" or n.startswith("apps.")]
    return found


def test_no_module_under_hybrid_imports_apps():
    files = sorted((ROOT / "hybrid").rglob("*.py"))
    assert len(files) > 20
    bad = [f"{f.relative_to(ROOT)}:{line}: {name}"
           for f in files for line, name in _imports_apps(ast.parse(f.read_text(), str(f)))]
    assert not bad, "hybrid/ must not import apps/:\n" + "\n".join(bad)


def test_the_scan_catches_each_kind_of_import():
    src = "import apps.api\nfrom apps.api.server import create_app\nimportlib.import_module('apps.api.cli')\n" \
          "from apps import api\nimport appsfoo\nfrom . import apps\n"
    assert sorted(_imports_apps(ast.parse(src))) == [(1, "apps.api"), (2, "apps.api.server"),
                                                      (3, "apps.api.cli"), (4, "apps")]


def test_batch_flags_reach_the_settings_and_a_bad_one_is_one_line(monkeypatch, tmp_path):
    """--batch-size / --batch-window-ms become ServiceSettings (and so RealBackend's batching);
    an out-of-range size is one error line, before anything loads."""
    from click.testing import CliRunner

    import apps.api.cli as serve_cli

    seen = {}
    monkeypatch.setattr(serve_cli, "run", lambda settings, overrides=(): seen.setdefault("s", settings))
    app = tmp_path / "app"
    app.mkdir()
    r = CliRunner().invoke(serve_cli.serve, ["--app", str(app), "--batch-size", "4", "--batch-window-ms", "20"])
    assert r.exit_code == 0, r.output
    s = seen["s"]
    assert (s.batch_max_size, s.batch_window_ms, s.concurrency, s.batching) == (4, 20.0, 4, True)
    r = CliRunner().invoke(serve_cli.serve, ["--app", str(app), "--batch-size", "0"])
    assert r.exit_code != 0 and "batch_max_size" in str(r.exception or r.output)
    assert "\n" not in str(r.exception).strip()
