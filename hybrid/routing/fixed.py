"""``fixed:<strategy>``: always the same strategy, for comparisons and for ``--strategy``."""

from __future__ import annotations

from core.errors import InputError
from hybrid.routing.signals import RouteContext
from core.types import Decision


class FixedRouter:
    """Forces one strategy; refuses it, with the reason, when the app cannot run it.

    >>> FixedRouter("rag").route("q", route_ctx).strategy  # doctest: +SKIP
    'rag'
    """

    def __init__(self, strategy: str):
        from hybrid.strategies import STRATEGIES

        STRATEGIES.get(strategy)  # unknown name -> InputError listing the known ones
        self.strategy = strategy
        self.name = f"fixed:{strategy}"

    def route(self, query: str, ctx: RouteContext) -> Decision:
        if self.strategy in ctx.excluded:
            raise InputError(f"strategy {self.strategy!r} is not available: {ctx.excluded[self.strategy]}")
        return Decision(strategy=self.strategy, scores={}, confidence=1.0,
                        reason=f"{self.strategy}: fixed by request", excluded=dict(ctx.excluded))
