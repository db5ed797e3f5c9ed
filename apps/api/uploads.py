"""Upload names: an upload may not take the name of a document already in the app's knowledge base.

Citations show a document's ``source`` (its file name), so an upload named like a corpus file would
sit beside it and the reader would see two different sources with one name. The service refuses
such an upload with 409 and says to rename the file; nothing is replaced and nothing is stored.
"""

from __future__ import annotations

from typing import Any

from apps.api.errors import ApiError


def known_sources(backend: Any, app: str) -> set[str]:
    """The ``source`` names in ``app``'s knowledge base (blocking: run it in a worker thread).

    A backend that offers ``source_names(app)`` answers for itself. Until the ``Backend`` protocol has
    that method, the two backends in ``apps.api.backend`` are read here: RealBackend through the
    app's ``KnowledgeBase.documents()``, FakeBackend through its in-memory documents.
    """
    own = getattr(backend, "source_names", None)
    if callable(own):
        return set(own(app))
    if hasattr(backend, "_assistant"):  # RealBackend
        kb = backend._assistant(app).knowledge_base
        if kb is None:
            return set()
        return {str(d.metadata.get("source", "")) for d in kb.documents()}
    docs = getattr(backend, "_docs", {}).get(app, [])  # FakeBackend
    return {str(d.metadata.get("source", "")) for d in docs}


def refuse_taken_names(app: str, names: list[str], taken: set[str]) -> None:
    """409 naming every upload whose stored name is already a source (or a pending upload) in ``app``."""
    clash = [n for n in names if n in taken]
    if clash:
        listed = ", ".join(repr(n) for n in clash)
        raise ApiError(409, f"app {app!r} already has a document named {listed} (a corpus file or an earlier "
                            "upload); citations would show two sources with one name: rename the file and "
                            "upload it again", "conflict")
