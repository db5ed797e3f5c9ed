"""Retrieval evaluation shared by ``benchmarks/retrieval.py`` and ``hybrid eval retrieval``.

A BEIR-format directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id  corpus-id  score``, header optional).

    ds = load_beir("../shared/data/cranfield")
    run = {qid: ["184", "29", ...] for qid in ds.queries}   # ranked doc ids per query
    scores = evaluate_run(run, ds.qrels)
    scores.mean["ndcg@10"], scores.mean["recall@100"], scores.mean["mrr@10"]

The metrics follow trec_eval / pytrec_eval (what BEIR reports), written out here so that they
can be checked by hand (``tests/eval/test_retrieval_parity.py`` checks them against pytrec_eval):

- nDCG@k uses linear gain ``rel / log2(rank + 1)``; the ideal ranking is all judged documents
  sorted by grade. Grades <= 0 count as not relevant.
- recall@k is the share of relevant (grade > 0) documents found in the top k.
- MRR@k is ``1 / rank`` of the first relevant document in the top k, else 0.

Queries without any relevant judgment are left out (their metrics are undefined); a query that
has judgments but no entry in the run scores 0 everywhere, so a retriever that fails on a query
is penalized instead of silently ignored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from core.errors import InputError
from core.io import read_jsonl
from core.types import Document

Qrels = dict[str, dict[str, int]]


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class BeirDataset:
    """A BEIR-format dataset in memory. ``queries`` keeps only queries that have judgments.

    >>> ds = load_beir("../shared/data/cranfield")     # doctest: +SKIP
    >>> len(ds.corpus), len(ds.queries)                 # doctest: +SKIP
    (1400, 225)
    """

    name: str
    path: Path
    corpus: dict[str, dict[str, str]]  # doc id -> {"title": ..., "text": ...}
    queries: dict[str, str]  # query id -> text
    qrels: Qrels  # query id -> doc id -> grade
    notes: dict[str, int] = field(default_factory=dict)  # counted oddities (unjudged queries, ...)

    def documents(self) -> list[Document]:
        """One ``Document`` per corpus entry, id = the BEIR doc id, text = title + newline + text."""
        out = []
        for doc_id, d in self.corpus.items():
            title, text = d.get("title", ""), d.get("text", "")
            body = f"{title}\n{text}" if title else text
            out.append(Document(id=doc_id, text=body, metadata={"source": self.name, "title": title,
                                                                "beir_id": doc_id}))
        return out

    def split_queries(self, dev_fraction: float = 0.3, seed: str = "hybrid") -> tuple[list[str], list[str]]:
        """A deterministic (dev, test) split of the query ids, by hash, for tuning without peeking.

        The same ids land on the same side on every machine and every run.
        """
        if not 0.0 < dev_fraction < 1.0:
            raise InputError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
        dev, test = [], []
        for qid in self.queries:
            h = int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            (dev if h < dev_fraction else test).append(qid)
        # small sets can hash all to one side: keep at least one query on each
        if not dev and len(test) > 1:
            dev.append(test.pop(0))
        if not test and len(dev) > 1:
            test.append(dev.pop())
        return dev, test

    def subset(self, query_ids: Iterable[str]) -> "BeirDataset":
        """The same corpus with only the given queries (and their judgments)."""
        ids = [q for q in query_ids if q in self.queries]
        return BeirDataset(self.name, self.path, self.corpus, {q: self.queries[q] for q in ids},
                           {q: self.qrels[q] for q in ids}, dict(self.notes))


def _read_jsonl_objects(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """BEIR rows: JSON objects with an ``_id`` (bad JSON raises with the line, via ``read_jsonl``)."""
    for n, obj in read_jsonl(path):
        if not isinstance(obj, dict) or "_id" not in obj:
            raise InputError(f"{path}:{n}: expected an object with an '_id' field, got {json.dumps(obj)[:80]!r}")
        yield n, obj


def read_qrels(path: str | Path) -> Qrels:
    """Parse a BEIR qrels TSV (a ``query-id corpus-id score`` header is optional)."""
    path = Path(path)
    qrels: Qrels = {}
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if n == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) != 3:
                raise InputError(f"{path}:{n}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                                 f"got {len(row)}: {row!r}")
            qid, did, score = (c.strip() for c in row)
            try:
                grade = int(float(score))
            except ValueError:
                raise InputError(f"{path}:{n}: relevance score must be a number, got {score!r}") from None
            qrels.setdefault(qid, {})[did] = grade
    return qrels


def load_beir(path: str | Path, *, split: str = "test", limit_queries: int | None = None,
              limit_docs: int | None = None) -> BeirDataset:
    """Load a BEIR directory. Bad files raise ``InputError`` naming the file and line.

    ``limit_queries`` keeps the first N judged queries (in file order). ``limit_docs`` keeps the
    first N documents plus every document judged for the kept queries, so a small slice still has
    answers in it.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"BEIR dataset directory not found: {str(root)!r}")
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    for what, f in files.items():
        if not f.is_file():
            raise InputError(f"BEIR dataset {str(root)!r} has no {what} file {str(f)!r}")
    if limit_queries is not None and limit_queries <= 0:
        raise InputError(f"limit_queries must be > 0, got {limit_queries}")

    corpus: dict[str, dict[str, str]] = {}
    for n, obj in _read_jsonl_objects(files["corpus"]):
        did = str(obj["_id"])
        if did in corpus:
            raise InputError(f"{files['corpus']}:{n}: duplicate document id {did!r}")
        corpus[did] = {"title": str(obj.get("title") or ""), "text": str(obj.get("text") or "")}
    if not corpus:
        raise InputError(f"{files['corpus']} holds no documents")

    all_queries = {str(o["_id"]): str(o.get("text") or "") for _, o in _read_jsonl_objects(files["queries"])}
    qrels_all = read_qrels(files["qrels"])
    notes = {"queries_in_file": len(all_queries), "qrels_unknown_query": 0, "qrels_unknown_doc": 0,
             "queries_without_relevant": 0}

    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for qid, text in all_queries.items():
        judged = qrels_all.get(qid)
        if not judged or not any(g > 0 for g in judged.values()):
            notes["queries_without_relevant"] += 1
            continue
        if not text.strip():
            raise InputError(f"{files['queries']}: query {qid!r} has empty text")
        queries[qid], qrels[qid] = text, dict(judged)
    notes["qrels_unknown_query"] = sum(1 for q in qrels_all if q not in all_queries)
    notes["qrels_unknown_doc"] = sum(1 for j in qrels.values() for d in j if d not in corpus)
    if not queries:
        raise InputError(f"{files['qrels']}: no query in {files['queries'].name} has a relevant judgment")

    if limit_queries is not None:
        keep = list(queries)[:limit_queries]
        queries = {q: queries[q] for q in keep}
        qrels = {q: qrels[q] for q in keep}
    if limit_docs is not None:
        needed = {d for j in qrels.values() for d in j if d in corpus}
        first = list(corpus)[:limit_docs]
        keep_docs = set(first) | needed
        corpus = {d: v for d, v in corpus.items() if d in keep_docs}
    return BeirDataset(root.name, root, corpus, queries, qrels, notes)


# --------------------------------------------------------------------------------------------
# metrics (one query)


def _dedup(ranking: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for d in ranking:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def ndcg_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gain (trec_eval's ``ndcg_cut``). A repeated doc id counts once."""
    if k <= 0:
        raise InputError(f"k must be > 0, got {k}")
    ranked = _dedup(ranking)[:k]
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked))
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Share of the relevant (grade > 0) documents that appear in the top k."""
    if k <= 0:
        raise InputError(f"k must be > 0, got {k}")
    relevant = {d for d, g in rels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_dedup(ranking)[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], rels: Mapping[str, int], k: int | None = None) -> float:
    """Reciprocal rank of the first relevant document within the top k (all ranks if k is None)."""
    if k is not None and k <= 0:
        raise InputError(f"k must be > 0, got {k}")
    ranked = _dedup(ranking)
    for i, d in enumerate(ranked if k is None else ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


# --------------------------------------------------------------------------------------------
# whole runs


@dataclass
class RetrievalScores:
    """Mean and per-query metrics of one run. ``mean`` keys look like ``ndcg@10``, ``recall@100``."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    missing_queries: int  # judged queries absent from the run (scored 0)


def evaluate_run(run: Mapping[str, Sequence[str]], qrels: Qrels, *, ndcg_ks: Sequence[int] = (10,),
                 recall_ks: Sequence[int] = (10, 100), mrr_k: int | None = 10) -> RetrievalScores:
    """Score a run (query id -> ranked doc ids, best first) against graded judgments."""
    per_query: dict[str, dict[str, float]] = {}
    missing = 0
    for qid, rels in qrels.items():
        if not any(g > 0 for g in rels.values()):
            continue
        ranking = run.get(qid)
        if ranking is None:
            missing += 1
            ranking = []
        m: dict[str, float] = {}
        for k in ndcg_ks:
            m[f"ndcg@{k}"] = ndcg_at_k(ranking, rels, k)
        for k in recall_ks:
            m[f"recall@{k}"] = recall_at_k(ranking, rels, k)
        m["mrr" if mrr_k is None else f"mrr@{mrr_k}"] = mrr_at_k(ranking, rels, mrr_k)
        per_query[qid] = m
    if not per_query:
        raise InputError("no judged query to evaluate: qrels hold no relevant document")
    keys = next(iter(per_query.values())).keys()
    mean = {key: sum(m[key] for m in per_query.values()) / len(per_query) for key in keys}
    return RetrievalScores(mean, per_query, len(per_query), missing)


def doc_ranking(pairs: Iterable[tuple[str, float]], k: int | None = None) -> list[str]:
    """Collapse (doc id, score) pairs, e.g. one per chunk, to doc ids ranked by their best score.

    Ties keep first-seen order, so an already-sorted chunk list keeps its order.
    """
    best: dict[str, float] = {}
    order: dict[str, int] = {}
    for d, s in pairs:
        if d not in best:
            order[d] = len(order)
            best[d] = s
        elif s > best[d]:
            best[d] = s
    ranked = sorted(best, key=lambda d: (-best[d], order[d]))
    return ranked if k is None else ranked[:k]


def hits_to_ranking(hits: Iterable[Any], doc_key: Callable[[Any], str] | None = None,
                    k: int | None = None) -> list[str]:
    """Doc ids from knowledge-base ``Hit``s (max score over each doc's chunks)."""
    key = doc_key or (lambda h: h.chunk.doc_id)
    return doc_ranking(((key(h), float(h.score)) for h in hits), k)


def run_knowledge_base(kb: Any, queries: Mapping[str, str], *, k: int = 100, mode: str = "hybrid",
                       batch_size: int = 64, doc_key: Callable[[Any], str] | None = None,
                       chunk_k: int | None = None) -> dict[str, list[str]]:
    """Ask a knowledge base every query (in batches) and return the run: query id -> doc ids.

    ``chunk_k`` is how many chunks to fetch per query (default: ``k``); fetch more than ``k``
    when documents are split into several chunks, so that ``k`` distinct documents remain.
    """
    qids = list(queries)
    fetch = chunk_k or k
    run: dict[str, list[str]] = {}
    for start in range(0, len(qids), batch_size):
        batch = qids[start:start + batch_size]
        texts = [queries[q] for q in batch]
        if hasattr(kb, "search_batch"):
            results = kb.search_batch(texts, k=fetch, mode=mode)
        else:
            results = [kb.search(t, k=fetch, mode=mode) for t in texts]
        for qid, hits in zip(batch, results):
            run[qid] = hits_to_ranking(hits, doc_key, k)
    return run


# --------------------------------------------------------------------------------------------
# did retrieval find the question's known source? (``hybrid eval`` per question)


def source_rank(hits: Sequence[Any], relevant_docs: Sequence[str] = (),
                relevant_doc_ids: Sequence[str] = ()) -> int | None:
    """1-based rank of the first hit from a known source document, else None.

    A hit matches when the basename of its ``source`` (or ``uri``) metadata is one of ``relevant_docs``
    (file names, as ``hybrid app import`` writes them), or its chunk's ``doc_id`` is in ``relevant_doc_ids``.

    >>> source_rank(hits, relevant_docs=["walmart-com.txt"])   # doctest: +SKIP
    2
    """
    names = {Path(str(d)).name for d in relevant_docs if d}
    ids = {str(d) for d in relevant_doc_ids if d}
    for rank, h in enumerate(hits, 1):
        m = h.chunk.metadata or {}
        srcs = {Path(str(m[key]).split("#")[0]).name for key in ("source", "uri") if m.get(key)}
        if (names and srcs & names) or (ids and str(h.chunk.doc_id) in ids):
            return rank
    return None


def hit_rates(ranks: Sequence[int | None], k: int) -> dict[str, Any]:
    """hit@1 and hit@k over questions with a known source (ranks from ``source_rank``)."""
    n = len(ranks)
    if not n:
        return {"n": 0, "k": k, "hit@1": None, "hit@k": None}
    return {"n": n, "k": k, "hit@1": sum(1 for r in ranks if r == 1) / n,
            "hit@k": sum(1 for r in ranks if r is not None and r <= k) / n}
