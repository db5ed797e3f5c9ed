"""Every name a package advertises must import: a lazy export that points at a moved or renamed
module only fails when someone uses it, so each one is resolved here.

Covers every package's ``__all__`` (lazy ``__getattr__`` tables and plain re-exports alike) and the
CLI's lazy command table, whose missing modules would otherwise just vanish from ``hybrid --help``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("core", "hybrid", "connectors", "indexes", "apps")


def _packages() -> list[str]:
    names = []
    for top in TOP_LEVEL:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT)
            names.append(".".join(rel.parts))
    return names


PACKAGES = _packages()


def test_packages_found():
    assert {"hybrid", "hybrid.tuning", "hybrid.reader", "connectors"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_advertised_name_resolves(package):
    mod = importlib.import_module(package)
    exported = getattr(mod, "__all__", None)
    if "__getattr__" in vars(mod):
        # a lazy table must say what it serves, or nothing here (or in `dir()`) can check it
        assert exported, f"{package} has a lazy __getattr__ but no __all__"
    for name in exported or ():
        assert getattr(mod, name) is not None, f"{package}.{name}"


def test_tuning_merge_adapter_is_the_save_module_function():
    from hybrid.tuning import merge_adapter
    from hybrid.tuning.save import merge_adapter as direct

    assert merge_adapter is direct


def test_every_cli_command_target_exists():
    # the group lists only commands whose module imports, so a wrong target would just vanish
    import click

    from hybrid.cli import COMMANDS, LazyGroup, cli

    for name in COMMANDS:
        command = LazyGroup._load(cli, name)
        assert isinstance(command, click.Command), f"{name} -> {COMMANDS[name]!r} does not load"
