"""Answering strategies, registered by name: ``few_shot``, ``rag``, ``tuned``, ``tuned_rag``, ``extract``.

::

    from hybrid.strategies import get_strategy
    answer = get_strategy("rag").answer("What is the notice period?", ctx)  # ctx: StrategyContext
"""

from __future__ import annotations

from core.registry import Registry

STRATEGIES: Registry = Registry("strategy")

# importing the modules fills the registry
from hybrid.strategies import few_shot as _few_shot  # noqa: E402,F401
from hybrid.strategies import rag as _rag  # noqa: E402,F401
from hybrid.strategies import tuned as _tuned  # noqa: E402,F401
from hybrid.strategies import extract as _extract  # noqa: E402,F401


def get_strategy(name: str):
    """An instance of the strategy registered as ``name`` (InputError lists the known ones)."""
    return STRATEGIES.get(name)()


def costs() -> dict[str, float]:
    return {n: float(STRATEGIES.get(n).cost) for n in STRATEGIES.names()}
