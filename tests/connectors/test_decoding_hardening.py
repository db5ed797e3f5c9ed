"""Issue 14, item 5: text that used to be skipped as binary or corrupt is decoded; binary still is not.

Each defect has its own test here: BOM-less UTF-16 text (both byte orders), one stray control byte
in a long UTF-8 file, and an e-mail saved as UTF-16. The last tests hold the other side of the line:
real binary files, and text with more control bytes than the tolerance, are still ``binary`` skips.
"""

from __future__ import annotations

import base64

import pytest

import connectors
from connectors.config import IngestConfig
from connectors.encoding import CONTROL_TOLERANCE, decode
from connectors.formats import parse_bytes
from core.errors import SkipError

CFG = IngestConfig()
ASCII_TEXT = "Quarterly report\nRevenue grew in every region.\nNo surprises this time.\n" * 4
# ~11 KB of ordinary UTF-8 prose with a few non-ASCII words, as in the report on the issue.
LONG_TEXT = ("Die Straße nach Köln ist lang; the road to Cologne is long. " * 190)[:11_000]


def skip_reason(data: bytes, name: str, cfg: IngestConfig = CFG) -> str:
    with pytest.raises(SkipError) as e:
        parse_bytes(data, name, cfg)
    return e.value.reason


# --- BOM-less UTF-16 ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("name", ["notes.txt", "notes.md"])
def test_bomless_utf16_ascii_text_is_decoded_not_skipped_as_binary(codec, name):
    # Pure ASCII in UTF-16 is also valid UTF-8 (NULs included): the case the UTF-8 branch used to reject.
    parsed = parse_bytes(ASCII_TEXT.encode(codec), name, CFG)
    assert parsed.meta["encoding"] == codec
    assert parsed.parts[0].text.split() == ASCII_TEXT.split()
    assert "control_chars_stripped" not in parsed.meta


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_bomless_utf16_html_is_decoded(codec):
    page = "<html><head><title>Plan</title></head><body><p>Ship the release on Friday.</p></body></html>"
    parsed = parse_bytes(page.encode(codec), "plan.html", CFG)
    assert parsed.meta["encoding"] == codec
    assert parsed.meta["title"] == "Plan"
    assert parsed.parts[0].text == "Ship the release on Friday."


def test_int16_numbers_with_the_utf16_nul_pattern_are_still_binary():
    # Small little-endian int16 values have the same NUL pattern as UTF-16 text, but decode to
    # control characters only.
    data = b"".join(n.to_bytes(2, "little") for n in range(1, 20)) * 40
    assert skip_reason(data, "samples.txt") == "binary"


# --- stray control bytes --------------------------------------------------------------------------


def test_one_stray_control_byte_in_an_11kb_utf8_file_is_stripped_and_noted():
    raw = LONG_TEXT.encode("utf-8")
    data = raw[:1000] + b"\x02" + raw[1000:]
    assert len(data) > 11_000
    parsed = parse_bytes(data, "prose.txt", CFG)
    assert parsed.parts[0].text == LONG_TEXT
    assert parsed.meta["encoding"] == "utf-8"
    assert parsed.meta["control_chars_stripped"] == 1
    assert [code for code, _ in parsed.notes] == ["control_stripped"]


def test_stray_control_bytes_in_a_cp1252_file_are_stripped_too():
    text = "Grüße aus München, schöne Grüße. " * 20
    data = text.encode("cp1252").replace(b"M\xfcnchen", b"M\xfcn\x07chen", 1)
    d = decode(data)
    assert (d.text, d.encoding, d.control_stripped) == (text, "cp1252", 1)


def test_stray_control_byte_in_html_is_stripped_and_noted_and_a_binary_page_is_skipped():
    page = b"<html><body><p>Hello \x02world, this is a page about the release.</p></body></html>"
    parsed = parse_bytes(page, "page.html", CFG)
    assert parsed.parts[0].text == "Hello world, this is a page about the release."
    assert parsed.meta["control_chars_stripped"] == 1
    assert [code for code, _ in parsed.notes] == ["control_stripped"]
    junk = b"<html><body><p>" + b"\x01\x02\x03\x04" * 100 + b"</p></body></html>"
    assert skip_reason(junk, "junk.html") == "binary"


def test_control_bytes_up_to_the_tolerance_are_text_and_beyond_it_binary():
    n = 10_000
    limit = int(n * CONTROL_TOLERANCE)
    body = bytearray(b"a" * n)
    for i in range(limit):
        body[i * 97] = 0x01
    assert decode(bytes(body)).control_stripped == limit
    body[n - 1] = 0x01  # one more than the tolerance
    assert skip_reason(bytes(body), "edge.txt") == "binary"


def test_real_binary_files_named_txt_are_still_skipped(shared_docs):
    for name in ("fake.docx", "fake-memo.pdf", "fake-power-point.pptx"):
        data = (shared_docs / name).read_bytes()
        assert skip_reason(data, f"{name}.txt") == "binary", name


def test_strip_note_reaches_the_ingest_report_and_document_metadata(tmp_path):
    raw = LONG_TEXT.encode("utf-8")
    (tmp_path / "prose.txt").write_bytes(raw[:500] + b"\x02" + raw[500:])
    (tmp_path / "wide.txt").write_bytes(ASCII_TEXT.encode("utf-16-le"))
    result = connectors.ingest([str(tmp_path)], IngestConfig(workers=1))
    assert result.report.skipped == []
    docs = {d.metadata["source"]: d for d in result.documents}
    assert docs["prose.txt"].metadata["control_chars_stripped"] == 1
    assert "\x02" not in docs["prose.txt"].text
    assert docs["wide.txt"].metadata["encoding"] == "utf-16-le"
    notes = {(n.source, n.code) for n in result.report.notes}
    assert ("prose.txt", "control_stripped") in notes
    assert ("wide.txt", "decoded") in notes


# --- UTF-16 e-mail --------------------------------------------------------------------------------

MAIL = (
    "From: Anna Weiß <anna@example.org>\r\n"
    "To: team@example.org\r\n"
    "Subject: Grüße zum Release\r\n"
    "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "The build is green. Schöne Grüße, Anna\r\n"
)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])  # with a BOM, and without one
def test_utf16_email_is_decoded_not_skipped_as_corrupt(codec):
    parsed = parse_bytes(MAIL.encode(codec), "release.eml", CFG)
    meta = parsed.meta
    assert meta["title"] == "Grüße zum Release"
    assert meta["from"] == "Anna Weiß <anna@example.org>"
    assert meta["encoding"] == codec
    assert parsed.parts[0].text.strip() == "The build is green. Schöne Grüße, Anna"


def test_utf16_email_with_a_base64_body_keeps_the_declared_charset():
    body = base64.b64encode("Schöne Grüße aus dem Büro".encode("latin-1")).decode("ascii")
    mail = MAIL.replace("charset=utf-8", "charset=iso-8859-1").replace("8bit", "base64")
    mail = mail.split("\r\n\r\n")[0] + "\r\n\r\n" + body + "\r\n"
    parsed = parse_bytes(mail.encode("utf-16"), "b64.eml", CFG)
    assert parsed.parts[0].text.strip() == "Schöne Grüße aus dem Büro"


def test_utf16_email_with_an_html_body_is_flattened():
    mail = MAIL.replace("text/plain", "text/html").replace(
        "The build is green. Schöne Grüße, Anna", "<html><body><p>Build <b>grün</b>.</p></body></html>"
    )
    parsed = parse_bytes(mail.encode("utf-16-le"), "html.eml", CFG)
    assert parsed.parts[0].text == "Build grün."


def test_utf8_email_is_unchanged():
    parsed = parse_bytes(MAIL.encode("utf-8"), "plain.eml", CFG)
    assert parsed.parts[0].text.strip() == "The build is green. Schöne Grüße, Anna"
    assert "encoding" not in parsed.meta


def test_utf16_email_that_is_not_an_email_is_still_corrupt():
    assert skip_reason("just a sentence, no headers at all\r\n".encode("utf-16"), "x.eml") == "corrupt"
