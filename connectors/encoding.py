"""Decode text files without mangling them: UTF-8, UTF-16 (BOM or heuristic) and cp1252/latin-1.

Order matters. A BOM is authoritative. UTF-16 without a BOM comes next: it shows up as NUL bytes in
every other position, and plain ASCII in UTF-16 is also valid UTF-8 (NULs included), so the guess
must run before UTF-8 gets a chance to call it binary. Strict UTF-8 next: real-world non-UTF-8 text
almost never decodes as UTF-8 by accident, so a success is trustworthy. Anything else single-byte is
tried with charset-normalizer, and only Western encodings are accepted from it without question:
short files (a two-line Markdown note) give it too little evidence, and it happily guesses cp1250 or
cp1251 for German umlauts.

Control bytes: whatever the encoding, the decoded text may hold a few C0 control characters that no
text contains (a stray 0x02 from a bad copy). Up to ``CONTROL_TOLERANCE`` of the characters (at least
two in any file) are removed and counted in ``Decoded.control_stripped``, so one bad byte never costs
the whole document. More than that is binary data: every real binary file we measured (ELF, PNG, PDF,
DOCX, gzip, .pyc) has 8% or more, so 1% leaves a wide margin on both sides.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from core.errors import SkipError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 control characters that never occur in text (tab, newline, carriage return and form feed do).
_BINARY = set(range(0, 9)) | {11} | set(range(14, 32))
_BINARY_BYTES = bytes(sorted(_BINARY))
_CONTROL = re.compile("[" + "".join(f"\\x{c:02x}" for c in sorted(_BINARY)) + "]")
# Share of characters that may be stray control bytes before a file counts as binary.
CONTROL_TOLERANCE = 0.01


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str
    control_stripped: int = 0  # stray control characters removed from the text


def _control_limit(n_chars: int) -> int:
    return max(2, int(n_chars * CONTROL_TOLERANCE))


def _too_many_controls(count: int, n_chars: int) -> SkipError | None:
    if count > _control_limit(n_chars):
        return SkipError("binary", f"looks like binary data, not text ({count} of {n_chars} characters are "
                                   f"control codes; at most {_control_limit(n_chars)} are tolerated)")
    return None


def strip_controls(text: str, enc: str) -> Decoded:
    """Remove stray control characters from decoded ``text``; raise ``SkipError('binary')`` past the tolerance."""
    clean, count = _CONTROL.subn("", text)
    err = _too_many_controls(count, len(text))
    if err:
        raise err
    return Decoded(clean, enc, count)


def utf16_guess(data: bytes) -> str | None:
    """UTF-16 without BOM: ASCII-heavy text has a NUL in every other byte.

    It runs on every file, so it looks at the first 64 KiB only; the decode then checks the rest."""
    if len(data) < 4 or len(data) % 2:
        return None
    head = data[:65536]
    even = head[0::2].count(0) / (len(head) / 2)
    odd = head[1::2].count(0) / (len(head) / 2)
    if odd > 0.4 and even < 0.05:
        return "utf-16-le"
    if even > 0.4 and odd < 0.05:
        return "utf-16-be"
    return None


def utf16_encoding(data: bytes) -> str | None:
    """The UTF-16 codec for ``data`` when it is UTF-16 (a BOM or the NUL pattern), else None."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return utf16_guess(data)


def decode(data: bytes, *, strict_utf8: bool = False) -> Decoded:
    """Decode ``data``; raise ``SkipError('encoding'|'binary')`` when it cannot be done honestly.

    >>> decode(b"one stray \\x02byte")
    Decoded(text='one stray byte', encoding='utf-8', control_stripped=1)
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return strip_controls(data.decode(enc), enc.replace("-sig", ""))
            except UnicodeDecodeError as e:
                raise SkipError("encoding", f"invalid {enc} after a byte-order mark at byte {e.start}") from None
    guess16 = utf16_guess(data)
    if guess16:
        try:
            return strip_controls(data.decode(guess16), guess16)
        except UnicodeDecodeError:
            pass  # NULs in that pattern but not UTF-16 (a lone surrogate): let the checks below judge
    try:
        return strip_controls(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    if strict_utf8:
        raise SkipError("encoding", "not valid UTF-8 (strict_utf8 is on)")
    # Count on the bytes before the detector runs: it is slow on large binary files. Single-byte
    # code pages map each control byte to the same code point, so the count is the same after.
    err = _too_many_controls(len(data) - len(data.translate(None, _BINARY_BYTES)), len(data))
    if err:
        raise err
    enc = _western_or_detected(data)
    try:
        return strip_controls(data.decode(enc), enc)
    except (UnicodeDecodeError, LookupError):
        raise SkipError("encoding", f"could not decode as {enc}") from None


def decode_text(data: bytes, *, strict_utf8: bool = False) -> tuple[str, str]:
    """``(text, encoding)`` of :func:`decode`, for callers that need no control-byte count.

    >>> decode_text("Grüße".encode("cp1252"))
    ('Grüße', 'cp1252')
    """
    d = decode(data, strict_utf8=strict_utf8)
    return d.text, d.encoding


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
