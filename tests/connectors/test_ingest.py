"""End to end: the shared corpus, the edge folder, the parse bounds and the ``hybrid ingest`` command."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest

import connectors
from connectors.config import IngestConfig
from core.config import load_config
from tests.conftest import DOCS, EDGE, ROOT

GOOD = sorted(p.name for p in DOCS.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def corpus():
    return connectors.ingest([str(DOCS)], IngestConfig())


def test_every_good_file_is_loaded_or_a_reported_duplicate(corpus):
    kept = {d.metadata["source"] for d in corpus.documents}
    dup = {d.source.split(" p.")[0] for d in corpus.report.duplicates}
    assert set(GOOD) <= kept | dup
    assert "fake-memo.pdf" in dup  # identical to page 1 of fake-memo-with-duplicate-page.pdf
    assert not [s for s in corpus.report.skipped if not s.source.startswith("edge/")]


def test_every_edge_file_is_accounted_for_with_a_reason(corpus):
    skips = {s.source: s.reason for s in corpus.report.skipped}
    assert skips == {
        "edge/copy-protected.pdf": "copy_protected",
        "edge/empty.txt": "empty",
        "edge/fake-text-all-whitespace.txt": "empty",
        "edge/password.pdf": "encrypted",
    }
    dups = {d.source: (d.reason, d.kept_source) for d in corpus.report.duplicates}
    # decoded correctly, so they equal their UTF-8 twins and are dropped as duplicates
    assert dups["edge/fake-text-utf-16.txt"] == ("exact", "fake-text.txt")
    assert dups["edge/umlauts-non-utf8.md"] == ("exact", "umlauts-utf8.md")
    notes = {(n.source, n.message) for n in corpus.report.notes}
    assert ("edge/umlauts-non-utf8.md", "not UTF-8: decoded as cp1252") in notes
    assert ("edge/fake-incomplete-json.txt", "looks like truncated or invalid JSON; loaded as plain text") in notes


def test_documents_carry_the_required_metadata(corpus):
    for d in corpus.documents:
        for key in ("source", "uri", "title", "mime", "sha256", "modified"):
            assert d.metadata.get(key), (key, d.metadata)
    pages = [d.metadata["page"] for d in corpus.documents if d.metadata["source"] == "multi-column-2p.pdf"]
    assert pages == [1, 2]


def test_ids_are_stable_across_runs(corpus):
    again = connectors.ingest([str(DOCS)], IngestConfig(include=["*.pdf", "*.md"]))
    before = {d.id for d in corpus.documents}
    assert again.documents and {d.id for d in again.documents} <= before


def test_near_duplicates_and_pii_counts_are_reported_without_values(tmp_path, caplog):
    base = " ".join(f"clause {i} says the tenant keeps the garden tidy and pays on time" for i in range(40))
    (tmp_path / "a.txt").write_text(base + "\nContact: jane.roe@example.com, card 4111 1111 1111 1111.")
    (tmp_path / "b.txt").write_text(base.replace("clause 7 says", "clause 7 states") + "\nContact: none.")
    (tmp_path / "c.txt").write_text("An unrelated note about parking permits and bicycle storage in the yard.")
    with caplog.at_level(logging.DEBUG):
        result = connectors.ingest([str(tmp_path)], IngestConfig(pii_scrub=True, near_dup_threshold=0.8))
    assert [d.reason for d in result.report.duplicates] == ["near"]
    assert result.report.duplicates[0].source == "b.txt" and result.report.duplicates[0].kept_source == "a.txt"
    assert result.report.pii == {"email": 1, "card": 1}
    assert "[EMAIL]" in result.documents[0].text
    rendered = result.report.render() + json.dumps(result.report.to_dict()) + caplog.text
    assert "jane.roe" not in rendered and "4111" not in rendered


def test_a_parse_past_its_deadline_is_killed_and_the_batch_goes_on(tmp_path, caplog):
    # A million CSV rows take far longer than a second to parse: the worker is killed, the next file loads.
    (tmp_path / "a-big.csv").write_text("q,a\n" + "".join(f"question {i},answer {i}\n" for i in range(1_000_000)))
    (tmp_path / "b-small.txt").write_text("still loaded")
    cfg = IngestConfig(parse_timeout_s=1.0, workers=1, max_file_bytes=100 * 2**20)
    with caplog.at_level(logging.WARNING, logger="connectors"):
        result = connectors.ingest([str(tmp_path)], cfg)
    assert result.report.skip_counts() == {"timeout": 1}
    assert [d.text for d in result.documents] == ["still loaded"]
    assert "skipped a-big.csv: timeout" in caplog.text  # a logged skip, not a silent one


def test_a_parse_past_its_memory_cap_is_a_skip(tmp_path):
    # ~3M cells as Python strings need far more than 256 MiB; the worker's cap stops it there.
    (tmp_path / "a-huge.csv").write_text("a,b,c,d,e,f\n" + "1,2,3,4,5,6\n" * 600_000)
    (tmp_path / "b.txt").write_text("survivor")
    cfg = IngestConfig(parse_memory_mb=256, workers=1, max_file_bytes=100 * 2**20, parse_timeout_s=120)
    result = connectors.ingest([str(tmp_path)], cfg)
    assert [s.reason for s in result.report.skipped] in (["too_large"], ["crashed"])
    assert [d.text for d in result.documents] == ["survivor"]


def test_preset_loads_and_names_its_command():
    path = ROOT / "configs" / "ingest.yaml"
    assert path.read_text().splitlines()[0].startswith("# hybrid ingest ")
    assert load_config(IngestConfig, path) == IngestConfig()
    assert load_config(IngestConfig, path, ["near_dup_threshold=0.8"]).near_dup_threshold == 0.8


def test_every_config_field_has_help():
    assert all(f.metadata.get("help") for f in dataclasses.fields(IngestConfig))


def test_cli_writes_jsonl_and_prints_the_summary(tmp_path):
    out = tmp_path / "d.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "hybrid", "ingest", str(EDGE), "-i", "*.txt", "-i", "*.pdf", "--out", str(out),
         "--report", str(tmp_path / "report.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped     4 (copy_protected: 1, empty: 2, encrypted: 1)" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["metadata"]["source"] for r in rows} == {"fake-incomplete-json.txt", "fake-text-utf-16.txt"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["skip_counts"] == {"copy_protected": 1, "empty": 2, "encrypted": 1}
    assert {s["source"] for s in report["skipped"]} == {"copy-protected.pdf", "empty.txt",
                                                        "fake-text-all-whitespace.txt", "password.pdf"}


@pytest.mark.parametrize("args,needle", [
    (["/no/such/dir", "--out", "x.jsonl"], "no such file or directory: /no/such/dir"),
    (["ftp://example.org/x", "--out", "x.jsonl"], "unsupported source"),
    ([str(DOCS), "--near-dup", "2", "--out", "x.jsonl"], "near_dup_threshold must be in (0, 1]"),
    ([str(DOCS), "--set", "nope=1", "--out", "x.jsonl"], "unknown key 'nope'"),
])
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "hybrid", "ingest", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr, proc.stderr


def test_a_caller_that_stops_early_does_not_leak_replies_into_the_next_run(corpus):
    first = next(iter(connectors.load(DOCS, include=["*.pdf"], exclude=["edge/**"])))
    assert (first.metadata["source"], first.metadata["page"]) == ("fake-memo-with-duplicate-page.pdf", 1)
    again = list(connectors.load(DOCS, include=["*.txt"], exclude=["edge/**"]))
    assert [d.metadata["source"] for d in again] == ["book-war-and-peace-1p.txt", "fake-text.txt", "norwich-city.txt"]


def test_parse_workers_run_without_torch(tmp_path):
    # The worker blocks torch (spaCy's thinc would import it for nothing); the docx path still works.
    from connectors.isolation import shared_pool

    pool = shared_pool(IngestConfig())
    assert pool.allow_torch is False
    (doc,) = connectors.load(DOCS / "fake.docx")
    assert doc.text == "Lorem ipsum dolor sit amet."
