"""Per-query routers: ``rules``, ``learned`` and ``fixed:<strategy>``. Each returns a ``Decision``.

::

    from hybrid.routing import make_router
    router = make_router("rules", cfg)           # or "learned" (needs a trained model), "fixed:rag"
    decision = router.route(query, route_ctx)    # route_ctx: hybrid.routing.signals.RouteContext
"""

from __future__ import annotations

from pathlib import Path

from core.registry import Registry

ROUTERS: Registry = Registry("router")

from hybrid.routing import rules as _rules  # noqa: E402,F401  (registers "rules")
from hybrid.routing import learned as _learned  # noqa: E402,F401  (registers "learned")


def make_router(kind: str, cfg=None, *, model_path: str | Path | None = None, app_name: str = "",
                embedder=None):
    """Build a router from its config name. ``learned`` loads its JSON model and checks it belongs
    to ``app_name`` and ``embedder``."""
    from hybrid.routing.config import RouterConfig
    from hybrid.routing.fixed import FixedRouter

    cfg = cfg or RouterConfig()
    if kind.startswith("fixed:"):
        return FixedRouter(kind.split(":", 1)[1])
    cls = ROUTERS.get(kind)
    if kind == "learned":
        return cls.load(model_path, cfg, app_name=app_name, embedder=embedder)
    return cls(cfg)
