"""The ``hybrid`` command: a click group whose commands live one module each in ``hybrid.cli``,
plus the commands installed packages declare in the ``hybrid.commands`` entry point group.

Commands are imported only when used (or listed), so ``hybrid --help`` stays fast and no model
loads at import time. Every user-facing failure is one line on stderr and exit code 2.

An entry point names a click command, e.g. in pyproject.toml::

    [project.entry-points."hybrid.commands"]
    serve = "apps.api.cli:serve"

That is how ``hybrid serve`` (the HTTP service in ``apps/api``) joins the CLI without this library
importing ``apps``. A built-in name cannot be taken over by an entry point.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from importlib.metadata import entry_points

import click

from core.errors import HybridError

ENTRY_POINT_GROUP = "hybrid.commands"

# built-in command name -> module under hybrid.cli that defines a click command called ``cli``.
BUILTIN: dict[str, str] = {
    "ingest": "ingest",
    "index": "index",
    "search": "search",
    "tune": "tune",
    "generate": "generate",
    "ask": "ask",
    "chat": "chat",
    "app": "app",
    "eval": "eval",
    "router": "router",
}


def installed_commands() -> dict[str, str]:
    """Commands declared by installed packages: name -> ``"module:attribute"`` of a click command."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


# every command name -> ``"module:attribute"`` of its click command, read once at startup.
COMMANDS: dict[str, str] = {**{n: f"hybrid.cli.{m}:cli" for n, m in BUILTIN.items()}, **installed_commands()}


class LazyGroup(click.Group):
    """Imports a command's module on first use; modules that do not exist (yet) are not listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [n for n in COMMANDS if self._load(n) is not None]
        return sorted(set(lazy) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self.commands.get(name) or self._load(name)

    def _load(self, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        mod_name, _, attr = target.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name is not None and (mod_name == e.name or mod_name.startswith(e.name + ".")):
                return None  # the module (or its package) is absent, e.g. a stale entry point
            raise
        return functools.reduce(getattr, attr.split("."), mod)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="hybrid")
def cli(verbose: int) -> None:
    """Build domain assistants that retrieve, tune, prompt with examples, and route between them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: translates HybridError into one line on stderr and exit 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # transformers draws a "Loading weights" bar for a sub-second load; our own bars stay
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        cli.main(args=argv, prog_name="hybrid", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code in (1, 2) else e.exit_code)
    except HybridError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        click.echo(f"error: {e.strerror}: {e.filename}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
