"""Distributed ingest and embedding on Ray Data: what ``hybrid index build --engine ray`` runs.

    from indexes.ray_build import RayOptions, build
    with KnowledgeBase.open_or_create(".cache/kb", cfg) as kb:
        sync_report, ingest_report = build(kb, ["docs/"], RayOptions(address="auto"))

The steps, and where each runs:

1. The driver walks the sources as ``connectors.ingest`` does (``connectors.walk``, the registered readers:
   include/exclude globs, size cap, symlink rules, walk skips). File bytes go into Ray's object store,
   so the cluster's nodes need the code but not the files.
2. Ray Data parse *tasks* parse them with the connectors' parse pool (``connectors.isolation``: a
   deadline and a memory cap per file), so a bad file is the same counted skip as in
   ``connectors.ingest``.
3. The driver cleans and deduplicates the parsed documents with ``connectors.clean_documents``, in
   walk order: the same documents, ids and report as the single-process ingest.
4. The documents the knowledge base would (re)index (``KnowledgeBase.pending``) go to an *actor pool*:
   each actor loads the embedder once, chunks its documents with ``indexes.chunking`` (the model's
   own tokenizer) and embeds them with ``IndexConfig.batch_size`` texts per forward pass.
5. The driver hands the chunks and vectors to ``KnowledgeBase.sync(prepared=...)``: the one write
   path, so chunk ids, the manifest, the backend (FAISS or Milvus), the atomic generation swap and
   the writer's lock are exactly those of a single-process build. Nothing is written before every
   vector is back: a build that fails on the way leaves the knowledge base as it was.

Ray is imported only here, and only when this engine runs; ``connect`` bounds the wait for a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from core.errors import ConfigError, HybridError, InputError, KnowledgeBaseError
from core.types import Chunk, Document


RAY_HINT = "the ray engine needs Ray Data: pip install 'hybrid[ray]' (ray[data]>=2.9)"
# Test hook, read on the driver and passed to the actors: "<batch>" makes the embedding actor that
# gets its <batch>-th batch (counted from 1) exit its process, every attempt; "<batch>:once:<file>"
# does it once (the marker file records it), so a retry succeeds.
CRASH_ENV = "HYBRID_RAY_TEST_CRASH"


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray. Every field has a help text; ``__post_init__`` checks them.

    >>> RayOptions(address="auto", actors=4).actors
    4
    """

    address: str = field(default="", metadata={
        "help": "'' starts a local Ray on this machine; 'auto' joins the cluster this node belongs to; "
                "'ray://host:10001' (Ray Client) or 'host:6379' (the head's GCS) joins a remote one"})
    connect_timeout_s: float = field(default=30.0, metadata={
        "help": "seconds to wait for the cluster to answer before a one-line error"})
    actors: int = field(default=0, metadata={
        "help": "embedding actors, one model load each; 0 = the cluster's CPUs (or GPUs) / per-actor share"})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "CPUs each embedding actor reserves"})
    gpus_per_actor: float = field(default=0.0, metadata={"help": "GPUs each embedding actor reserves (0 = CPU)"})
    docs_per_batch: int = field(default=32, metadata={
        "help": "documents per actor call (the unit a dead actor retries); the model itself runs "
                "IndexConfig.batch_size texts per forward pass"})
    files_per_task: int = field(default=16, metadata={"help": "files per parse task"})
    max_retries: int = field(default=2, metadata={
        "help": "times a task or an actor whose process died is retried before the build fails"})
    num_cpus: int | None = field(default=None, metadata={
        "help": "local Ray only: CPUs it may use (None = all)"})
    progress: bool = field(default=False, metadata={"help": "show Ray Data's progress bars"})

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"connect_timeout_s must be > 0 seconds, got {self.connect_timeout_s}")
        for name in ("actors", "max_retries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("docs_per_batch", "files_per_task"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ConfigError(f"cpus_per_actor must be > 0 and gpus_per_actor >= 0, got "
                              f"{self.cpus_per_actor} and {self.gpus_per_actor}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {self.num_cpus}")


@dataclass
class RayStats:
    """What the Ray run measured: stage times and each embedding actor's own throughput."""

    parse_s: float = 0.0  # the driver's walk and the parse tasks
    clean_s: float = 0.0  # the driver's cleaning and deduplication
    embed_s: float = 0.0  # wall time of the chunk + embed stage
    actor_chunks: dict[str, int] = field(default_factory=dict)  # actor -> chunks embedded
    actor_embed_s: dict[str, float] = field(default_factory=dict)  # actor -> seconds inside embed()

    def per_actor_chunks_per_s(self) -> dict[str, float]:
        """Chunks per second of embedding time, per actor (its model's own speed, without scheduling)."""
        return {a: self.actor_chunks[a] / s for a, s in self.actor_embed_s.items() if s > 0}


def import_ray() -> Any:
    """``ray`` with Ray Data, or a one-line ``ConfigError`` saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    return ray


# -- connecting ------------------------------------------------------------------------------------
def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a 'ray://host:port' or 'host:port' address; None for '' and 'auto'."""
    if address in ("", "auto"):
        return None
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"ray address must be 'auto', 'ray://host:port' or 'host:port', got {address!r}")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail at once, in one line, when nothing listens at the address (before Ray's own retries)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        raise InputError(f"no Ray cluster reachable at {address} ({e.strerror or e}); "
                         "check the address, or leave --ray-address out to start a local Ray") from None


def connect(options: RayOptions) -> bool:
    """Start a local Ray or join ``options.address``, waiting at most ``connect_timeout_s``.

    Returns True when this call connected (the caller then shuts it down), False when Ray was
    already initialised in this process (a notebook, a test fixture) and is reused as it is.
    """
    ray = import_ray()
    _check_reachable(options.address, options.connect_timeout_s)  # also when reusing: a wrong address is an error
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if not options.address:
        # A local start runs here, never in a helper thread: Ray ties the processes it starts (GCS,
        # raylet) to the starting thread's life (PR_SET_PDEATHSIG), so they would die with the thread.
        try:
            ray.init(num_cpus=options.num_cpus, include_dashboard=False, **kwargs)
        except Exception as e:  # noqa: BLE001 - Ray's start-up errors are many classes
            raise InputError(f"cannot start a local Ray: {_one_line(e)}") from None
        return True
    kwargs["address"] = options.address
    outcome: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as e:  # noqa: BLE001 - reported on the caller's thread
            outcome["error"] = e

    # ray.init has no overall deadline of its own (it retries a silent GCS for minutes): bound it here.
    # Off the main thread Ray installs no SIGTERM handler and says so; the default one suits a CLI.
    quiet = _DropMessage("SIGTERM handler is not set")
    logging.getLogger("ray._private.worker").addFilter(quiet)
    t = threading.Thread(target=init, name="ray-connect", daemon=True)
    t.start()
    t.join(options.connect_timeout_s)
    logging.getLogger("ray._private.worker").removeFilter(quiet)
    where = options.address
    if t.is_alive():
        raise InputError(f"no Ray cluster answered at {where} within {options.connect_timeout_s:g}s; "
                         "check the address (--ray-timeout waits longer)")
    if "error" in outcome:
        raise InputError(f"cannot connect to Ray at {where}: {_one_line(outcome['error'])}") from None
    return True


class _DropMessage(logging.Filter):
    """Drops the log records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _one_line(e: BaseException) -> str:
    """The last non-empty line of an error's message (Ray wraps the cause in tracebacks), shortened."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(e).__name__
    return text[:300]


# -- reading and parsing ---------------------------------------------------------------------------
def _walk(sources: Iterable[str | Path], cfg: Any, report: Any) -> tuple[list[dict[str, Any]], dict[int, Document]]:
    """The sources' items in walk order (``connectors.walk``, skips recorded in ``report``): rows to
    parse (bytes, metadata) and finished row documents, each with its place in the order."""
    import connectors

    to_parse: list[dict[str, Any]] = []
    direct: dict[int, Document] = {}
    order = 0
    for source in sources:
        for item in connectors.walk(source, cfg, report):
            if isinstance(item, Document):
                direct[order] = item
            else:
                to_parse.append({"order": order, "name": item.name, "kind": item.kind or "",
                                 "meta": json.dumps(item.meta), "data": item.data})
            order += 1
    return to_parse, direct


def _parse_batch(batch: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """A Ray Data task: parse a batch of files in the connectors' parse pool (one worker here).

    Returns one row per document, skip or note: ``order`` (the file's place), ``sub`` (its place
    in the file), ``type`` (doc|skip|note) and ``payload`` (JSON)."""
    from connectors import parsed_documents
    from connectors.base import Raw
    from connectors.config import IngestConfig
    from connectors.isolation import shared_pool
    from connectors.report import IngestReport

    ingest_cfg = IngestConfig(**cfg)
    raws = {int(o): Raw(data=bytes(d), name=str(n), meta=json.loads(m), kind=str(k) or None)
            for o, n, k, m, d in zip(batch["order"], batch["name"], batch["kind"], batch["meta"], batch["data"])}
    pool = shared_pool(dataclasses.replace(ingest_cfg, workers=1))
    outcomes = dict(pool.run(((o, r.data, r.name, r.kind) for o, r in raws.items()), ingest_cfg))
    rows: dict[str, list[Any]] = {"order": [], "sub": [], "type": [], "payload": []}
    for o in sorted(raws):
        report = IngestReport()
        docs = parsed_documents(raws[o], outcomes[o], report)
        items = ([("doc", d.to_dict()) for d in docs] + [("skip", dataclasses.asdict(s)) for s in report.skipped]
                 + [("note", dataclasses.asdict(n)) for n in report.notes])
        for sub, (kind, payload) in enumerate(items):
            rows["order"].append(o)
            rows["sub"].append(sub)
            rows["type"].append(kind)
            rows["payload"].append(json.dumps(payload, ensure_ascii=False))
    return {"order": np.array(rows["order"], dtype=np.int64), "sub": np.array(rows["sub"], dtype=np.int64),
            "type": np.array(rows["type"], dtype=object), "payload": np.array(rows["payload"], dtype=object)}


def ingest(sources: Iterable[str | Path], cfg: Any = None, options: RayOptions | None = None,
           stats: RayStats | None = None) -> Any:
    """``connectors.ingest`` with the parsing in Ray tasks: the same ``IngestResult`` (documents in
    the same order, the same skips and duplicates). Needs a connected Ray (``connect``)."""
    import connectors
    from connectors.config import IngestConfig
    from connectors.report import NoteRecord, SkipRecord

    ray = import_ray()
    cfg = cfg or IngestConfig()
    options = options or RayOptions()
    sources = list(sources)
    if not sources:
        raise InputError("no sources given")
    for s in sources:
        connectors.source_kind(s)  # a missing path or unknown scheme fails before any work
    t0 = time.perf_counter()
    report = connectors.IngestReport()
    to_parse, direct = _walk(sources, cfg, report)
    parsed: dict[tuple[int, int], Document] = {(o, 0): d for o, d in direct.items()}
    if to_parse:
        ds = ray.data.from_items(to_parse, override_num_blocks=max(1, -(-len(to_parse) // options.files_per_task)))
        to_parse.clear()  # the object store holds the bytes now
        with _retry_args_accepted():
            out = ds.map_batches(_parse_batch, batch_size=options.files_per_task, batch_format="numpy",
                                 fn_kwargs={"cfg": dataclasses.asdict(cfg)}, num_cpus=1,
                                 max_retries=options.max_retries)
        for row in _rows(out, "parse"):
            payload = json.loads(row["payload"])
            if row["type"] == "doc":
                parsed[(int(row["order"]), int(row["sub"]))] = Document.from_dict(payload)
            elif row["type"] == "skip":
                report.skipped.append(SkipRecord(**payload))
            else:
                report.notes.append(NoteRecord(**payload))
    report.loaded = len(parsed)
    t1 = time.perf_counter()
    docs = [parsed[k] for k in sorted(parsed)]
    documents = connectors.clean_documents(docs, cfg, report)
    if stats is not None:
        stats.parse_s, stats.clean_s = t1 - t0, time.perf_counter() - t1
    report.kept = len(documents)
    report.elapsed_s = time.perf_counter() - t0
    return connectors.IngestResult(documents, report)


# -- chunking and embedding ------------------------------------------------------------------------
def _crash_hook() -> dict[str, Any] | None:
    spec = os.environ.get(CRASH_ENV, "")
    if not spec:
        return None
    batch, _, rest = spec.partition(":")
    once = rest.startswith("once:")
    return {"batch": int(batch), "marker": rest[len("once:"):] if once else ""}


class ChunkEmbedActor:
    """One embedding actor of the pool: loads the embedder once, then chunks and embeds batches of documents.

    Rows out: ``doc_order``, ``chunk`` (JSON: id, doc_id, text, metadata), ``vector`` (float32),
    ``actor`` (node:pid) and ``embed_s`` (this batch's embedding seconds, shared among its rows)."""

    def __init__(self, cfg: dict[str, Any], crash: dict[str, Any] | None = None):
        from indexes.config import IndexConfig
        from indexes.embed import get_embedder

        self.cfg = IndexConfig(**cfg)
        self.embedder = get_embedder(self.cfg.embedder, bf16=self.cfg.bf16)
        self.embedder.warm_up()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.crash = crash
        self.calls = 0

    def _maybe_crash(self) -> None:
        """The test hook (``CRASH_ENV``): a process that dies in the middle of a build."""
        self.calls += 1
        if not self.crash or self.calls != self.crash["batch"]:
            return
        marker = self.crash["marker"]
        if marker:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return  # crashed once already: this attempt goes through
            os.close(fd)
        os._exit(17)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from indexes.chunking import chunk_documents

        self._maybe_crash()
        docs = [Document.from_dict(json.loads(s)) for s in batch["doc"]]
        place = {d.id: int(o) for d, o in zip(docs, batch["order"])}
        chunks = chunk_documents(docs, self.cfg, self.embedder)
        t0 = time.perf_counter()
        vecs = np.asarray(self.embedder.embed([c.text for c in chunks], batch_size=self.cfg.batch_size),
                          dtype=np.float32).reshape(len(chunks), int(self.embedder.dim))
        seconds = time.perf_counter() - t0
        n = max(len(chunks), 1)
        return {
            "doc_order": np.array([place[c.doc_id] for c in chunks], dtype=np.int64),
            "chunk": np.array([_chunk_json(c) for c in chunks], dtype=object),
            "vector": vecs,
            "actor": np.array([self.name] * len(chunks), dtype=object),
            "embed_s": np.full(len(chunks), seconds / n, dtype=np.float64),
            "embedder": np.array([f"{self.embedder.name}@{self.embedder.revision}"] * len(chunks), dtype=object),
        }


def _chunk_json(c: Chunk) -> str:
    from indexes.sync import _json_default

    return json.dumps({"id": c.id, "doc_id": c.doc_id, "text": c.text, "metadata": c.metadata},
                      ensure_ascii=False, default=_json_default)


def _actor_count(ray: Any, options: RayOptions) -> int:
    """``options.actors``, or as many as the cluster's CPUs (GPUs) hold at the per-actor share."""
    if options.actors:
        return options.actors
    res = ray.cluster_resources()
    if options.gpus_per_actor:
        return max(1, int(res.get("GPU", 0) / options.gpus_per_actor))
    return max(1, int(res.get("CPU", 1) / options.cpus_per_actor))


def _pool(ray: Any, size: int) -> Any:
    """A fixed-size actor pool where each actor holds at most two batches (the one it runs and the
    next), so batches go to whichever actor is free; Ray Data's default queues four per actor."""
    try:
        return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=2)
    except TypeError:  # an older Ray Data without the setting
        return ray.data.ActorPoolStrategy(size=size)


def chunk_and_embed(docs: list[Document], cfg: Any, options: RayOptions | None = None,
                    stats: RayStats | None = None) -> Any:
    """Chunks and vectors of ``docs`` from the actor pool, as ``indexes.sync.Prepared`` for ``sync``."""
    from indexes.sync import Prepared

    ray = import_ray()
    options = options or RayOptions()
    t0 = time.perf_counter()
    chunks: dict[str, list[Chunk]] = {d.id: [] for d in docs}
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    makers: set[str] = set()
    if docs:
        rows = [{"order": i, "doc": json.dumps(d.to_dict(), ensure_ascii=False, default=str)} for i, d in enumerate(docs)]
        actors = _actor_count(ray, options)
        # several batches per actor when there are documents enough: an actor that is ready first
        # must not take all the work while the others still load their model
        per_batch = max(1, min(options.docs_per_batch, -(-len(rows) // (4 * actors))))
        blocks = -(-len(rows) // per_batch)
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        with _retry_args_accepted():
            out = ds.map_batches(
                ChunkEmbedActor, batch_size=per_batch, batch_format="numpy",
                fn_constructor_kwargs={"cfg": dataclasses.asdict(cfg), "crash": _crash_hook()},
                # no more actors than batches: an idle actor would still load the model
                compute=_pool(ray, min(blocks, actors)),
                num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
                # bounded: Ray Data's default restarts a dying actor forever, so a batch that kills
                # its process every time would hang the build instead of failing it
                max_restarts=options.max_retries, max_task_retries=options.max_retries)
        got: list[tuple[int, int, Chunk, np.ndarray]] = []
        for row in _rows(out, "embedding"):
            c = json.loads(row["chunk"])
            chunk = Chunk(id=c["id"], doc_id=c["doc_id"], text=c["text"], metadata=c["metadata"])
            got.append((int(row["doc_order"]), int(chunk.metadata.get("chunk_index", 0)), chunk,
                        np.asarray(row["vector"], dtype=np.float32)))
            makers.add(str(row["embedder"]))
            if stats is not None:
                a = str(row["actor"])
                stats.actor_chunks[a] = stats.actor_chunks.get(a, 0) + 1
                stats.actor_embed_s[a] = stats.actor_embed_s.get(a, 0.0) + float(row["embed_s"])
        got.sort(key=lambda t: (t[0], t[1]))
        for _, _, chunk, vec in got:
            chunks[chunk.doc_id].append(chunk)
            ids.append(chunk.id)
            vectors.append(vec)
    if len(makers) > 1:
        raise KnowledgeBaseError(f"the embedding actors loaded different embedders ({', '.join(sorted(makers))}); "
                                 "install the same model on every node; nothing was written")
    if stats is not None:
        stats.embed_s = time.perf_counter() - t0
    matrix = np.stack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    return Prepared(chunks=chunks, ids=ids, matrix=matrix, made_by=next(iter(makers), ""))


@contextlib.contextmanager
def _retry_args_accepted() -> Iterator[None]:
    """Ray 2.60 warns that retry settings passed as remote args are deprecated, but has no named
    parameter for them yet; they are what bounds the retries, so the warning is silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        yield


def _rows(ds: Any, stage: str) -> Iterator[dict[str, Any]]:
    """Rows of a Ray dataset as it runs; a failure of the run (a dead worker past its retries, an
    error in our code on a worker) becomes one ``KnowledgeBaseError`` line naming the stage."""
    try:
        yield from ds.iter_rows()
    except HybridError as e:
        raise e from None
    except Exception as e:  # noqa: BLE001 - Ray's errors are many classes, all reported the same way
        raise KnowledgeBaseError(f"the Ray {stage} stage failed: {_one_line(e)}; nothing was written") from None


# -- the whole build -------------------------------------------------------------------------------
def build(kb: Any, sources: Iterable[str | Path] = (), options: RayOptions | None = None, *,
          documents: Iterable[Document] = (), ingest_cfg: Any = None, prune: bool = False,
          stats: RayStats | None = None) -> tuple[Any, Any]:
    """Ingest ``sources`` on Ray, add ``documents`` (already loaded, e.g. docs.jsonl rows), chunk and
    embed what the knowledge base does not hold yet on the actor pool, and sync it in.

    ``kb`` is an open ``KnowledgeBase``, or a function that opens (or creates) one, called once the
    documents are loaded (so a failed ingest creates nothing); a knowledge base it opens is closed
    at the end. Returns ``(SyncReport, IngestReport | None)``. Connects to Ray first (``connect``)
    and shuts it down after, unless Ray was connected already."""
    options = options or RayOptions()
    started = connect(options)
    try:
        _configure(options)
        docs = list(documents)
        sources = list(sources)
        result = ingest(sources, ingest_cfg, options, stats) if sources else None
        if result is not None:
            docs.extend(result.documents)
        if not docs:
            raise InputError(f"no documents were loaded from {', '.join(map(str, sources)) or 'the input'}")
        owned = callable(kb)
        kb = kb() if owned else kb
        try:
            prepared = chunk_and_embed(kb.pending(docs, prune=prune), kb.cfg, options, stats)
            report = kb.sync(docs, prune=prune, prepared=prepared)
        finally:
            if owned:
                kb.close()
        return report, (result.report if result is not None else None)
    finally:
        if started:
            import_ray().shutdown()


def _configure(options: RayOptions) -> None:
    """Ray Data settings for a build: progress bars and the start-of-run log only when asked."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = options.progress
    ctx.print_on_execution_start = options.progress
    if not options.progress:  # the per-run "execution finished" lines would interleave with the CLI's output
        logging.getLogger("ray.data").setLevel(logging.WARNING)
