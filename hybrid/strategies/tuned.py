"""tuned: the system prompt plus the app's LoRA adapter, no retrieval.
tuned_rag: the adapter plus the same retrieved data block as ``rag`` (where RAFT-style tuning pays off).
"""

from __future__ import annotations

from core.errors import InputError
from hybrid.strategies import STRATEGIES, guard
from hybrid.strategies.base import Prompt, StrategyContext, base_messages, run_prompt
from hybrid.strategies.rag import build_rag_prompt
from core.types import Answer


def _adapter(ctx: StrategyContext, name: str) -> str:
    if not ctx.adapter:
        raise InputError(f"strategy {name!r} needs the app's adapter, and none is loaded")
    return ctx.adapter


@STRATEGIES.register("tuned")
class Tuned:
    """Answer with the app's adapter only.

    >>> Tuned().answer("Draft a termination notice.", ctx).strategy  # doctest: +SKIP
    'tuned'
    """

    name = "tuned"
    cost = 0.5  # shortest prompt: system + question
    uses_adapter = True  # excluded without an adapter; no retrieval

    def build(self, query: str, ctx: StrategyContext) -> Prompt:
        adapter = _adapter(ctx, self.name)
        messages = [*base_messages(ctx), {"role": "user", "content": query}]
        # the question is untrusted: say so when it carried chat-template control strings
        return Prompt(messages=messages, adapter=adapter, notices=guard.control_notice(messages, ctx.generator))

    def answer(self, query: str, ctx: StrategyContext) -> Answer:
        return run_prompt(self.name, self.build(query, ctx), ctx)


@STRATEGIES.register("tuned_rag")
class TunedRag:
    """The adapter plus retrieved sources, with citations."""

    name = "tuned_rag"
    cost = 1.6  # rag's prompt, plus the adapter's extra matmuls
    uses_kb = True  # rag's sources: excluded without a usable KB (that reason first), grounded
    uses_adapter = True  # and without an adapter

    def build(self, query: str, ctx: StrategyContext) -> Prompt:
        return build_rag_prompt(query, ctx, adapter=_adapter(ctx, self.name))

    def answer(self, query: str, ctx: StrategyContext) -> Answer:
        return run_prompt(self.name, self.build(query, ctx), ctx)
