"""What connectors hand to the parse step: raw bytes to parse, or a counted skip."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class Raw:
    """Bytes of one source plus the metadata known before parsing (source, uri, sha256...)."""

    data: bytes
    name: str  # file name; its suffix picks the parser unless ``kind`` is set
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str | None = None  # parser suffix, e.g. '.html' for a web page served as text/html


@dataclass
class Skip:
    """One source (or part of one) that was not loaded, with a stable reason code."""

    source: str
    reason: str
    message: str

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.source, self.reason, self.message)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
