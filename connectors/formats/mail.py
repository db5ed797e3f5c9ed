"""E-mail (.eml): the body as text, sender, recipients, date and attachment names as metadata.

A whole message saved as UTF-16 (Windows tools do this: PowerShell's ``Out-File``, Notepad's
"Unicode") is not a byte stream the stdlib parser understands: its NUL bytes hide every header.
Such a file is decoded first (BOM or NUL pattern, see ``connectors.encoding``) and parsed as text.
"""

from __future__ import annotations

from typing import Any

from connectors.config import IngestConfig
from connectors.encoding import decode_text, utf16_encoding
from connectors.formats import Parsed, Part, _register
from connectors.formats.text import html_to_parts
from core.errors import SkipError


def _body_text(body: Any, from_text: bool) -> str:
    """The decoded body. A message parsed from text already holds 7bit/8bit bodies as characters;
    its declared charset describes the bytes before the file was re-saved as UTF-16, so applying it
    again would garble them. Base64 and quoted-printable bodies are still bytes and keep their charset."""
    cte = str(body.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if from_text and cte not in ("base64", "quoted-printable"):
        payload = body.get_payload()
        if isinstance(payload, str):
            return payload
    return body.get_content()


@_register((".eml",), "message/rfc822")
def parse_eml(data: bytes, name: str, cfg: IngestConfig) -> Parsed:
    """The plain-text body (or the HTML body, rendered) with sender, recipients and date as metadata.
    Attachments are listed by name in ``attachments``, not extracted."""
    import email
    from email import policy

    enc = utf16_encoding(data)
    try:
        if enc:
            text, enc = decode_text(data)
            msg = email.message_from_string(text, policy=policy.default)
        else:
            msg = email.message_from_bytes(data, policy=policy.default)
    except SkipError as e:
        raise SkipError("corrupt", f"unreadable UTF-16 e-mail: {e}") from None
    except Exception as e:  # noqa: BLE001
        raise SkipError("corrupt", f"unreadable e-mail: {e}") from None
    if not msg.keys():
        raise SkipError("corrupt", "not an e-mail message (no headers)")
    body = msg.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        try:
            content = _body_text(body, from_text=bool(enc))
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
    if enc:
        meta["encoding"] = enc  # the report notes every non-UTF-8 decode
    if attachments:
        meta["attachments"] = attachments
    return Parsed([Part(text)], meta=meta)
