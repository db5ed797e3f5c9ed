"""``indexes.migrate`` and ``hybrid index migrate``: a FAISS knowledge base copied to Milvus Lite
(real, embedded) without re-embedding, and every bad input a one-line error that leaves nothing behind."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("milvus_lite")
pytest.importorskip("pymilvus")

from click.testing import CliRunner  # noqa: E402

from core.errors import ConfigError, InputError, KnowledgeBaseError  # noqa: E402
from core.types import Document  # noqa: E402
from hybrid.cli.index_migrate import migrate as migrate_command  # noqa: E402
from indexes import milvus  # noqa: E402
from indexes.backends import BackendConfig  # noqa: E402
from indexes.config import IndexConfig  # noqa: E402
from indexes.embed import HashEmbedder  # noqa: E402
from indexes.kb import KnowledgeBase  # noqa: E402
from indexes.migrate import migrate, parse_target  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.indexes.conftest import make_docs, snapshot  # noqa: E402

QUERIES = ["notice before ending the lease", "court fees appeal", "bake bread", "personal data requests",
           "paid holiday overtime"]
FILTERS = [None, {"source": ["lease.md", "privacy.html"]}, {"modified": {"gte": "2023-01-01"}}]


def lite(tmp_path: Path, name: str = "target") -> BackendConfig:
    return parse_target(f"milvus://{tmp_path / (name + '.db')}")


def answers(kb: KnowledgeBase) -> list[list[tuple[str, float]]]:
    """Top results (chunk id, rounded score) for every query, mode and filter."""
    return [[(h.chunk.id, round(h.score, 4)) for h in kb.search(q, k=4, mode=m, filters=f)]
            for q in QUERIES for m in ("dense", "bm25", "hybrid") for f in FILTERS]


def chunk_ids(kb: KnowledgeBase) -> list[str]:
    return sorted(r[0] for r in kb._state.db.execute("SELECT chunk_id FROM chunks"))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the copy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_migrated_kb_answers_as_the_source_and_keeps_syncing_without_re_embedding(tmp_path, cfg, docs, kind):
    src = tmp_path / "kb"
    with KnowledgeBase.create(src, dataclasses.replace(cfg, index=kind), embedder=HashEmbedder()) as kb:
        kb.sync(docs + make_docs("2")[:2])
        kb.delete([make_docs("2")[0].id])  # an HNSW source then holds a tombstone
        want, ids, manifest = answers(kb), chunk_ids(kb), kb.manifest
    report = migrate(src, tmp_path / "kb-milvus", lite(tmp_path))
    assert report.chunks == len(ids) and report.documents == len(docs) + 1 and report.index == kind
    with KnowledgeBase.open(tmp_path / "kb-milvus", embedder=HashEmbedder()) as moved:
        s = moved.stats()
        assert (s["backend"], s["milvus_rows"], s["chunks"], s["tombstones"]) == ("milvus", len(ids), len(ids), 0)
        assert moved.manifest["embedder"] == manifest["embedder"] and moved.manifest["index"] == kind
        assert moved.manifest["migrated_from"]["path"] == str(src.resolve())
        assert chunk_ids(moved) == ids
        got = answers(moved)
        for a, b in zip(want, got):
            assert [c for c, _ in a] == [c for c, _ in b]
            assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)
        assert moved.sync(docs + make_docs("2")[1:2]).chunks_embedded == 0  # content hashes came along
        assert moved.sync(make_docs("3")[:1]).chunks_embedded > 0
        assert moved.stats()["milvus_rows"] == moved.stats()["chunks"]
    with KnowledgeBase.open(src, embedder=HashEmbedder()) as kb:  # the source is untouched
        assert answers(kb) == want


def test_a_lite_target_inside_the_new_kb_is_stored_relative_to_it(tmp_path, kb):
    kb.close()
    out = tmp_path / "moved"
    migrate(kb.path, out, parse_target("milvus://", out=out))
    migrate(kb.path, tmp_path / "named", parse_target(f"milvus://{tmp_path / 'named' / 'v.db'}/legal_kb",
                                                      out=tmp_path / "named"))
    entries = [json.loads((p / "manifest.json").read_text())["backend"] for p in (out, tmp_path / "named")]
    assert entries[0]["uri"] == "milvus.db" and entries[0]["collection"] == milvus.default_collection(out)
    assert (entries[1]["uri"], entries[1]["collection"]) == ("v.db", "legal_kb")


def ivfpq_kb(tmp_path: Path, refine: str) -> Path:
    cfg = IndexConfig(embedder="hash", index="ivfpq", chunk_size=16, chunk_overlap=0, ivf_nlist=4, ivf_nprobe=4,
                      ivf_m=8, ivf_nbits=4, ivf_refine=refine, ivf_k_factor=4)
    docs = [Document.create(f"Clause {i}: the {w} must be reported within {i} days.", {"source": f"s{i}"})
            for i, w in enumerate(["fire", "flood", "theft", "damage", "loss", "injury", "delay", "defect"] * 25)]
    with KnowledgeBase.create(tmp_path / f"ivf-{refine}", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs)
    return tmp_path / f"ivf-{refine}"


def test_ivfpq_sources_copy_their_refine_store_or_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="index=ivfpq is not available with backend milvus; pass --index"):
        migrate(ivfpq_kb(tmp_path, "flat"), tmp_path / "a", lite(tmp_path, "a"))
    with pytest.raises(KnowledgeBaseError, match="without a refine store: its vectors cannot be read back"):
        migrate(ivfpq_kb(tmp_path, "none"), tmp_path / "b", lite(tmp_path, "b"), index="flat")
    with pytest.raises(KnowledgeBaseError, match="8-bit codes .* pass --lossy"):
        migrate(ivfpq_kb(tmp_path, "sq8"), tmp_path / "c", lite(tmp_path, "c"), index="flat")
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))
    for refine, lossy in (("flat", False), ("sq8", True)):
        src = tmp_path / f"ivf-{refine}"
        migrate(src, tmp_path / f"to-{refine}", lite(tmp_path, refine), index="flat", lossy=lossy)
        with KnowledgeBase.open(src, embedder=HashEmbedder()) as a, \
                KnowledgeBase.open(tmp_path / f"to-{refine}", embedder=HashEmbedder()) as b:
            vids = [int(r[0]) for r in a._state.db.execute("SELECT vid FROM chunks")]
            exact = a._state.vectors.reconstruct(vids)
            copied = b._state.vectors.reconstruct(vids)
            cosine = (exact * copied).sum(axis=1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(copied, axis=1)
            assert cosine.min() > (0.9999 if refine == "flat" else 0.99), (refine, cosine.min())


# -- bad input -----------------------------------------------------------------------------------------
def test_a_source_that_is_not_a_knowledge_base_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(KnowledgeBaseError, match="no knowledge base in .*notes .*--from must be a knowledge-base"):
        migrate(tmp_path / "notes", tmp_path / "out", lite(tmp_path))
    assert not (tmp_path / "out").exists()


def test_an_unreachable_target_is_a_one_line_error_and_leaves_nothing(tmp_path, kb):
    kb.close()
    target = parse_target(f"milvus://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(KnowledgeBaseError) as e:
        migrate(kb.path, tmp_path / "out", target)
    assert "cannot reach Milvus at http://127.0.0.1:" in str(e.value) and "within 2s" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_a_target_collection_of_another_embedder_is_refused_and_kept(tmp_path, kb, cfg, docs):
    kb.close()
    other = BackendConfig("milvus", milvus_uri=str(tmp_path / "shared.db"), milvus_collection="legal")
    with KnowledgeBase.create(tmp_path / "other", dataclasses.replace(cfg, embedder="hash:32"),
                              embedder=HashEmbedder(32), backend=other) as o:
        o.sync(docs)
    with pytest.raises(KnowledgeBaseError, match="collection legal .* built with embedder .*dim 32.* dim 64"):
        migrate(kb.path, tmp_path / "out", parse_target(f"milvus://{tmp_path / 'shared.db'}/legal"))
    assert not (tmp_path / "out").exists()
    with KnowledgeBase.open(tmp_path / "other", embedder=HashEmbedder(32)) as o:  # not dropped
        assert o.stats()["milvus_rows"] == o.stats()["chunks"] > 0


def test_other_bad_inputs_are_one_line_errors(tmp_path, kb):
    kb.close()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="is not an empty directory"):
        migrate(kb.path, tmp_path / "full", lite(tmp_path))
    with pytest.raises(InputError, match="--out must be a new directory"):
        migrate(kb.path, kb.path, lite(tmp_path))
    migrate(kb.path, tmp_path / "m", lite(tmp_path))
    with pytest.raises(KnowledgeBaseError, match="backend milvus already"):
        migrate(tmp_path / "m", tmp_path / "m2", lite(tmp_path, "m2"))
    for bad in ("qdrant://host", "milvus://host:99999", "milvus://a b"):
        with pytest.raises(InputError, match="--to must be|cannot read the Milvus target"):
            parse_target(bad)


def test_target_grammar():
    assert parse_target("milvus://milvus").milvus_uri == "http://milvus:19530"
    got = parse_target("milvus://10.0.0.5:19531/legal_kb", timeout=3)
    assert (got.milvus_uri, got.milvus_collection, got.milvus_timeout) == ("http://10.0.0.5:19531", "legal_kb", 3.0)
    assert parse_target("https://milvus.example.com:443", "c").milvus_collection == "c"
    assert parse_target("milvus:///data/kb.db/c2").milvus_uri == "/data/kb.db"
    assert parse_target("milvus:///data/kb.db/c2", "over").milvus_collection == "over"
    assert parse_target("milvus://").milvus_uri == ""


# -- the command -----------------------------------------------------------------------------------------
def test_the_command_copies_and_prints_one_line(tmp_path, kb):
    kb.close()
    res = CliRunner().invoke(migrate_command, ["--from", str(kb.path), "--to", f"milvus://{tmp_path / 't.db'}/c1",
                                               "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().startswith(f"{kb.path} -> {kb.path}-milvus:") and "collection c1" in res.output
    with KnowledgeBase.open(f"{kb.path}-milvus", embedder=HashEmbedder()) as moved:
        assert moved.stats()["milvus_collection"] == "c1"


def test_the_command_reports_bad_input_in_one_line(tmp_path):
    res = CliRunner().invoke(migrate_command, ["--from", str(tmp_path / "nope"), "--to", "milvus://"])
    assert res.exit_code == 1 and res.exception is not None and isinstance(res.exception, SystemExit)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: no knowledge base in")


def hybrid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def untied(hits: list[tuple[str, float]]) -> list[str]:
    """The chunk ids scored clearly above the last hit (which one of equal-scored hits makes the cut is arbitrary)."""
    return sorted(c for c, s in hits if s > hits[-1][1] + 1e-3) if hits else []


def test_hybrid_index_migrate_is_a_subcommand_of_the_installed_cli(tmp_path, kb):
    """Through ``hybrid`` itself (the registration on the ``index`` group), not the click command alone."""
    want, ids = answers(kb), chunk_ids(kb)
    kb.close()
    listed = hybrid("index", "--help")
    assert listed.returncode == 0 and "migrate  Copy the FAISS knowledge base" in listed.stdout
    r = hybrid("index", "migrate", "--from", str(kb.path), "--to", "milvus://", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(f"{kb.path} -> {kb.path}-milvus:") and r.stdout.count("\n") == 1
    with KnowledgeBase.open(f"{kb.path}-milvus", embedder=HashEmbedder()) as moved:
        assert moved.stats()["backend"] == "milvus" and (moved.path / "milvus.db").exists()
        assert chunk_ids(moved) == ids
        for a, b in zip(want, answers(moved)):  # the same ranking; hits tied with the last one may swap
            assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)
            assert untied(a) == untied(b)


def test_a_rebuild_onto_milvus_is_refused_and_points_to_migrate(tmp_path, kb, cfg):
    kb.close()
    before = snapshot(kb.path)
    r = hybrid("index", "rebuild", "--kb", str(kb.path), "--set", "backend=milvus", "-q")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"rebuild cannot move {kb.path} to backend milvus" in lines[0]
    assert f"`hybrid index migrate --from {kb.path} --to milvus://`" in lines[0]
    assert snapshot(kb.path) == before and not (tmp_path / "kb.rebuild").exists()
    with pytest.raises(ConfigError, match="backend faiss, not milvus; copy it there without re-embedding: "
                                          "`hybrid index migrate --from"):
        KnowledgeBase.open_or_create(kb.path, dataclasses.replace(cfg, backend="milvus"), embedder=HashEmbedder())
    with pytest.raises(ConfigError, match="rebuilds FAISS knowledge bases only.*hybrid index build --kb DIR"):
        KnowledgeBase.rebuild(tmp_path / "new", make_docs(), dataclasses.replace(cfg, backend="milvus"),
                              embedder=HashEmbedder())
    assert not (tmp_path / "new").exists() and snapshot(kb.path) == before
