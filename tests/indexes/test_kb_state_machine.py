"""A property-based state machine over a real KnowledgeBase (issue 14).

Hypothesis drives random sequences of sync (with and without prune, with bad batches), delete,
rebuild, reopen, a second read-only handle that refreshes, searches (BM25, dense, hybrid, filtered)
and syncs run in a child process that is killed with SIGKILL at a random moment. After every step
the knowledge base is compared with a plain model: which document ids exist, each one's text and
metadata, what a sync reports, and that BM25 finds a current document by its unique token and never
finds a token that is gone.

The model of a sync is the contract stated in ``KnowledgeBase.sync`` and ``indexes.sync``: the same
id with new text or metadata is an update; a new id that is the only input from a source unit
holding exactly one other stored document replaces it; ``prune`` deletes the rest; the same id twice
with different text is refused and writes nothing.

Killed syncs: a small fork server (started once, imports warm, it never touches FAISS itself) forks
one child per killed sync. The test waits until the child has opened the knowledge base, sleeps a
random fraction of a measured sync's duration, and kills it. Afterwards the knowledge base must hold
exactly the documents before the sync or exactly those after it, never a mix and never fewer, and
must take the next write. The fork server keeps the child unreaped until the kill is sent, so the
pid cannot be reused by another process in between.

Only the public API is used (``KnowledgeBase`` create/open/open_or_create/sync/delete/rebuild/
search/documents/refresh/stats) with the fast hash embedder and tiny documents.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from core.errors import InputError
from core.types import Document
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
from tests.conftest import ROOT

# 200 examples of up to 12 steps each. No example database is kept (database=None): a failure prints
# its steps and a @reproduce_failure blob (print_blob) that replays it.
SETTINGS = settings(max_examples=200, deadline=None, stateful_step_count=12, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
VOCAB = ("tenant", "notice", "lease", "rent", "court", "appeal", "holiday", "wage", "privacy", "request",
         "bread", "dough", "crust", "ethics", "report", "claim")
SLOTS, VARIANTS, VERSIONS = 3, 2, 4
# Knowledge bases live on tmpfs when there is one: every publish fsyncs several files, which costs
# ~35 ms a write on this machine's disk and nothing on tmpfs. That changes nothing this test checks:
# kill -9 ends a process, not the machine, so the page cache survives either way. Flushing to disk
# is tested in test_store_fsync.py.
FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# --- documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One document as hypothesis draws it: which source (slot), which id in it (variant), which text."""

    slot: int
    variant: int
    version: int
    words: int  # filler words after the token: 0..14, so a document is one to three chunks
    rev: int  # a metadata field, so metadata-only changes happen too

    @property
    def id(self) -> str:
        return f"s{self.slot}v{self.variant}"

    @property
    def token(self) -> str:
        # letters and digits only: one FTS5 token, left alone by the porter stemmer
        return f"tok{self.slot}{'ab'[self.variant]}{self.version}q"

    def doc(self) -> Document:
        filler = " ".join(VOCAB[(self.version * 5 + i * 3) % len(VOCAB)] for i in range(self.words))
        text = f"{self.token} {filler}".strip() + "."
        return Document(self.id, text, {"source": f"s{self.slot}.md", "rev": self.rev})


specs = st.builds(Spec, st.integers(0, SLOTS - 1), st.integers(0, VARIANTS - 1), st.integers(0, VERSIONS - 1),
                  st.integers(0, 14), st.integers(0, 1))
batches = st.lists(specs, max_size=5)
ALL_IDS = sorted({Spec(s, v, 0, 0, 0).id for s in range(SLOTS) for v in range(VARIANTS)})
ALL_TOKENS = sorted({Spec(s, v, n, 0, 0).token for s in range(SLOTS) for v in range(VARIANTS) for n in range(VERSIONS)})


def token_of(text: str) -> str:
    return text.split()[0].rstrip(".")


def same(a: Document, b: Document) -> bool:
    return a.text == b.text and a.metadata == b.metadata


@dataclass
class Expected:
    """What a sync of ``batch`` must do to ``model`` (the stored documents by id), per the contract."""

    model: dict[str, Document]
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    duplicates: int = 0


def expected_sync(model: dict[str, Document], batch: list[Document], prune: bool) -> Expected | None:
    """The model after the sync and the counts it reports; None when the batch must be refused."""
    incoming: dict[str, Document] = {}
    dups = 0
    for d in batch:
        if d.id in incoming:
            if incoming[d.id].text != d.text:
                return None
            dups += 1  # the first copy wins, even when only its metadata differ
            continue
        incoming[d.id] = d
    out = Expected(dict(model), duplicates=dups)
    in_keys: dict[str, int] = {}
    for d in incoming.values():
        in_keys[d.metadata["source"]] = in_keys.get(d.metadata["source"], 0) + 1
    replaced = set()
    for did, d in incoming.items():
        if did in model:
            if same(model[did], d):
                out.unchanged += 1
            else:
                out.updated += 1
            continue
        src = d.metadata["source"]
        olds = [o for o, od in model.items() if od.metadata["source"] == src and o not in incoming]
        if in_keys[src] == 1 and len(olds) == 1:
            replaced.add(olds[0])
            out.updated += 1
        else:
            out.added += 1
    out.model.update(incoming)
    for did in replaced:
        del out.model[did]
    if prune:
        gone = [did for did in model if did not in incoming and did not in replaced]
        out.deleted = len(gone)
        for did in gone:
            del out.model[did]
    return out


def as_dict(docs: list[Document]) -> dict[str, tuple[str, dict]]:
    return {d.id: (d.text, d.metadata) for d in docs}


# --- the fork server for killed syncs -------------------------------------------------------------

FORK_SERVER = r"""
import json, os, signal, sys
from core.types import Document
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase
import shutil, tempfile
from indexes.config import IndexConfig


def warm_up():
    # One whole round in this server first: the first sync of a process imports modules and compiles
    # regular expressions (hundreds of thousands of calls), which would otherwise be where most kills
    # land. FAISS runs here with one OpenMP thread (OMP_NUM_THREADS=1), so no thread pool exists to
    # be lost across the forks below.
    tmp = tempfile.mkdtemp(dir=sys.argv[1] or None)
    try:
        kb = KnowledgeBase.create(tmp + "/kb", IndexConfig(embedder="hash", chunk_size=8, chunk_overlap=2),
                                  embedder=HashEmbedder())
        text = "warm up the knowledge base code paths once, long enough to need the text splitter. " * 3
        kb.sync([Document("w", text, {"source": "w.md"})])
        kb.search("warm", k=1)
        kb.delete(["w"])
        kb.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


warm_up()


def say(*words):
    # one write(2) per line: the child and this server share the pipe, and a line under PIPE_BUF
    # bytes written at once is never interleaved (print may split it, e.g. with PYTHONUNBUFFERED)
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


say("ready")
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            kb = KnowledgeBase.open(cmd["path"], embedder=HashEmbedder())
            docs = [Document(d[0], d[1], d[2]) for d in cmd["docs"]]
            say("opened")
            events = [0]
            kill_at = cmd["kill_at"]

            def count(frame, event, arg):
                # every Python and C function call and return in the sync is one event; at the
                # chosen one the process SIGKILLs itself: a reproducible kill point
                events[0] += 1
                if events[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            sys.setprofile(count)
            report = kb.sync(docs, prune=cmd["prune"])
            sys.setprofile(None)
            say("synced", report.generation, events[0])
            os._exit(0)
        except BaseException as e:
            say("error", repr(e).replace("\n", " ")[:300])
            os._exit(3)
    say("pid", pid)
    sys.stdin.readline()  # the test's "reap": until then the pid is a zombie at worst, never reused
    _, status = os.waitpid(pid, 0)
    say("status", status)
"""


class ForkServer:
    WAIT_S = 120  # generous bound on any one reply: a hang fails with what was said so far

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER, FAST_TMP or ""], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._line([])
        assert first == "ready", f"fork server did not start: {first!r}"
        self.span = 0.0  # seconds a child takes from opening the knowledge base to exiting; see calibrate()
        self.events = 0  # profile events in a typical sync; see calibrate()
        self.last_run = 0.0
        self.outcomes = {"killed": 0, "finished": 0, "kept_old": 0, "got_new": 0}

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("eof")

    def _line(self, so_far: list[str]) -> str:
        try:
            line = self.lines.get(timeout=self.WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no reply from the fork server in {self.WAIT_S} s; so far: {so_far}") from None
        assert line != "eof", f"fork server died; output so far: {so_far}"
        so_far.append(line)
        return line

    def sync(self, path: Path, docs: list[Document], prune: bool, *, kill_at: int | None = None,
             delay: float | None = None) -> tuple[bool, int]:
        """Run one sync in a forked child. ``kill_at``: the child SIGKILLs itself at that profile event
        of the sync (reproducible); ``delay``: this process SIGKILLs it that many seconds after it
        opened the knowledge base (lands anywhere, inside C code too). Neither: it runs to the end.
        Returns (finished, events the sync took when it finished)."""
        cmd = {"path": str(path), "prune": prune, "kill_at": kill_at,
               "docs": [[d.id, d.text, d.metadata] for d in docs]}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        pid, opened, lines = None, False, []
        while pid is None or not opened:
            line = self._line(lines)
            if line.startswith("pid "):
                pid = int(line.split()[1])
            elif line.startswith(("opened", "error")):
                opened = True
        t_opened = time.perf_counter()
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)  # still our unreaped child: the pid cannot belong to anyone else
        self.proc.stdin.write("reap\n")
        self.proc.stdin.flush()
        while not lines[-1].startswith("status "):
            self._line(lines)
        self.last_run = time.perf_counter() - t_opened
        errors = [ln for ln in lines if ln.startswith("error")]
        assert not errors, errors
        status = int(lines[-1].split()[1])
        synced = [ln.split() for ln in lines if ln.startswith("synced")]
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert status == 0 or killed, lines
        if synced:  # the sync returned (a kill may still have come before the child's exit)
            return True, int(synced[0][2])
        assert killed, lines
        return False, 0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def fork_server():
    server = ForkServer()
    yield server
    server.close()


# --- the state machine ----------------------------------------------------------------------------


class KBMachine(RuleBasedStateMachine):
    server: ForkServer  # set by the test before the run

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kb-sm-", dir=FAST_TMP))
        self.path = self.dir / "kb"
        self.model: dict[str, Document] = {}
        self.kb: KnowledgeBase | None = None
        self.reader: KnowledgeBase | None = None
        self.generation = 0

    @initialize(index=st.sampled_from(["flat", "hnsw"]))
    def create(self, index: str) -> None:
        # chunk_size is the smallest allowed, so documents of 0..15 words make one to three chunks
        self.cfg = IndexConfig(embedder="hash", chunk_size=8, chunk_overlap=2, index=index)
        self.kb = KnowledgeBase.create(self.path, self.cfg, embedder=HashEmbedder())
        self.reader = KnowledgeBase.open(self.path, embedder=HashEmbedder(), readonly=True)

    def teardown(self) -> None:
        for k in (self.kb, self.reader):
            if k is not None:
                k.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- writes ------------------------------------------------------------------------------
    @rule(batch=batches, prune=st.booleans())
    def sync(self, batch: list[Spec], prune: bool) -> None:
        docs = [s.doc() for s in batch]
        exp = expected_sync(self.model, docs, prune)
        if exp is None:
            before = as_dict(self.kb.documents())
            with pytest.raises(InputError, match="duplicate document id"):
                self.kb.sync(docs, prune=prune)
            assert as_dict(self.kb.documents()) == before  # refused whole: nothing written
            return
        report = self.kb.sync(docs, prune=prune)
        got = (report.added, report.updated, report.unchanged, report.deleted, report.duplicates)
        assert got == (exp.added, exp.updated, exp.unchanged, exp.deleted, exp.duplicates), str(report)
        if report.changed:
            assert report.generation > self.generation
        self.model = exp.model

    @rule(ids=st.lists(st.sampled_from(ALL_IDS + ["never-stored"]), max_size=4))
    def delete(self, ids: list[str]) -> None:
        n = self.kb.delete(ids)
        assert n == len(set(ids) & set(self.model))
        for did in ids:
            self.model.pop(did, None)

    @rule()
    def rebuild(self) -> None:
        self.kb.close()
        self.kb = None  # not reused if the rebuild raises
        # from the stored documents, as `hybrid index rebuild` does: after a killed sync that left its
        # generation's files unpublished, that must still be the published generation's documents
        self.kb, report = KnowledgeBase.rebuild(self.path, None, self.cfg, embedder=HashEmbedder())
        assert report.added == len(self.model)

    @rule(how=st.sampled_from(["open", "open_or_create"]))
    def reopen(self, how: str) -> None:
        self.kb.close()
        self.kb = None
        if how == "open":
            self.kb = KnowledgeBase.open(self.path, embedder=HashEmbedder())
        else:
            self.kb = KnowledgeBase.open_or_create(self.path, self.cfg, embedder=HashEmbedder())

    @rule(batch=batches, prune=st.booleans(), fraction=st.floats(0.0, 1.2), external=st.integers(0, 3))
    def killed_sync(self, batch: list[Spec], prune: bool, fraction: float, external: int) -> None:
        """A sync in a child process, killed at ``fraction`` of a typical sync: mostly at that share
        of its function-call events (reproducible, no waiting), one time in four by a SIGKILL from
        here after that share of its duration (which can land inside a C call, e.g. mid-write)."""
        docs = [s.doc() for s in batch]
        exp = expected_sync(self.model, docs, prune)
        if exp is None:
            return  # a refused batch writes nothing, killed or not; the sync rule covers it
        if external == 0:
            finished, _ = self.server.sync(self.path, docs, prune, delay=fraction * self.server.span)
        else:
            # the calibrated sync has three documents; a sync's events grow about with its batch
            kill_at = max(1, int(fraction * self.server.events * max(1, len(docs)) / 3))
            finished, _ = self.server.sync(self.path, docs, prune, kill_at=kill_at)
        self.server.outcomes["finished" if finished else "killed"] += 1
        self.kb.close()
        self.kb = None
        self.kb = KnowledgeBase.open(self.path, embedder=HashEmbedder())
        now = as_dict(self.kb.documents())
        old, new = as_dict(list(self.model.values())), as_dict(list(exp.model.values()))
        if finished:
            assert now == new, "a sync that reported success is not what the knowledge base holds"
        else:
            assert now in (old, new), "after kill -9 the knowledge base holds neither the old nor the new documents"
        if now == new and new != old:
            self.server.outcomes["got_new"] += 1
        elif now == old and new != old:
            self.server.outcomes["kept_old"] += 1
        self.model = exp.model if now == new else self.model

    # -- reads --------------------------------------------------------------------------------
    # No rule draws differently by the model's state (no preconditions on it, no draws from it): after
    # a killed sync the model depends on timing, and hypothesis needs each step to draw the same way
    # when it replays a sequence.
    @rule(pick=st.integers(0, 63), mode=st.sampled_from(["bm25", "hybrid"]))
    def search_current(self, pick: int, mode: str) -> None:
        if not self.model:
            with pytest.raises(InputError, match="empty"):
                self.kb.search("tenant", k=1, mode=mode)
            return
        did = sorted(self.model)[pick % len(self.model)]
        token = token_of(self.model[did].text)
        k = min(3, self.kb.stats()["chunks"])
        hits = self.kb.search(token, k=k, mode=mode)
        assert did in {h.chunk.doc_id for h in hits}, (token, [(h.chunk.doc_id, h.chunk.text) for h in hits])
        for h in hits:
            assert h.chunk.doc_id in self.model
            if mode == "bm25":
                assert token in h.chunk.text  # BM25 only matches chunks that hold the term
        rev = self.model[did].metadata["rev"]
        filtered = self.kb.search(token, k=k, mode="bm25", filters={"rev": rev})
        assert did in {h.chunk.doc_id for h in filtered}
        assert all(h.chunk.metadata["rev"] == rev for h in filtered)

    @rule(token=st.sampled_from(ALL_TOKENS))
    def search_gone(self, token: str) -> None:
        """A token no stored document holds any more is never found: no stale chunk, FTS row or vector."""
        if not self.model or any(token_of(d.text) == token for d in self.model.values()):
            return
        assert self.kb.search(token, k=1, mode="bm25") == []

    @rule(query=st.sampled_from(list(VOCAB) + ALL_TOKENS[:3]))
    def search_dense(self, query: str) -> None:
        if not self.model:
            with pytest.raises(InputError, match="empty"):
                self.kb.search(query, k=1, mode="dense")
            return
        k = min(4, self.kb.stats()["chunks"])
        hits = self.kb.search(query, k=k, mode="dense")
        assert len(hits) == k  # k is at most the live chunks, so a dense search fills it
        assert len({h.chunk.id for h in hits}) == k
        assert all(h.chunk.doc_id in self.model for h in hits)
        assert all(-1.001 <= h.score <= 1.001 for h in hits)

    @rule()
    def reader_refresh(self) -> None:
        self.reader.refresh()
        assert as_dict(self.reader.documents()) == as_dict(list(self.model.values()))

    # -- after every step ------------------------------------------------------------------------
    @invariant()
    def matches_model(self) -> None:
        if self.kb is None:
            return
        assert as_dict(self.kb.documents()) == as_dict(list(self.model.values()))
        s = self.kb.stats()
        assert s["documents"] == len(self.model)
        assert s["vectors"] - s["tombstones"] == s["chunks"]  # one live vector per chunk row
        assert (s["chunks"] == 0) == (not self.model)
        assert s["generation"] >= self.generation  # generations only move forward
        self.generation = s["generation"]


def calibrate(server: ForkServer) -> None:
    """How long a child takes from opening the knowledge base to exiting, and how many profile events
    its sync has (the median of three runs of a typical batch), so that kill points span a sync."""
    tmp = Path(tempfile.mkdtemp(prefix="kb-sm-cal-", dir=FAST_TMP))
    try:
        cfg = IndexConfig(embedder="hash", chunk_size=8, chunk_overlap=2)
        KnowledgeBase.create(tmp / "kb", cfg, embedder=HashEmbedder()).close()
        spans, events = [], []
        for v in range(3):
            docs = [Spec(s, 0, v, 10, 0).doc() for s in range(SLOTS)]
            finished, n = server.sync(tmp / "kb", docs, False)
            assert finished and n > 0
            spans.append(server.last_run)
            events.append(n)
        server.span, server.events = sorted(spans)[1], sorted(events)[1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow  # 10-20 s here on a shared 2-core machine, most of it 200 examples of ~12 steps
def test_knowledge_base_state_machine(fork_server):
    calibrate(fork_server)
    KBMachine.server = fork_server
    run_state_machine_as_test(KBMachine, settings=SETTINGS)
    print("killed syncs:", fork_server.outcomes,
          f"(kill points up to {fork_server.events * 1.2:.0f} events or {fork_server.span * 1.2:.3f} s)")
    # The delays start at zero, right after the child opened the knowledge base: some kills must land.
    assert fork_server.outcomes["killed"] > 0, fork_server.outcomes


# --- what the state machine found -----------------------------------------------------------------

# A sync in a child process that SIGKILLs itself right after the next generation's files were renamed
# into place, before the manifest names them: the last moment at which the sync has not happened.
KILL_BEFORE_MANIFEST = r"""
import os, signal, sys
from pathlib import Path
from core.types import Document
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase

path = Path(sys.argv[1])
kb = KnowledgeBase.open(path, embedder=HashEmbedder())
before = {f.name for f in path.glob("gen-*")}


def watch(frame, event, arg):
    # after each rename: once two new generation files are in place, die
    if event == "c_return" and getattr(arg, "__name__", "") in ("replace", "rename"):
        if len({f.name for f in path.glob("gen-*")} - before) >= 2:
            os.kill(os.getpid(), signal.SIGKILL)


sys.setprofile(watch)
kb.sync([Document("s0v0", "tok0a1q tenant lease.", {"source": "s0.md", "rev": 0})], prune=True)
sys.setprofile(None)
print("the sync finished: no kill point after its files were renamed", flush=True)
"""
PUBLISHED = [Spec(0, 0, 0, 3, 0).doc(), Spec(1, 0, 0, 3, 0).doc()]
SMALL = IndexConfig(embedder="hash", chunk_size=8, chunk_overlap=2)


@pytest.fixture(scope="module")
def killed_before_manifest(tmp_path_factory):
    """A knowledge base holding PUBLISHED, and the files of a pruning sync killed before its manifest swap."""
    path = tmp_path_factory.mktemp("killed") / "kb"
    with KnowledgeBase.create(path, SMALL, embedder=HashEmbedder()) as kb:
        kb.sync(PUBLISHED)
    p = subprocess.run([sys.executable, "-c", KILL_BEFORE_MANIFEST, str(path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    return path


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "kb"
    shutil.copytree(src, dst)
    return dst


def test_a_sync_killed_before_its_manifest_swap_is_not_visible(killed_before_manifest, tmp_path):
    path = _copy(killed_before_manifest, tmp_path)
    with KnowledgeBase.open(path, embedder=HashEmbedder()) as kb:
        assert as_dict(kb.documents()) == as_dict(PUBLISHED)
        assert kb.sync([Spec(2, 0, 0, 3, 0).doc()]).added == 1  # and the next write goes through
        assert as_dict(kb.documents()) == as_dict(PUBLISHED + [Spec(2, 0, 0, 3, 0).doc()])


def test_rebuild_after_a_killed_sync_uses_the_published_generation(killed_before_manifest, tmp_path):
    path = _copy(killed_before_manifest, tmp_path)
    kb, _ = KnowledgeBase.rebuild(path, None, SMALL, embedder=HashEmbedder())
    with kb:
        assert as_dict(kb.documents()) == as_dict(PUBLISHED)
