"""Ingest benchmark: this project's connectors against the LangChain + unstructured path, same files, one run.

    .venv/bin/pip install -e '.[bench]'      # langchain-unstructured (benchmark only)
    .venv/bin/python benchmarks/ingest.py    # writes benchmarks/results/ingest.json

The corpus is ``../shared/data/docs`` (the good files and the broken ones in ``edge/``) copied into a
temporary directory as many times as it takes to reach ``--min-files`` (default 500).

The anchor is what a LangChain user writes today: ``DirectoryLoader`` (langchain-community, which is
being sunset) looping ``UnstructuredFileLoader`` over a folder. Its maintained successor is
``langchain_unstructured.UnstructuredLoader``, which in local mode calls
``unstructured.partition.auto.partition`` per file. So the anchor here is a DirectoryLoader-style
loop (recursive glob, ``silent_errors=True``: a failing file is logged and skipped) around
``UnstructuredLoader(file_path).load()``, one LangChain Document per element.

Each system runs in its own child process, so each peak RSS is its own. This project's parse
workers are grandchildren; their memory is sampled with the parent's (``tree_peak_rss_mb``).
Both children get the same network guard (any non-loopback connect fails and is counted) and the
same spaCy model (unstructured would otherwise try to download ``en_core_web_sm``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._util import RESULTS, ROOT, machine_info, run_child, write_json  # noqa: E402

DOCS = Path(os.environ.get("HYBRID_SHARED", ROOT.parent / "shared")) / "data" / "docs"
NETWORK_ATTEMPTS = [0]


def _deny_network() -> None:
    """Fail and count every non-loopback connection (the run must be offline for both systems)."""
    real = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            NETWORK_ATTEMPTS[0] += 1
            raise OSError(f"benchmark: network blocked ({address!r})")
        return real(self, address)

    socket.socket.connect = guarded  # type: ignore[method-assign]


def build_corpus(dest: Path, min_files: int) -> tuple[list[Path], int]:
    files = sorted(p for p in DOCS.rglob("*") if p.is_file())
    if not files:
        raise SystemExit(f"no sample documents under {DOCS}")
    copies = -(-min_files // len(files))
    for i in range(copies):
        for p in files:
            target = dest / f"copy{i:03d}" / p.relative_to(DOCS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
    return sorted(p for p in dest.rglob("*") if p.is_file()), copies


def _tree_rss_mb() -> float:
    import psutil

    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class TreeSampler(threading.Thread):
    """Peak RSS of this process plus its children (the parse workers), sampled every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, _tree_rss_mb())


def run_hybrid(corpus: Path) -> dict[str, Any]:
    import connectors
    from connectors.config import IngestConfig
    from connectors.isolation import _close_pools
    from connectors.report import IngestReport

    sampler = TreeSampler()
    sampler.start()
    t0 = time.perf_counter()
    result = connectors.ingest([str(corpus)], IngestConfig())
    elapsed = time.perf_counter() - t0
    # Characters per file on the first copy only, before dedup drops the repeats: the raw extraction.
    chars: dict[str, int] = defaultdict(int)
    for doc in connectors.load(corpus / "copy000", report=IngestReport()):
        chars[doc.metadata["source"]] += len(doc.text)
    sampler.stop.set()
    sampler.join()
    _close_pools()
    rep = result.report
    return {
        "elapsed_s": elapsed,
        "files": rep.files_seen,
        "documents_out": rep.kept,
        "documents_parsed": rep.loaded,
        "skipped": rep.skip_counts(),
        "duplicates": len(rep.duplicates),
        "chars_per_file": dict(sorted(chars.items())),
        "tree_peak_rss_mb": round(sampler.peak, 1),
    }


def run_langchain(corpus: Path) -> dict[str, Any]:
    from connectors.formats import _unstructured_offline

    _unstructured_offline()  # same packaged spaCy model as ours; without it unstructured downloads one
    from langchain_unstructured import UnstructuredLoader

    files = sorted(p for p in corpus.rglob("*") if p.is_file())  # DirectoryLoader(glob="**/*")
    t0 = time.perf_counter()
    docs, errors = 0, defaultdict(int)
    for path in files:
        try:  # DirectoryLoader(silent_errors=True): log, skip, go on
            docs += len(UnstructuredLoader(file_path=str(path)).load())
        except Exception as e:  # noqa: BLE001 - counted per error type, as a user would see them
            errors[type(e).__name__] += 1
    elapsed = time.perf_counter() - t0
    chars: dict[str, int] = {}
    for path in sorted(p for p in (corpus / "copy000").rglob("*") if p.is_file()):
        rel = path.relative_to(corpus / "copy000").as_posix()
        try:
            elements = UnstructuredLoader(file_path=str(path)).load()
            chars[rel] = len("\n\n".join(d.page_content for d in elements if d.page_content))
        except Exception:  # noqa: BLE001
            chars[rel] = 0
    return {
        "elapsed_s": elapsed,
        "files": len(files),
        "documents_out": docs,
        "errors": dict(errors),
        "chars_per_file": chars,
    }


def child(system: str, corpus: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _deny_network()
    out = run_hybrid(corpus) if system == "hybrid" else run_langchain(corpus)
    out["network_attempts"] = NETWORK_ATTEMPTS[0]
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-files", type=int, default=500)
    ap.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    ap.add_argument("--child", choices=["hybrid", "langchain"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.corpus)
        return

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        corpus = Path(tmp)
        files, copies = build_corpus(corpus, args.min_files)
        systems: dict[str, Any] = {}
        for name in ("hybrid", "langchain"):
            code, out, err, rss, wall = run_child(
                [sys.executable, __file__, "--child", name, "--corpus", str(corpus)], timeout=3600)
            if code != 0:
                raise SystemExit(f"{name} run failed ({code}):\n{err[-3000:]}")
            res = json.loads(out.strip().splitlines()[-1])
            res["peak_rss_mb"] = round(rss, 1)
            res["docs_per_s"] = round(res["files"] / res["elapsed_s"], 2)
            res["wall_s_including_imports"] = round(wall, 2)
            res["elapsed_s"] = round(res["elapsed_s"], 2)
            systems[name] = res
            print(f"{name}: {res['docs_per_s']} files/s, peak RSS {res['peak_rss_mb']} MiB", file=sys.stderr)

    ours, anchor = systems["hybrid"], systems["langchain"]
    common = sorted(set(ours["chars_per_file"]) & set(anchor["chars_per_file"]))
    by_ext: dict[str, dict[str, int]] = defaultdict(lambda: {"hybrid": 0, "langchain": 0, "files": 0})
    for rel in common:
        ext = Path(rel).suffix.lower() or "(none)"
        by_ext[ext]["hybrid"] += ours["chars_per_file"].get(rel, 0)
        by_ext[ext]["langchain"] += anchor["chars_per_file"].get(rel, 0)
        by_ext[ext]["files"] += 1
    anchor_empty = [r for r in common if anchor["chars_per_file"][r] == 0 and ours["chars_per_file"].get(r, 0) > 0]
    result = {
        "benchmark": "ingest",
        "command": ".venv/bin/python benchmarks/ingest.py",
        "corpus": {"source": str(DOCS), "files": len(files), "copies": copies},
        "metric": "docs_per_s = input files processed per second (load + clean + dedup for hybrid; "
                  "load for langchain), timed inside each child after imports",
        "hybrid": {k: v for k, v in ours.items() if k != "chars_per_file"},
        "langchain": {k: v for k, v in anchor.items() if k != "chars_per_file"},
        "anchor": "langchain_unstructured.UnstructuredLoader (local mode = unstructured.partition.auto.partition) "
                  "in a DirectoryLoader-style loop with silent_errors; langchain-community's DirectoryLoader and "
                  "UnstructuredFileLoader are sunset and not installed",
        "ratio_docs_per_s": round(ours["docs_per_s"] / anchor["docs_per_s"], 2),
        "text": {
            "chars_per_file_hybrid": ours["chars_per_file"],
            "chars_per_file_langchain": anchor["chars_per_file"],
            "chars_by_extension": dict(sorted(by_ext.items())),
            "files_only_hybrid_extracts": anchor_empty,
        },
        "notes": [
            "peak_rss_mb is the kernel high-water mark (wait4) of each system's child process; for hybrid "
            "it is the largest of its processes (the parse workers reaped by it count), for langchain the one process",
            "hybrid_tree_peak_rss_mb sums hybrid's parent and its parse workers (default 2), sampled every 50 ms: "
            "each worker that meets a DOCX/PPTX loads unstructured and spaCy (torch is blocked in workers)",
            "langchain errors are files unstructured could not open without extras this project does not install "
            "(PDF needs unstructured[pdf], which pulls torchvision/CUDA torch; CSV needs pandas) plus the broken files",
            "hybrid drops the 15 repeated copies as exact duplicates; langchain returns every element of every copy",
        ],
        "machine": info,
    }
    try:
        result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("ratio_docs_per_s",)} | {
        "hybrid_docs_per_s": ours["docs_per_s"], "langchain_docs_per_s": anchor["docs_per_s"],
        "hybrid_peak_rss_mb": ours["peak_rss_mb"], "hybrid_tree_peak_rss_mb": ours["tree_peak_rss_mb"],
        "langchain_peak_rss_mb": anchor["peak_rss_mb"]}, indent=1))


if __name__ == "__main__":
    main()
