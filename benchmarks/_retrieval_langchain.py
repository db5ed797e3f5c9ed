"""The LangChain side of ``benchmarks/retrieval.py``: FAISS, BM25 and the Ensemble retriever, built as
a LangChain user would build them (defaults, the same bundled embedder), and the Ensemble's weights
tuned on the same dev split as ours."""

from __future__ import annotations

import time
from typing import Any, Sequence

from hybrid.eval.retrieval import BeirDataset, evaluate_run


def _lc_imports():
    try:
        from langchain_classic.retrievers import EnsembleRetriever
        from langchain_community.retrievers import BM25Retriever
        from langchain_community.vectorstores import FAISS
        from langchain_core.documents import Document as LCDocument
    except ImportError as e:
        raise SystemExit(f"the LangChain anchors need the bench extra: pip install -e '.[bench]' ({e})") from None
    return FAISS, BM25Retriever, EnsembleRetriever, LCDocument


def langchain_embeddings(embedder_spec: str):
    """HuggingFaceEmbeddings pointed at the local bundled model (never a hub id), or a hash fake."""
    if embedder_spec.startswith("hash"):
        from langchain_core.embeddings import Embeddings

        from indexes.embed import get_embedder

        fake = get_embedder(embedder_spec)

        class HashLC(Embeddings):  # the test fake behind LangChain's interface, for the smoke test only
            def embed_documents(self, texts):
                return fake.embed(texts).tolist()

            def embed_query(self, text):
                return fake.embed([text])[0].tolist()

        return HashLC()
    from indexes.embed import bundled_minilm_path

    try:
        from langchain_huggingface import HuggingFaceEmbeddings
    except ImportError:  # the older home of the same wrapper
        from langchain_community.embeddings import HuggingFaceEmbeddings  # type: ignore
    return HuggingFaceEmbeddings(model_name=str(bundled_minilm_path()),
                                 model_kwargs={"device": "cpu", "local_files_only": True})


class LangChainStack:
    """FAISS + BM25 + Ensemble as a LangChain user would build them, with default settings."""

    def __init__(self, ds: BeirDataset, embedder_spec: str, k: int):
        self.ds, self.k = ds, k
        FAISS, BM25Retriever, EnsembleRetriever, LCDocument = _lc_imports()
        self._FAISS, self._BM25, self._Ensemble = FAISS, BM25Retriever, EnsembleRetriever
        t0 = time.perf_counter()
        self.embeddings = langchain_embeddings(embedder_spec)
        self.embeddings.embed_query("warm up")  # load the model before any timing
        self.model_load_s = time.perf_counter() - t0
        self.docs = [LCDocument(page_content=d.text, metadata={"beir_id": d.id}) for d in ds.documents()]
        self.store = self.bm25 = None
        self.retrievers: dict[str, Any] = {}
        self.build_s: dict[str, float] = {}

    def build_faiss(self) -> float:
        t0 = time.perf_counter()
        self.store = self._FAISS.from_documents(self.docs, self.embeddings)
        self.build_s["langchain-faiss"] = time.perf_counter() - t0
        self.retrievers["langchain-faiss"] = self.store.as_retriever(search_kwargs={"k": self.k})
        return self.build_s["langchain-faiss"]

    def build_bm25(self) -> float:
        t0 = time.perf_counter()
        self.bm25 = self._BM25.from_documents(self.docs, k=self.k)
        self.build_s["langchain-bm25"] = time.perf_counter() - t0
        self.retrievers["langchain-bm25"] = self.bm25
        return self.build_s["langchain-bm25"]

    def ensemble(self, weights: Sequence[float] = (0.5, 0.5)):
        """EnsembleRetriever over the two built retrievers (its own build is just both of theirs)."""
        return self._Ensemble(retrievers=[self.retrievers["langchain-bm25"], self.retrievers["langchain-faiss"]],
                              weights=list(weights))

    def build_ensemble(self) -> float:
        if self.store is None:
            self.build_faiss()
        if self.bm25 is None:
            self.build_bm25()
        self.retrievers["langchain-ensemble"] = self.ensemble()
        self.build_s["langchain-ensemble"] = self.build_s["langchain-faiss"] + self.build_s["langchain-bm25"]
        return self.build_s["langchain-ensemble"]

    def set_k(self, k: int) -> None:
        self.k = k
        if "langchain-faiss" in self.retrievers:
            self.retrievers["langchain-faiss"].search_kwargs["k"] = k
        if "langchain-bm25" in self.retrievers:
            self.retrievers["langchain-bm25"].k = k

    @staticmethod
    def _ids(docs) -> list[str]:
        return list(dict.fromkeys(d.metadata["beir_id"] for d in docs))

    def search(self, system: str, queries: Sequence[str], k: int, retriever=None) -> list[list[str]]:
        r = retriever or self.retrievers[system]
        self.set_k(k)
        return [self._ids(docs)[:k] for docs in r.batch(list(queries))]

    def search_one(self, system: str, query: str, k: int) -> list[str]:
        self.set_k(k)
        return self._ids(self.retrievers[system].invoke(query))[:k]


def tune_ensemble_weights(lc: LangChainStack, ds: BeirDataset, dev: list[str], k: int) -> tuple[list[float], dict]:
    """LangChain's ensemble weights chosen on the same dev split, so the anchor gets the same chance."""
    grid = {}
    for w in (0.3, 0.4, 0.5, 0.6, 0.7):  # weight of the dense (FAISS) retriever
        r = lc.ensemble((round(1 - w, 2), w))
        run = dict(zip(dev, lc.search("langchain-ensemble", [ds.queries[q] for q in dev], k, retriever=r)))
        grid[w] = evaluate_run(run, {q: ds.qrels[q] for q in dev}, ndcg_ks=(10,), recall_ks=(100,)).mean["ndcg@10"]
    w = max(grid, key=grid.get)
    return [round(1 - w, 2), w], {f"w_dense={w_}": round(v, 4) for w_, v in grid.items()}
