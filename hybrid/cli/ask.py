"""``hybrid ask "question" --app apps/legal``: one answer, with its route, reason, citations and timings."""

from __future__ import annotations

import json

import click

from hybrid.cli.options import StrategyChoice, app_set_option

app_option = click.option("-a", "--app", "app_dir", required=True, envvar="HYBRID_APP",
                          type=click.Path(file_okay=False), help="App directory with app.yaml (env: HYBRID_APP).")


def format_answer(ans, *, show_route: bool = True) -> str:
    """The human-readable report ``ask`` prints (also used by ``chat`` after a streamed answer)."""
    lines = [ans.text, ""]
    d = ans.decision
    if show_route and d is not None:
        lines.append(f"route: {ans.strategy} (confidence {d.confidence:.2f})")
        lines.append(f"reason: {d.reason}")
        if d.scores:
            lines.append("scores: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(d.scores.items())))
    if ans.citations:
        lines.append("sources:")
        for c in ans.citations:
            page = f", page {c.page}" if c.page is not None else ""
            lines.append(f"  [{c.n}] {c.source}{page} (chunk {c.chunk_id}, score {c.score:.3f})")
    if getattr(ans, "confidence", None) is not None:
        lines.append(f"answer confidence: {ans.confidence:.2f}")
    for n in ans.notices:
        lines.append(f"note: {n}")
    if ans.timings:
        lines.append("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in ans.timings.items()))
    if ans.usage:
        lines.append(f"tokens: {ans.usage.get('prompt_tokens', 0)} prompt + "
                     f"{ans.usage.get('completion_tokens', 0)} completion")
    return "\n".join(lines)


@click.command("ask")
@click.argument("question")
@app_option
@click.option("-S", "--strategy", type=StrategyChoice(), default="auto", show_default=True,
              help="Force a strategy; auto lets the app's router decide.")
@click.option("-r", "--router", default=None, metavar="KIND",
              help="Router for auto: rules, learned or fixed:<strategy> (default: the app's).")
@click.option("-f", "--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Scope retrieval (repeatable), as in hybrid search: source=policy.txt, source=a.txt|b.txt.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@app_set_option
def cli(question: str, app_dir: str, strategy: str, router: str | None, filters: tuple[str, ...], as_json: bool,
        overrides) -> None:
    """Answer QUESTION with an app, and say how the answer was made.

    \b
    hybrid ask "What is the notice period for a flat lease?" --app apps/legal
    hybrid ask "Draft a return request" --app apps/shopping --strategy few_shot --json
    hybrid ask "Do they sell my data?" --app apps/policy --filter source=walmart-com.txt
    """
    from hybrid.cli.search import parse_filters
    from hybrid.pipeline import Assistant, answer_to_dict

    flt = parse_filters(filters) if filters else None
    bot = Assistant.from_dir(app_dir, overrides, router=router)
    ans = bot.ask(question, strategy=strategy, filters=flt)
    if as_json:
        click.echo(json.dumps(answer_to_dict(ans), indent=2, ensure_ascii=False))
    else:
        click.echo(format_answer(ans))
