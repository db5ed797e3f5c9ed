"""The files connector: globs, size cap, symlinks, order."""

from __future__ import annotations

import os

import pytest

from connectors.base import Raw, Skip
from connectors.config import IngestConfig
from connectors.files import glob_match, walk


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "b.md").write_text("# beta")
    (root / "sub" / "c.txt").write_text("gamma")
    (root / "sub" / "deep" / "d.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / ".hidden" / "e.txt").write_text("hidden")
    (root / "f.xyz").write_text("unknown")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside the root")
    return root, outside


def rels(items):
    return [(i.meta["source"] if isinstance(i, Raw) else (i.source, i.reason)) for i in items]


def test_recursive_sorted_hidden_excluded_unknown_counted(tree):
    root, _ = tree
    assert rels(walk(root, IngestConfig())) == [
        "a.txt", "b.md", ("f.xyz", "unsupported"), "sub/c.txt", "sub/deep/d.pdf",
    ]


def test_include_and_exclude_globs(tree):
    root, _ = tree
    assert rels(walk(root, IngestConfig(include=["**/*.txt"]))) == ["a.txt", "sub/c.txt"]
    assert rels(walk(root, IngestConfig(include=["*.txt"], exclude=["sub/**", "**/.*/**"]))) == ["a.txt"]
    assert glob_match("x/y/z.pdf", "x/**/*.pdf") and not glob_match("x/z.pdfa", "**/*.pdf")


def test_symlink_out_of_the_root_is_a_counted_skip(tree):
    root, outside = tree
    os.symlink(outside / "secret.txt", root / "link.txt")
    os.symlink(outside, root / "linkdir")
    got = rels(walk(root, IngestConfig(include=["**/*.txt", "link*"])))
    assert ("link.txt", "outside_root") in got and ("linkdir", "outside_root") in got
    assert not any("secret" in str(g) for g in got)


def test_symlink_inside_the_root_is_followed_once_and_loops_end(tree):
    root, _ = tree
    os.symlink(root / "sub", root / "alias")
    os.symlink(root, root / "sub" / "up")  # a loop back to the root
    got = rels(walk(root, IngestConfig(include=["**/*.txt"])))
    assert "alias/c.txt" in got and "sub/c.txt" in got
    assert len(got) < 10  # the loop was cut
    got = rels(walk(root, IngestConfig(include=["**/*.txt"], follow_symlinks=False)))
    assert "alias/c.txt" not in got


def test_oversized_file_is_skipped_without_reading_it(tree):
    root, _ = tree
    (root / "big.txt").write_bytes(b"x" * 5000)
    items = list(walk(root, IngestConfig(include=["big.txt"], max_file_bytes=4096)))
    assert len(items) == 1 and isinstance(items[0], Skip) and items[0].reason == "too_large"


def test_single_file_source_and_metadata(tree):
    root, _ = tree
    (item,) = walk(root / "a.txt", IngestConfig())
    assert item.meta["source"] == "a.txt"
    assert item.meta["uri"] == (root / "a.txt").resolve().as_uri()
    assert item.meta["mime"] == "text/plain" and len(item.meta["sha256"]) == 64
    assert item.meta["modified"].endswith("+00:00")
