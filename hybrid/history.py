"""Conversation history: checking it, trimming it, and deciding when a follow-up needs it.

::

    from hybrid.history import retrieval_query
    retrieval_query("How much are they?", [{"role": "user", "content": "Do you sell trail shoes?"}])
    # -> "Do you sell trail shoes? How much are they?"

Heuristics only (no model call): ``depends_on_history`` spots a query that cannot stand alone and
``retrieval_query`` then prefixes the previous user turn for retrieval and routing.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from core.errors import InputError
from core.protocols import Message

_DEPENDENT = re.compile(
    r"\b(it|its|it's|that|this|those|these|they|them|their|theirs|he|she|him|her|there|one|ones|"
    r"same|former|latter|above|previous|else|other)\b", re.IGNORECASE)
_ELLIPSIS = re.compile(r"^\s*(and|or|also|but|so|what about|how about|what if|and if|same for|then)\b",
                       re.IGNORECASE)


def depends_on_history(query: str) -> bool:
    """True when the query cannot be understood alone: a pronoun/demonstrative pointing back, an
    elliptical start ("and for kids?", "what about returns?"), or a fragment of three words or fewer."""
    return bool(_DEPENDENT.search(query) or _ELLIPSIS.search(query) or len(query.split()) <= 3)


def retrieval_query(query: str, history: Sequence[Message]) -> str:
    """The text retrieval and routing see: the query, prefixed by the previous user turn only when
    the query depends on it. No model call, so there is no extra prompt to keep in line."""
    if not history or not depends_on_history(query):
        return query
    prev = next((m["content"] for m in reversed(history) if m.get("role") == "user"), "")
    return f"{prev} {query}".strip() if prev else query


def validate_history(history: Any) -> list[Message]:
    """``history`` as a clean list of ``{role, content}`` messages (None is no history); anything
    else is a one-line ``InputError`` naming the bad entry."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise InputError(f"history must be a list of {{role, content}} messages, got {type(history).__name__}")
    out = []
    for i, m in enumerate(history):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
            raise InputError(f"history[{i}] must be {{'role': 'user'|'assistant', 'content': str}}, got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def bounded_history(history: list[Message], turns: int, count_tokens: Callable[[list[Message]], int],
                    max_tokens: int) -> list[Message]:
    """The last ``turns`` user/assistant pairs of ``history`` (none when ``turns`` is 0), dropping the
    oldest pairs until ``count_tokens`` of what is kept is at most ``max_tokens``."""
    keep = history[-2 * turns:] if turns else []
    while keep and count_tokens(keep) > max_tokens:
        keep = keep[2:] if len(keep) > 1 else []
    return keep
