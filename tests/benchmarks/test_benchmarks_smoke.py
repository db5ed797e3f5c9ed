"""The benchmark scripts run end to end on tiny inputs (hash embedder, a 20-doc / 5-query BEIR slice).

These check that the scripts work and write what they promise; the real figures come from
running them on the real datasets (see docs/retrieval-benchmark.md), never from tests.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))

from benchmarks import retrieval as bench_retrieval  # noqa: E402
from benchmarks import scale as bench_scale  # noqa: E402
from benchmarks._util import percentile  # noqa: E402

TOPICS = {
    "wing": "wing lift airfoil slipstream propeller",
    "heat": "heat conduction slab temperature thermal",
    "shell": "cylindrical shell buckling compression elastic",
    "boundary": "boundary layer turbulent skin friction transition",
    "shock": "shock wave hypersonic mach blunt body",
}


def write_tiny_beir(root: Path) -> Path:
    """20 documents on 5 topics (4 each) and one query per topic whose relevant docs are that topic's."""
    (root / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for t, (topic, words) in enumerate(TOPICS.items()):
        w = words.split()
        for i in range(4):
            did = f"{topic}-{i}"
            text = f"a study of {' '.join(w[i:] + w[:i])} in experiments number {i}"
            corpus.append({"_id": did, "title": f"{w[i]} report", "text": text})
            qrels.append(f"q{t}\t{did}\t{2 if i == 0 else 1}")
        queries.append({"_id": f"q{t}", "text": f"what is known about {w[0]} {w[1]} {w[2]}"})
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return root


def has_langchain_anchors() -> bool:
    return all(importlib.util.find_spec(m) for m in ("langchain_community", "langchain_classic", "rank_bm25"))


def run_retrieval(tmp_path: Path, *extra: str) -> dict:
    ds = write_tiny_beir(tmp_path / "tiny")
    out = tmp_path / "result.json"
    code = bench_retrieval.main(["--dataset", str(ds), "--embedder", "hash", "--out", str(out), "--k", "10",
                                 "--batch-size", "2", "--repeats", "1", *extra])
    assert code == 0
    return json.loads(out.read_text())


def check_quality(system: dict) -> None:
    for split in ("all", "test_split"):
        for metric in ("ndcg@10", "recall@100", "mrr@10"):
            assert 0.0 <= system[split][metric] <= 1.0


def test_retrieval_benchmark_this_project_only(tmp_path):
    r = run_retrieval(tmp_path, "--skip-langchain")
    assert r["docs"] == 20 and r["queries"] == 5 and r["comparison"] is None
    assert set(r["systems"]) == {"hybrid-dense", "hybrid-bm25", "hybrid-hybrid"}
    for s in r["systems"].values():
        check_quality(s)
        assert s["build_s"] > 0 and s["peak_rss_growth_mib"] >= 0
        assert s["latency"]["single"]["n"] == 5 and s["latency"]["batched"]["batch_size"] == 2
        assert s["latency"]["single"]["p95_ms"] >= s["latency"]["single"]["p50_ms"] > 0
    # every query's words occur only in its own topic's documents: keyword search must find them
    assert r["systems"]["hybrid-bm25"]["all"]["ndcg@10"] > 0.8
    assert r["systems"]["hybrid-bm25"]["all"]["recall@100"] == 1.0
    fs = r["fusion_study"]
    assert fs["dev_queries"] + fs["test_queries"] == 5
    assert set(fs["best"]) == {"rrf", "convex"}


@pytest.mark.skipif(not has_langchain_anchors(), reason="LangChain anchors not installed (pip install -e '.[bench]')")
@pytest.mark.slow  # spawns one child process per system for peak RSS
def test_retrieval_benchmark_side_by_side(tmp_path):
    r = run_retrieval(tmp_path, "--rss-children")
    names = {"hybrid-dense", "hybrid-bm25", "hybrid-hybrid", "langchain-faiss", "langchain-bm25",
             "langchain-ensemble", "langchain-ensemble-tuned"}
    assert set(r["systems"]) == names
    for name, s in r["systems"].items():
        check_quality(s)
        if name != "langchain-ensemble-tuned":
            assert s["peak_rss_growth_mib"] >= 0
            fresh = s["peak_rss_fresh_process_mib"]
            assert isinstance(fresh, float) and fresh > 20, (name, fresh)
            assert s["latency"]["batched"]["p50_ms"] > 0
    c = r["comparison"]
    assert set(c["ratios"]) == {"hybrid-dense", "hybrid-bm25", "hybrid-hybrid"}
    assert c["ratios"]["hybrid-hybrid"]["vs"] == "langchain-ensemble"
    assert c["ratios"]["hybrid-hybrid"]["build_s_ratio"] > 0
    # builds alternate (ours, theirs, ...) and the median of the three samples is what is compared
    ours = r["systems"]["hybrid-hybrid"]
    assert len(ours["build_samples_s"]) == 3 and ours["build_s"] == sorted(ours["build_samples_s"])[1]
    assert len(r["systems"]["langchain-ensemble"]["build_samples_s"]["faiss"]) == 3
    assert all(t["met"] in (True, False) for t in c["targets"].values())


def test_retrieval_benchmark_bad_dataset_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "retrieval.py"), "--dataset", str(tmp_path / "nope"),
                           "--embedder", "hash"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: BEIR dataset directory not found: {str(tmp_path / 'nope')!r}"


def test_scale_benchmark_tiny(tmp_path):
    out = tmp_path / "scale.json"
    assert bench_scale.main(["--sizes", "3000", "--queries", "40", "--single", "10", "--data", "lowrank",
                             "--threads", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    size = r["sizes"][0]
    assert size["n"] == 3000 and set(size["indexes"]) == {"flat", "hnsw", "ivfpq"}
    assert size["indexes"]["flat"]["search"][0]["search_setting"] == "exact"
    assert "recall_at_10" not in size["indexes"]["flat"]["search"][0]
    for kind in ("hnsw", "ivfpq"):
        rows = size["indexes"][kind]["search"]
        assert len(rows) == 2 and all(0.0 < row["recall_at_10"] <= 1.0 for row in rows)
        assert size["indexes"][kind]["index_mib"] > 0
    # HNSW on low-rank data is near exact at a few thousand points
    assert size["indexes"]["hnsw"]["search"][-1]["recall_at_10"] > 0.9
    assert "shared 2-core machine" in r["machine"]["note"]


def test_scale_held_out_queries_are_other_points_of_the_same_kind():
    from types import SimpleNamespace

    def queries(seed, query_seed, n):
        rng = np.random.default_rng(seed)
        basis = bench_scale.make_vectors(bench_scale.LATENT, bench_scale.DIM, rng, "gaussian")
        bench_scale.make_vectors(n, bench_scale.DIM, rng, "lowrank", basis)  # the corpus comes first
        args = SimpleNamespace(seed=seed, query_seed=query_seed, queries=50, data="lowrank")
        return bench_scale.query_vectors(args, rng, basis), basis

    default, basis = queries(0, None, 2000)
    held_out, _ = queries(0, 1, 2000)
    assert not np.allclose(default, held_out)
    assert np.array_equal(held_out, queries(0, 1, 3000)[0])  # its own stream: the same at any corpus size
    assert not np.array_equal(held_out, queries(0, 2, 2000)[0])
    # the same low-rank structure: both sets lie near the span of the corpus's latent basis
    q, _ = np.linalg.qr(basis.T)
    for x in (default, held_out):
        assert np.mean(np.linalg.norm(x @ q, axis=1)) > 0.9


def test_scale_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        bench_scale.main(["--sizes", "10"])
    assert e.value.code == 2
    assert "sizes must be >= 1000" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_scale.main(["--indexes", "flat,annoy"])
    assert "unknown index kind(s) ['annoy']" in capsys.readouterr().err


def test_percentile_matches_hand_values():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 95) == 10
    assert percentile([0, 10], 95) == pytest.approx(9.5)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_nearest_percentile_picks_an_observed_value_rounding_half_to_even():
    # the serving and pipeline figures: index round(q/100 * (n-1)), Python's round (half to even)
    assert percentile([4, 1, 3, 2], 50, method="nearest") == 3      # index 1.5 -> 2
    assert percentile([1, 2, 3, 4, 5, 6], 50, method="nearest") == 3  # index 2.5 -> 2
    assert percentile([1, 2, 3, 4, 5], 90, method="nearest") == 5     # index 3.6 -> 4
    assert percentile([1, 2, 3, 4, 5], 95, method="linear") == pytest.approx(4.8)
