"""The layer contract in pyproject.toml ([tool.importlinter]): core <- connectors <- indexes <- hybrid <- apps.

A layer may import the ones below it and never one above, directly or through another module;
``lint-imports`` (import-linter, a dev extra) checks every import, including those inside functions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    if exe.is_file():
        return str(exe)
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: pip install -e '.[dev]' (import-linter)")
    return found


def test_layers_contract_is_kept():
    run = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"lint-imports failed (exit {run.returncode}):\n{out}"
    assert "layers: core <- connectors" in out and "BROKEN" not in out, out


def test_ground_and_lower_layers_load_nothing_above_them():
    code = ("import core, connectors, indexes, sys; "
            "print(sorted(m for m in sys.modules if m.startswith(('hybrid', 'apps'))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout
