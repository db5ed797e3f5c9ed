"""Answering strategies, registered by name: ``few_shot``, ``rag``, ``tuned``, ``tuned_rag``, ``extract``.

The registry is the one list of strategy names: ``strategy_names()`` (built-ins in the order below,
then any strategy registered later) feeds the routers, the evaluation, the API schema and the CLI's
``--strategy`` choices, and ``costs()`` (each class's ``cost``) is the default cost table that a
router config's ``costs`` overrides. ``strategy_traits(name)`` gives what a strategy declares it needs
(knowledge base, adapter, example bank, reader) and does (groundedness, generation); the pipeline's
exclusions, the evaluation's cache keys and the router's signals read it. Adding a strategy is one module and one registration; see
docs/extending.md.

::

    from hybrid.strategies import get_strategy, strategy_names
    answer = get_strategy("rag").answer("What is the notice period?", ctx)  # ctx: StrategyContext
    strategy_names()  # ('few_shot', 'rag', 'tuned', 'tuned_rag', 'extract')
"""

from __future__ import annotations

from core.registry import Registry

STRATEGIES: Registry = Registry("strategy")

# importing the modules fills the registry; their order here is the built-ins' order in
# strategy_names() (the rules router's tie-break order among equal costs)
from hybrid.strategies import few_shot as _few_shot  # noqa: E402,F401
from hybrid.strategies import rag as _rag  # noqa: E402,F401
from hybrid.strategies import tuned as _tuned  # noqa: E402,F401
from hybrid.strategies import extract as _extract  # noqa: E402,F401


def get_strategy(name: str):
    """An instance of the strategy registered as ``name`` (InputError lists the known ones)."""
    return STRATEGIES.get(name)()


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy: the built-ins first, in their import order above, then the ones
    registered after (a plugin module, a test), in registration order."""
    return tuple(STRATEGIES.in_order())


def costs() -> dict[str, float]:
    """Each strategy's class ``cost`` (relative cost per answer): the default cost table; a router
    config's ``costs`` overrides entries of it per app. A class without ``cost`` costs 1.0."""
    return {n: float(getattr(STRATEGIES.get(n), "cost", 1.0)) for n in strategy_names()}


def method_versions(name: str) -> dict[str, int]:
    """The ``method`` versions that key cached answers of ``name`` (``auto``: every strategy's): a
    strategy bumps its ``method`` when the same inputs would now give a different answer."""
    names = strategy_names() if name == "auto" else (name,)
    found = {n: getattr(STRATEGIES.get(n), "method", None) for n in names}
    return {n: int(v) for n, v in found.items() if v is not None}


def strategy_traits(name: str):
    """The ``Traits`` the strategy registered as ``name`` declares (``hybrid.strategies.base.Traits``:
    defaults filled in for what its class does not set)."""
    from hybrid.strategies.base import traits

    return traits(STRATEGIES.get(name))


def names_with(trait: str) -> tuple[str, ...]:
    """Every registered strategy whose trait ``trait`` is true, in ``strategy_names()`` order."""
    return tuple(n for n in strategy_names() if getattr(strategy_traits(n), trait))
