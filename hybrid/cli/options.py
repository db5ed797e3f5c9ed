"""Options shared by several commands."""

from __future__ import annotations

import click

config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    envvar="HYBRID_CONFIG", help="YAML preset (env: HYBRID_CONFIG).",
)
set_option = click.option(
    "-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set chunk.size=512 (repeatable).",
)
