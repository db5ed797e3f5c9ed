"""core.io: the one JSONL reader (and its on_error policy)."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from core.io import parse_jsonl, read_jsonl


def _write(tmp_path, data: bytes):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(data)
    return p


def test_rows_with_line_numbers_blank_lines_passed_over(tmp_path):
    p = _write(tmp_path, b'{"a": 1}\n\n  \n[2]\r\n"three"\n')
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (4, [2]), (5, "three")]


def test_lone_cr_line_ends_count_like_a_text_mode_file(tmp_path):
    p = _write(tmp_path, b'{"a": 1}\r{"b": 2}\r\n\r{"c": 3}')
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (2, {"b": 2}), (4, {"c": 3})]


def test_line_separators_inside_json_strings_stay_in_their_line(tmp_path):
    row = {"text": "one\u2028two\x85three"}
    text = json.dumps(row, ensure_ascii=False) + "\n" + json.dumps({"n": 2}) + "\n"
    assert list(parse_jsonl(text)) == [(1, row), (2, {"n": 2})]
    assert list(read_jsonl(_write(tmp_path, text.encode()))) == [(1, row), (2, {"n": 2})]


def test_bad_json_raises_with_the_line_by_default(tmp_path):
    p = _write(tmp_path, b'{"a": 1}\n{oops\n')
    with pytest.raises(InputError, match=r"rows\.jsonl:2: invalid JSON \(Expecting property name"):
        list(read_jsonl(p))


def test_not_utf8_raises_with_the_line_or_is_replaced(tmp_path):
    p = _write(tmp_path, b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"rows\.jsonl:2: not UTF-8"):
        list(read_jsonl(p))
    assert list(read_jsonl(p, errors="replace")) == [(1, {"a": 1}), (2, {"b": "caf\ufffd"})]


def test_on_error_skip_and_callable(tmp_path):
    p = _write(tmp_path, b'{"a": 1}\n{oops\n\xff\n[3]\n')
    assert list(read_jsonl(p, on_error="skip")) == [(1, {"a": 1}), (4, [3])]
    seen = []
    rows = list(read_jsonl(p, on_error=lambda n, e: seen.append((n, type(e).__name__))))
    assert rows == [(1, {"a": 1}), (4, [3])]
    assert seen == [(2, "JSONDecodeError"), (3, "UnicodeDecodeError")]


def test_parse_jsonl_names_its_source():
    with pytest.raises(InputError, match=r"^docs:1: invalid JSON"):
        list(parse_jsonl(["nope\n"], source="docs"))


def test_fsync_tree_flushes_every_file_then_the_directories(tmp_path, monkeypatch):
    import core.io as hio

    (tmp_path / "sub").mkdir()
    for name in ("a.bin", "sub/b.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "a.bin")
    flushed = []
    monkeypatch.setattr(hio, "fsync", lambda target: flushed.append(str(target)))
    hio.fsync_tree(tmp_path)
    rel = [p[len(str(tmp_path)):] or "/" for p in flushed]
    assert sorted(rel[:2]) == ["/a.bin", "/sub/b.json"]  # files first, links not followed
    assert rel[2:] == ["/sub", "/"]                      # then directories, deepest first
