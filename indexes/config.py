"""Settings for a knowledge base: chunking, embedder, FAISS index kind, BM25 and fusion.

    cfg = load_config(IndexConfig, "configs/index.yaml", ["index=hnsw", "hnsw_m=48"])
    kb = KnowledgeBase.create(".cache/kb", cfg)

The chunker and embedder settings are frozen into the knowledge base's manifest when it is
created; search-time knobs (``hnsw_ef_search``, ``ivf_nprobe``, ``rrf_k``) may change on open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from indexes.embed import DEFAULT_EMBEDDER

ChunkMode = Literal["recursive", "headings"]
IndexKind = Literal["flat", "hnsw", "ivfpq"]
RefineKind = Literal["none", "flat", "sq8"]
REFINE_KINDS = ("none", "flat", "sq8")
SearchMode = Literal["hybrid", "dense", "bm25"]
SEARCH_MODES = ("hybrid", "dense", "bm25")
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
# The vector-store settings: declared once, below in ``IndexConfig`` (the user-facing keys
# ``index.backend``, ``index.milvus_uri``...); ``indexes.backends.BackendConfig`` is made from these
# fields, so the two can never drift apart.
BACKEND_FIELDS = ("backend", "milvus_uri", "milvus_collection", "milvus_timeout", "milvus_consistency")


@dataclass
class IndexConfig:
    """One knowledge base's settings. Every field has a help text; ``__post_init__`` checks them together."""

    embedder: str = field(default=DEFAULT_EMBEDDER, metadata={
        "help": "sentence-transformers model name or local directory; 'hash' / 'hash:<dim>' is the test fake"})
    chunk_size: int = field(default=200, metadata={
        "help": "tokens per chunk, counted with the embedder's own tokenizer (MiniLM reads at most 256, "
                "so 200 leaves room for special tokens and a section title)"})
    chunk_overlap: int = field(default=30, metadata={"help": "tokens shared by neighbouring chunks"})
    chunk_mode: ChunkMode = field(default="recursive", metadata={
        "help": "recursive: split on paragraphs, lines, sentences, words; "
                "headings: split Markdown/HTML at headings first and keep the section title on each chunk"})
    min_chunk_chars: int = field(default=1, metadata={"help": "chunks shorter than this (after strip) are dropped"})
    index: IndexKind = field(default="flat", metadata={
        "help": "flat: exact inner product (best up to ~1M chunks); hnsw: graph, fast approximate; "
                "ivfpq: compressed, for many millions"})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW neighbours per node (memory vs recall)"})
    hnsw_ef_construction: int = field(default=80, metadata={"help": "HNSW build-time beam width"})
    hnsw_ef_search: int = field(default=64, metadata={"help": "HNSW query-time beam width (raise for recall)"})
    hnsw_max_tombstones: float = field(default=0.2, metadata={
        "help": "HNSW cannot delete in place: deleted vectors are tombstoned and the graph is rebuilt "
                "when tombstones exceed this fraction of its vectors"})
    ivf_nlist: int = field(default=1024, metadata={
        "help": "IVF cells; lowered automatically to chunks/39 when training data is scarce"})
    ivf_m: int = field(default=48, metadata={"help": "PQ sub-quantizers (must divide the embedding dimension)"})
    ivf_nbits: int = field(default=8, metadata={"help": "bits per PQ code"})
    ivf_nprobe: int = field(default=16, metadata={"help": "IVF cells visited per query (raise for recall)"})
    ivf_train_size: int = field(default=100_000, metadata={"help": "vectors sampled to train IVF-PQ"})
    ivf_fastscan: bool = field(default=False, metadata={
        "help": "IVF-PQ scans its lists with FAISS's SIMD fast-scan kernels (IndexIVFPQFastScan, 4-bit codes; "
                "needs ivf_nbits=4 and a refine store): many more lists per millisecond, coarser PQ scores for the refine stage to fix"})
    ivf_refine: RefineKind = field(default="sq8", metadata={
        "help": "IVF-PQ re-ranks its top k*ivf_k_factor candidates with stored vectors: none (PQ scores only), "
                "flat (exact float32 vectors, +1.5 KiB per 384-d vector) or sq8 (8-bit scalar-quantized "
                "vectors, +384 B). sq8 by default: at 1M structured 384-d vectors (benchmarks/results/scale-lowrank.json) "
                "it re-ranks to the same recall@10 as flat (0.942 vs 0.947 at nprobe=128, k_factor=32; 0.569 vs "
                "0.569 at nprobe=16) for a quarter of flat's memory (444 vs 1,543 MiB), where PQ alone finds 0.354"})
    ivf_k_factor: int = field(default=16, metadata={
        "help": "IVF-PQ candidates re-ranked per result (k * ivf_k_factor), when ivf_refine is not none; "
                "search-time. 16 by default: at 1M vectors and nprobe=16, 64 found no more (recall@10 0.570 vs 0.569); "
                "raise ivf_nprobe for recall, since the IVF cells visited are then the limit"})
    backend: str = field(default="faiss", metadata={
        "help": "where vectors live, a name in the vector-backend registry: faiss (files beside the SQLite "
                "store) or milvus (a Milvus collection; docs/milvus.md)"})
    milvus_uri: str = field(default="", metadata={
        "help": "backend milvus: a Milvus Lite file ending in .db (relative = inside the KB directory) or "
                "http://host:19530; empty = milvus.db in the KB directory"})
    milvus_collection: str = field(default="", metadata={
        "help": "backend milvus: the collection; empty = derived from the KB directory's name and path"})
    milvus_timeout: float = field(default=10.0, metadata={
        "help": "backend milvus: seconds to wait for the server before a one-line error"})
    milvus_consistency: str = field(default="Strong", metadata={
        "help": "backend milvus: the collection's consistency level (Strong: a search sees every finished "
                "write; Bounded, Session, Eventually)"})
    bm25_tokenizer: str = field(default="porter unicode61 remove_diacritics 2", metadata={
        "help": "SQLite FTS5 tokenizer used for BM25 (porter = English stemming)"})
    bm25_max_terms: int = field(default=64, metadata={
        "help": "distinct query terms kept for BM25 (long queries are cut, not rejected)"})
    rrf_k: int = field(default=60, metadata={"help": "reciprocal rank fusion constant: score = sum 1/(rrf_k + rank)"})
    fusion_depth: int = field(default=50, metadata={
        "help": "candidates taken from each of dense and BM25 before fusing (at least k)"})
    dense_weight: float = field(default=1.0, metadata={"help": "weight of the dense ranking in fusion"})
    bm25_weight: float = field(default=1.0, metadata={"help": "weight of the BM25 ranking in fusion"})
    mmr_lambda: float = field(default=0.7, metadata={"help": "MMR trade-off: 1 = pure relevance, 0 = pure diversity"})
    batch_size: int = field(default=16, metadata={"help": "texts per embedding batch (16 measured fastest for bf16 MiniLM on a 2-core CPU: 4.6 s vs 6.1 s at 64 for 400 abstracts)"})
    bf16: bool | None = field(default=None, metadata={
        "help": "run the embedder in bf16: null = auto (on when the CPU has AMX/AVX-512 BF16)"})
    max_query_chars: int = field(default=10_000, metadata={"help": "longer queries are rejected with an error"})

    def __post_init__(self) -> None:
        if not self.embedder:
            raise ValueError("embedder must not be empty")
        if self.chunk_size < 8:
            raise ValueError(f"chunk_size must be >= 8 tokens, got {self.chunk_size}")
        if not (0 <= self.chunk_overlap < self.chunk_size):
            raise ValueError(f"chunk_overlap must be in [0, chunk_size={self.chunk_size}), got {self.chunk_overlap}")
        if self.min_chunk_chars < 0:
            raise ValueError(f"min_chunk_chars must be >= 0, got {self.min_chunk_chars}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nlist", "ivf_m",
                     "ivf_nprobe", "ivf_train_size", "bm25_max_terms", "rrf_k", "fusion_depth", "batch_size",
                     "max_query_chars"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        from indexes.backends import BACKENDS  # lazily: that module imports this one

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS.names())}, got {self.backend!r}")
        check_milvus_settings(self.milvus_timeout, self.milvus_consistency)
        if self.ivf_refine not in REFINE_KINDS:
            raise ValueError(f"ivf_refine must be one of {', '.join(REFINE_KINDS)}, got {self.ivf_refine!r}")
        if isinstance(self.ivf_k_factor, bool) or not isinstance(self.ivf_k_factor, int) or self.ivf_k_factor < 1:
            raise ValueError(f"ivf_k_factor must be an integer >= 1, got {self.ivf_k_factor!r}")
        if self.ivf_fastscan and self.ivf_nbits != 4:
            raise ValueError(f"ivf_fastscan needs ivf_nbits=4 (fast-scan codes are 4-bit), got ivf_nbits={self.ivf_nbits}")
        if self.ivf_fastscan and self.ivf_refine == "none":
            raise ValueError("ivf_fastscan needs ivf_refine flat or sq8 (fast-scan lists cannot reconstruct "
                             "vectors by id; the refine store does)")
        if not (1 <= self.ivf_nbits <= 16):
            raise ValueError(f"ivf_nbits must be in [1, 16], got {self.ivf_nbits}")
        if self.ivf_nprobe > self.ivf_nlist:
            raise ValueError(f"ivf_nprobe ({self.ivf_nprobe}) must be <= ivf_nlist ({self.ivf_nlist})")
        if not (0.0 < self.hnsw_max_tombstones < 1.0):
            raise ValueError(f"hnsw_max_tombstones must be in (0, 1), got {self.hnsw_max_tombstones}")
        if not (0.0 <= self.mmr_lambda <= 1.0):
            raise ValueError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.dense_weight < 0 or self.bm25_weight < 0 or self.dense_weight + self.bm25_weight == 0:
            raise ValueError(f"fusion weights must be >= 0 and not both 0, got dense={self.dense_weight} "
                             f"bm25={self.bm25_weight}")

    # The settings that change what is stored; a knowledge base keeps these from its manifest.
    STORED = ("embedder", "chunk_size", "chunk_overlap", "chunk_mode", "min_chunk_chars", "index",
              "hnsw_m", "hnsw_ef_construction", "ivf_nlist", "ivf_m", "ivf_nbits", "ivf_train_size",
              "ivf_fastscan", "ivf_refine", "bm25_tokenizer", "backend")
    # Stored settings added after the first knowledge bases were written: the value a manifest without
    # them was built with (an IVF-PQ index from before refinement has none), and the index kind they shape.
    LEGACY = {"ivf_refine": "none", "ivf_fastscan": False, "backend": "faiss"}
    ONLY_FOR_KIND = {"ivf_refine": "ivfpq", "ivf_fastscan": "ivfpq"}


def check_milvus_settings(timeout: float, consistency: str) -> None:
    """``ValueError`` for a Milvus timeout or consistency level Milvus would not take (shared by
    ``IndexConfig`` and ``indexes.backends.BackendConfig``)."""
    if timeout <= 0:
        raise ValueError(f"milvus_timeout must be > 0 seconds, got {timeout}")
    if consistency not in CONSISTENCY_LEVELS:
        raise ValueError(f"milvus_consistency must be one of {list(CONSISTENCY_LEVELS)}, got {consistency!r}")


def stored_config(stored: dict[str, Any] | None, overrides: Any = None) -> dict[str, Any]:
    """A manifest's ``config`` as ``IndexConfig`` keyword arguments. Keys this version does not know are
    dropped; the stored settings added after that manifest was written (``IndexConfig.LEGACY``) get the
    value it was built with, not today's default (an IVF-PQ index from before refinement has none), as
    long as they mean something to its index kind (``ONLY_FOR_KIND``; else today's default).

    ``overrides`` (an ``IndexConfig`` or a dict) replace the search-time settings (efSearch, nprobe,
    rrf_k...); what the index was built with (``IndexConfig.STORED``) stays as stored. An unknown key
    is a ``ConfigError``."""
    known = {f.name for f in fields(IndexConfig)}
    out = {k: v for k, v in (stored or {}).items() if k in known}
    kind = out.get("index", IndexConfig.index)
    for k, v in IndexConfig.LEGACY.items():
        if k not in out and IndexConfig.ONLY_FOR_KIND.get(k, kind) == kind:
            out[k] = v
    if overrides is not None:
        extra = asdict(overrides) if is_dataclass(overrides) else dict(overrides)
        unknown = sorted(set(extra) - known)
        if unknown:
            from core.errors import ConfigError

            raise ConfigError(f"unknown IndexConfig setting {unknown[0]!r} in overrides")
        out.update({k: v for k, v in extra.items() if k not in IndexConfig.STORED})
    return out


def stored_setting_diff(stored: dict[str, Any], cfg: IndexConfig) -> list[str]:
    """``"name: stored X, asked Y"`` for each ``IndexConfig.STORED`` setting where ``cfg`` differs from
    ``stored`` (a manifest's config). Embedder specs are compared by the model they name, so the
    bundled model's aliases (``default``...) match its full name."""
    from indexes.embed import same_embedder_spec

    out = []
    defaults = IndexConfig(embedder=cfg.embedder)
    kinds = {stored.get("index", defaults.index), cfg.index}
    for k in IndexConfig.STORED:
        if k in IndexConfig.ONLY_FOR_KIND and IndexConfig.ONLY_FOR_KIND[k] not in kinds:
            continue  # e.g. ivf_refine means nothing to a flat or HNSW index
        have, want = stored.get(k, IndexConfig.LEGACY.get(k, getattr(defaults, k))), getattr(cfg, k)
        same = same_embedder_spec(str(have), str(want)) if k == "embedder" else have == want
        if not same:
            out.append(f"{k}: stored {have!r}, asked {want!r}")
    return out
