"""Decode text files without mangling them: UTF-8, UTF-16 (BOM or heuristic) and cp1252/latin-1.

Order matters. A BOM is authoritative. Strict UTF-8 next: real-world non-UTF-8 text almost never
decodes as UTF-8 by accident, so a success is trustworthy. UTF-16 without a BOM shows up as NUL
bytes in every other position. Anything else single-byte is tried with charset-normalizer, and only
Western encodings are accepted from it without question: short files (a two-line Markdown note) give
it too little evidence, and it happily guesses cp1250 or cp1251 for German umlauts.
"""

from __future__ import annotations

import codecs

from core.errors import SkipError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that never occur in text; their presence means binary data.
_BINARY = set(range(0, 9)) | {11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}


def _utf16_guess(data: bytes) -> str | None:
    """UTF-16 without BOM: ASCII-heavy text has a NUL in every other byte."""
    if len(data) < 4 or len(data) % 2:
        return None
    even = data[0::2].count(0) / (len(data) / 2)
    odd = data[1::2].count(0) / (len(data) / 2)
    if odd > 0.4 and even < 0.05:
        return "utf-16-le"
    if even > 0.4 and odd < 0.05:
        return "utf-16-be"
    return None


def decode_text(data: bytes, *, strict_utf8: bool = False) -> tuple[str, str]:
    """Return ``(text, encoding)``; raise ``SkipError('encoding'|'binary')`` when it cannot be done honestly.

    >>> decode_text("Grüße".encode("cp1252"))
    ('Grüße', 'cp1252')
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc.replace("-sig", "")
            except UnicodeDecodeError as e:
                raise SkipError("encoding", f"invalid {enc} after a byte-order mark at byte {e.start}") from None
    try:
        text = data.decode("utf-8")
        if any(ord(c) in _BINARY for c in text[:4096]):
            raise SkipError("binary", "looks like binary data (control bytes), not text")
        return text, "utf-8"
    except UnicodeDecodeError:
        pass
    guess16 = _utf16_guess(data)
    if guess16:
        try:
            return data.decode(guess16), guess16
        except UnicodeDecodeError:
            pass
    if strict_utf8:
        raise SkipError("encoding", "not valid UTF-8 (strict_utf8 is on)")
    head = data[:4096]
    if sum(b in _BINARY for b in head) > max(2, len(head) // 100):
        raise SkipError("binary", "looks like binary data (control bytes), not text")
    enc = _western_or_detected(data)
    try:
        return data.decode(enc), enc
    except (UnicodeDecodeError, LookupError):
        raise SkipError("encoding", f"could not decode as {enc}") from None


def _western_or_detected(data: bytes) -> str:
    """cp1252 unless the detector is confident of something else; cp1252 decodes every byte
    latin-1 does (bar five undefined ones) and adds the typographic quotes Windows writes."""
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
    except Exception:  # noqa: BLE001 - detector failures fall back to the Western default
        best = None
    if best is not None and len(data) >= 200 and best.encoding not in ("ascii", "utf_8"):
        enc = best.encoding
        # The detector often confuses the Central/Eastern European code pages on short text;
        # only trust it when the text is long enough to carry evidence.
        if best.percent_chaos < 0.1 and enc not in ("cp1250", "cp1251", "cp1253", "cp1257", "latin_2"):
            return codecs.lookup(enc).name
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"
