"""Issue 14: `hybrid search` and `hybrid index stats` on a damaged knowledge base print one line
(the rebuild hint) and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.indexes.test_integrity import (PAGE, build, file_of, forget_checksums, root_page, smash,
                                          smash_vectors)


def hybrid(*args):
    return subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def damage_64k(kb):
    smash(file_of(kb, "sqlite"), 65536)  # the reproduction; the checksum sees it on open


def damage_chunks_page(kb):
    forget_checksums(kb)  # an older manifest: only the query that reads the page sees it
    db = file_of(kb, "sqlite")
    smash(db, (root_page(db, "chunks") - 1) * PAGE)


def damage_count_index(kb):
    forget_checksums(kb)
    db = file_of(kb, "sqlite")
    smash(db, (root_page(db, "documents_source_key") - 1) * PAGE)


def zero_faiss(kb):
    f = file_of(kb, "faiss")
    f.write_bytes(b"\0" * f.stat().st_size)  # FAISS itself refuses it, before any checksum


def damage_vectors(kb):
    forget_checksums(kb)  # only the score bound is left to catch it
    smash_vectors(file_of(kb, "faiss"))


@pytest.mark.parametrize("damage,args", [
    (damage_64k, ["search", "word5 topic"]),
    (damage_64k, ["index", "stats"]),
    (damage_chunks_page, ["search", "word5 topic"]),
    (damage_count_index, ["index", "stats"]),
    (damage_vectors, ["search", "word5 topic", "--mode", "dense"]),
    (zero_faiss, ["index", "stats"]),
])
def test_damaged_kb_is_one_line_exit_2(tmp_path, damage, args):
    kb = build(tmp_path / "kb")
    damage(kb)
    r = hybrid(*args, "--kb", str(kb))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert f"hybrid index rebuild --kb {kb}" in lines[0]
    assert r.stdout == ""  # no hits were printed
