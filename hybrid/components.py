"""An app's parts, loaded once and lazily: the embedder, knowledge base, example bank, generator,
adapter, extractive reader and routers, plus what the app lacks and the routing inputs built from them.

Data flow: ``app.yaml`` (``hybrid.app``) -> builders (``hybrid.assemble``) -> ``Components`` (cached
here, per app) -> the query path (``hybrid.pipeline.Assistant``: prepare, route, build, generate).
``Assistant`` is a ``Components``; this module never loads the generator unless asked for it, so the
router can be trained and benchmarked from ``route_contexts`` alone.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Sequence, TypeVar

import numpy as np

from core.errors import HybridError, KnowledgeBaseError
from hybrid.app import AppConfig, load_app
from hybrid.assemble import (adapter_training_prompts, has_adapter_files, kb_size, make_embedder,
                             make_generator, open_or_build_kb)

log = logging.getLogger("hybrid.pipeline")  # same logger name as before the split: log filters keep working

C = TypeVar("C", bound="Components")


class Components:
    """One app's heavy parts. Each loads once, on first use (thread-safe); ``warm_up()`` loads them all.
    A part passed to the constructor (``generator=``, ``embedder=``, ``knowledge_base=``) is used as is."""

    def __init__(self, app: AppConfig, *, generator=None, embedder=None, knowledge_base=None,
                 router: str | None = None, date: str | None = None):
        self.app = app
        self._generator = generator
        self._embedder = embedder
        self._kb = knowledge_base
        self._kb_loaded = knowledge_base is not None
        self._kb_problem = ""
        self._router_kind = router or app.router.kind
        self._routers: dict[str, Any] = {}
        self._router_cfg = None
        self._examples = None
        self._adapter: str | None = None
        self._adapter_problem: str | None = None
        self._adapter_vecs: np.ndarray | None = None
        self._reader = None
        self._reader_loaded = False
        self._sentences = None
        self._date = date
        self._lock = threading.RLock()

    @classmethod
    def from_dir(cls: type[C], path: str | Path, overrides: Sequence[str] = (), **kw) -> C:
        return cls(load_app(path, overrides), **kw)

    # -- components ------------------------------------------------------------------------------
    @property
    def system_prompt(self) -> str:
        return self.app.render_system_prompt(self._date)

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.app)
                self._embedder.warm_up()
            return self._embedder

    @property
    def sentence_embedder(self):
        """The embedder behind a cache of sentence vectors, for zero-shot extract (hybrid.reader.zero_shot)."""
        with self._lock:
            if self._sentences is None:
                from hybrid.reader.zero_shot import SentenceVectors

                self._sentences = SentenceVectors(self.embedder)
            return self._sentences

    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                self._generator = make_generator(self.app)
                self._generator.warm_up()
            return self._generator

    @property
    def knowledge_base(self):
        """The app's KB, opened (or built from its sources on first use); None when there is none."""
        with self._lock:
            if not self._kb_loaded:
                self._kb_loaded = True
                try:
                    self._kb = open_or_build_kb(self.app, self.embedder)
                    if self._kb is None:
                        self._kb_problem = (f"no knowledge base at {self.app.kb_path} and no sources to "
                                            f"build one from")
                except KnowledgeBaseError as e:
                    self._kb, self._kb_problem = None, f"knowledge base unusable: {e}"
            return self._kb

    @property
    def examples(self):
        with self._lock:
            if self._examples is None:
                from hybrid.strategies.examples import ExampleBank

                self._examples = ExampleBank.load(self.app.resolve(self.app.examples.path), self.embedder)
            return self._examples

    @property
    def adapter(self) -> str | None:
        """Name of the app's loaded adapter, or None (``adapter_problem`` says why)."""
        with self._lock:
            if self._adapter is None and self._adapter_problem is None:
                path = self.app.adapter_path
                if not self.has_adapter_files():
                    self._adapter_problem = (f"no adapter at {path} yet (train it with `make demo` or "
                                             f"hybrid.pipeline.ensure_adapter)")
                else:
                    gen = self.generator
                    try:
                        if not gen.has_adapter(self.app.name):
                            gen.load_adapter(self.app.name, path)
                        self._adapter = self.app.name
                    except HybridError as e:
                        self._adapter_problem = f"adapter at {path} could not be loaded: {e}"
            return self._adapter

    @property
    def reader(self):
        """The app's tuned extractive reader (shared per process), or None: extract then selects
        sentences zero-shot. Loaded on first use by the extract strategy only."""
        with self._lock:
            if not self._reader_loaded:
                self._reader_loaded = True
                from hybrid.reader.model import has_reader, load_reader

                path = self.app.reader_path
                if has_reader(path):
                    try:
                        self._reader = load_reader(path)
                    except HybridError as e:
                        log.warning("%s: reader at %s not used (%s); extract falls back to zero-shot",
                                    self.app.name, path, e)
            return self._reader

    def extract_scorer(self) -> str:
        """What scores extract's spans for this app: "reader" (a reader loaded from ``reader.path``, whose
        score is a calibrated probability) or "zero_shot" (sentence selection). The router gates each
        on its own threshold."""
        return "reader" if self.reader is not None else "zero_shot"

    @property
    def adapter_problem(self) -> str | None:
        _ = self.adapter
        return self._adapter_problem

    def has_adapter_files(self) -> bool:
        return has_adapter_files(self.app)

    def adapter_training_vectors(self) -> np.ndarray | None:
        """Embeddings of the prompts the adapter was trained on (the router's 'is this in the
        adapter's distribution?' signal), from ``adapter_training_prompts``. Needs no model: the
        router can be trained and benchmarked without loading the generator."""
        with self._lock:
            if self._adapter_vecs is None and self.has_adapter_files():
                prompts = adapter_training_prompts(self.app)
                self._adapter_vecs = (np.asarray(self.embedder.embed(prompts), dtype=np.float32) if prompts
                                      else np.zeros((0, self.embedder.dim), dtype=np.float32))
            return self._adapter_vecs

    def router_config(self):
        with self._lock:
            if self._router_cfg is None:
                from hybrid.routing.config import load_router_config

                cfg_path = self.app.resolve(self.app.router.config) if self.app.router.config else None
                self._router_cfg = load_router_config(cfg_path, self.app.router.overrides)
            return self._router_cfg

    def router(self, kind: str | None = None):
        kind = kind or self._router_kind
        with self._lock:
            if kind not in self._routers:
                from hybrid.routing import make_router

                self._routers[kind] = make_router(kind, self.router_config(), model_path=self.app.router_model_path,
                                                  app_name=self.app.name, embedder=self.embedder)
            return self._routers[kind]

    def missing(self) -> dict[str, str | None]:
        """What this app lacks right now, by strategy trait: ``uses_kb`` (no usable knowledge base),
        ``uses_adapter`` (no adapter), ``uses_examples`` (an empty example bank), each the reason or
        None when the app has it."""
        why: dict[str, str | None] = {"uses_kb": None, "uses_adapter": None, "uses_examples": None}
        kb = self.knowledge_base
        if kb is None:
            why["uses_kb"] = self._kb_problem or "no knowledge base"
        elif kb_size(kb) == 0:
            why["uses_kb"] = f"the knowledge base at {self.app.kb_path} is empty"
        if self.adapter is None:
            why["uses_adapter"] = self._adapter_problem or "no adapter"
        if len(self.examples) == 0:
            why["uses_examples"] = f"the example bank {self.app.resolve(self.app.examples.path)} is empty or missing"
        return why

    def excluded(self, missing: dict[str, str | None] | None = None) -> dict[str, str]:
        """Strategies this app cannot run right now, with the reason: every registered strategy whose
        traits (``hybrid.strategies.base.Traits``) need something the app lacks (``missing()``). A
        strategy that needs several missing things gets the first reason, in the order KB, adapter,
        example bank."""
        from hybrid.strategies import strategy_names, strategy_traits

        why = self.missing() if missing is None else missing
        out: dict[str, str] = {}
        for trait, reason in why.items():  # grouped by reason, as the reasons are listed in missing()
            if reason is not None:
                for name in strategy_names():
                    if getattr(strategy_traits(name), trait):
                        out.setdefault(name, reason)
        return out

    def _capped(self, k: int) -> int:
        """``k``, capped by the KB's size (a tiny KB refuses a larger k)."""
        n = kb_size(self.knowledge_base) if self.knowledge_base is not None else -1
        return max(1, min(k, n)) if n > 0 else k

    def retrieval_k(self) -> int:
        """``rag.k``, capped by the KB's size."""
        return self._capped(self.app.rag.k)

    def extract_k(self, reader) -> int:
        """Chunks extract reads: ``reader.k``, else ``Extract.depth`` for ``reader``, capped by the KB's size."""
        from hybrid.strategies.extract import Extract

        return self._capped(self.app.reader.k or Extract.depth(reader, self.app.rag.k))

    def route_context(self, rq: str, qvec: np.ndarray, retrieve, excluded: dict[str, str],
                      extract_confidence=None, extract_scorer=None):
        from hybrid.routing.signals import RouteContext

        cfg = self.router_config()
        return RouteContext(query=rq, query_vec=qvec, retrieve=retrieve, examples=self.examples,
                            adapter_vecs=self.adapter_training_vectors(), excluded=excluded,
                            costs=cfg.costs, neighbours=cfg.rules.neighbours,
                            extract_confidence=extract_confidence, extract_scorer=extract_scorer)

    def route_contexts(self, queries: Sequence[str], *, progress: bool = False) -> list:
        """One ``RouteContext`` per query, as ``prepare`` builds it (embedding, lazy retrieval, examples,
        adapter prompts). Loads the embedder, KB and example bank, never the generator."""
        kb = self.knowledge_base
        app = self.app
        vecs = np.asarray(self.embedder.embed(list(queries), progress=progress), dtype=np.float32)
        excluded = {k: v for k, v in self.excluded().items()}
        out = []
        for q, v in zip(queries, vecs):
            def retrieve(q=q):
                return list(kb.search(q, self.retrieval_k(), mode=app.rag.mode)) if kb is not None else []
            out.append(self.route_context(q, v, retrieve, dict(excluded)))
        return out

    def router_features(self, queries: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """The learned router's feature rows for ``queries`` (embedding + rule signals)."""
        from hybrid.routing.learned import features

        rows = [features(c) for c in self.route_contexts(queries, progress=progress)]
        return np.stack(rows) if rows else np.zeros((0, self.embedder.dim))

    def warm_up(self: C) -> C:
        """Load everything now (KB, examples, generator, adapter, router) so the first answer is fast."""
        t = time.perf_counter()
        _ = self.generator, self.embedder, self.knowledge_base
        self.examples.warm_up()
        _ = self.adapter
        self.adapter_training_vectors()
        self.router()
        log.info("%s ready in %.1fs", self.app.name, time.perf_counter() - t)
        return self
