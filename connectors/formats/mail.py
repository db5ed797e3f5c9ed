"""E-mail (.eml): the body as text, sender, recipients, date and attachment names as metadata."""

from __future__ import annotations

from typing import Any

from connectors.config import IngestConfig
from connectors.formats import Parsed, Part, _register
from connectors.formats.text import html_to_parts
from core.errors import SkipError


@_register((".eml",), "message/rfc822")
def parse_eml(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """The plain-text body (or the HTML body, rendered) with sender, recipients and date as metadata.
    Attachments are listed by name in ``attachments``, not extracted."""
    import email
    from email import policy

    try:
        msg = email.message_from_bytes(data, policy=policy.default)
    except Exception as e:  # noqa: BLE001
        raise SkipError("corrupt", f"unreadable e-mail: {e}") from None
    if not msg.keys():
        raise SkipError("corrupt", "not an e-mail message (no headers)")
    body = msg.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        try:
            content = body.get_content()
        except Exception as e:  # noqa: BLE001 - bad charset or transfer encoding
            raise SkipError("corrupt", f"unreadable e-mail body: {e}") from None
        if body.get_content_subtype() == "html":
            _, text = html_to_parts(content)
        else:
            text = content
    attachments = [a.get_filename() or "" for a in msg.iter_attachments()] if msg.is_multipart() else []
    meta: dict[str, Any] = {
        "title": str(msg.get("Subject", "") or ""),
        "from": str(msg.get("From", "") or ""),
        "to": str(msg.get("To", "") or ""),
        "date": str(msg.get("Date", "") or ""),
    }
    if attachments:
        meta["attachments"] = attachments
    return Parsed([Part(text)], meta=meta)
