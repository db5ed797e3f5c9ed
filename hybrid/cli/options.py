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


def strategy_choices() -> tuple[str, ...]:
    """``auto`` (the app's router) and every registered strategy (``hybrid.strategies.strategy_names``)."""
    from hybrid.strategies import strategy_names

    return ("auto", *strategy_names())


class StrategyChoice(click.Choice):
    """``click.Choice`` over ``strategy_choices()``, read from the registry each time click validates a
    value or prints --help, so a strategy registered after this module is imported is offered too."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return strategy_choices()

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass
