"""``hybrid chat --app apps/shopping``: an interactive chat in the terminal, with streamed tokens."""

from __future__ import annotations

import sys

import click

from hybrid.cli.ask import app_option
from hybrid.cli.options import StrategyChoice, app_set_option, strategy_choices


def help_line() -> str:
    """The in-chat command summary, naming the strategies registered now."""
    return f"commands: /strategy NAME ({'|'.join(strategy_choices())}), /why, /reset, /quit"


@click.command("chat")
@app_option
@click.option("-S", "--strategy", type=StrategyChoice(), default="auto", show_default=True,
              help="Force a strategy for every turn; auto lets the router decide.")
@click.option("-r", "--router", default=None, metavar="KIND", help="rules, learned or fixed:<strategy>.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the route line before each answer.")
@app_set_option
def cli(app_dir: str, strategy: str, router: str | None, quiet: bool, overrides) -> None:
    """Chat with an app; answers stream as they are generated. Ctrl-D or /quit ends."""
    from core.errors import HybridError
    from hybrid.pipeline import Assistant

    bot = Assistant.from_dir(app_dir, overrides, router=router)
    click.echo(f"{bot.app.title or bot.app.name}: loading...", err=True)
    bot.warm_up()
    excluded = bot.excluded()
    for name, why in sorted(excluded.items()):
        click.echo(f"(not available: {name}: {why})", err=True)
    click.echo(help_line(), err=True)
    history: list[dict[str, str]] = []
    last = None
    while True:
        try:
            line = input("you> ") if sys.stdin.isatty() else sys.stdin.readline()
        except EOFError:
            break
        if not sys.stdin.isatty() and line == "":
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history.clear()
            click.echo("(history cleared)")
            continue
        if line == "/why":
            click.echo(last.decision.reason if last is not None and last.decision else "(no answer yet)")
            continue
        if line.startswith("/strategy"):
            choice = line.split(maxsplit=1)[1].strip() if " " in line else ""
            if choice not in strategy_choices():
                click.echo(f"(choose one of {', '.join(strategy_choices())})")
            else:
                strategy = choice
                click.echo(f"(strategy: {strategy})")
            continue
        if line.startswith("/"):
            click.echo(f"(unknown command; {help_line()})")
            continue
        try:
            s = bot.stream(line, history, strategy)
        except HybridError as e:  # a bad turn is one line, the chat goes on
            click.echo(f"error: {e}")
            continue
        if not quiet and s.decision is not None:
            click.echo(f"[{s.decision.strategy}] ", nl=False)
        click.echo("bot> ", nl=False)
        for piece in s:
            click.echo(piece, nl=False)
        click.echo()
        last = s.answer
        if last is not None:
            for c in last.citations:
                page = f", page {c.page}" if c.page is not None else ""
                click.echo(f"  [{c.n}] {c.source}{page}")
            for n in last.notices:
                click.echo(f"  note: {n}")
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": last.text}]
