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


def backend_choices() -> tuple[str, ...]:
    """The generation backends (``hybrid.generation.GENERATORS``), as ``--backend`` offers them."""
    from hybrid.generation import GENERATORS

    return tuple(GENERATORS.names())


class BackendChoice(click.Choice):
    """``click.Choice`` over the registered generation backends, read when click needs them."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return backend_choices()

    @choices.setter
    def choices(self, _value) -> None:
        pass


_BACKEND_KEY = "hybrid.backend"


def _with_backend(ctx: click.Context, overrides: tuple[str, ...]) -> tuple[str, ...]:
    backend = ctx.meta.get(_BACKEND_KEY)
    return (*overrides, f"generation.backend={backend}") if backend else tuple(overrides)


def _set_callback(ctx: click.Context, _param, value):
    return _with_backend(ctx, tuple(value or ()))


def _backend_callback(ctx: click.Context, _param, value):
    # click processes options in command-line order: whichever of --set / --backend comes second
    # folds the backend into the overrides, so it reaches load_app as generation.backend=VALUE
    if value:
        ctx.meta[_BACKEND_KEY] = value
        if "overrides" in ctx.params:
            ctx.params["overrides"] = (*ctx.params["overrides"], f"generation.backend={value}")
    return value


def app_set_option(f):
    """``--set KEY=VALUE`` plus ``--backend NAME`` for commands that load an app and generate (ask,
    chat, eval, serve): ``--backend openai`` is ``--set generation.backend=openai``, and wins over
    app.yaml. Both arrive in the command's ``overrides`` argument."""
    f = click.option("--backend", type=BackendChoice(), default=None, expose_value=False,
                     callback=_backend_callback,
                     help="Generation backend: transformers (in-process, default), openai (an OpenAI-compatible "
                          "server, see generation.openai in app.yaml) or vllm. Same as --set generation.backend=NAME.")(f)
    return click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_set_callback,
                        help="Override an app.yaml value, e.g. --set generation.max_new_tokens=64 (repeatable).")(f)
