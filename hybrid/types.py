"""Public alias of ``core.types`` (the docs name ``hybrid.types.Document``); code imports ``core.types``."""

from core.types import *  # noqa: F401,F403

__all__ = ["Answer", "Chunk", "Citation", "Decision", "Document", "Hit", "stable_id"]
