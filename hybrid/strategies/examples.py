"""The example bank: question/answer pairs (+ optional reasoning) that few-shot prompts are built from.

::

    bank = ExampleBank.load("apps/legal/examples.jsonl", embedder)
    picked = bank.select(bank.embed_query("Can I end the lease early?"), k=4, mmr_lambda=0.7)
    [(ex.question, round(sim, 2)) for ex, sim in picked]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import InputError
from core.io import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class Example:
    question: str
    answer: str
    reasoning: str = ""


class ExampleBank:
    """Examples with their question embeddings; picks the k nearest with MMR for diversity."""

    def __init__(self, examples: Sequence[Example], embedder, *, skipped: int = 0):
        self.examples = list(examples)
        self.embedder = embedder
        self.skipped = skipped
        self._vecs: np.ndarray | None = None

    @classmethod
    def load(cls, path: str | Path, embedder) -> "ExampleBank":
        """Read a JSONL bank. A missing file is an empty bank; a row without question/answer is a
        counted skip (logged), never a crash."""
        p = Path(path)
        if not p.is_file():
            return cls([], embedder)
        out, skipped = [], 0
        for n, row in read_jsonl(p):
            q = str(row.get("question", "")).strip() if isinstance(row, dict) else ""
            a = str(row.get("answer", "")).strip() if isinstance(row, dict) else ""
            if not q or not a:
                skipped += 1
                log.warning("%s:%d: example without question/answer skipped", p, n)
                continue
            out.append(Example(q, a, str(row.get("reasoning") or "").strip()))
        return cls(out, embedder, skipped=skipped)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def vectors(self) -> np.ndarray:
        if self._vecs is None:
            if not self.examples:
                self._vecs = np.zeros((0, getattr(self.embedder, "dim", 1)), dtype=np.float32)
            else:
                self._vecs = np.asarray(self.embedder.embed([e.question for e in self.examples]),
                                        dtype=np.float32)
        return self._vecs

    def warm_up(self) -> None:
        _ = self.vectors

    def similarities(self, qvec: np.ndarray) -> np.ndarray:
        if not self.examples:
            return np.zeros(0, dtype=np.float32)
        return self.vectors @ qvec.astype(np.float32)

    def top_similarity(self, qvec: np.ndarray, n: int = 3) -> float:
        """Mean cosine of the n nearest examples (the router's "do my examples cover this?" signal)."""
        sims = self.similarities(qvec)
        if sims.size == 0:
            return 0.0
        top = np.sort(sims)[::-1][: max(1, n)]
        return float(top.mean())

    def select(self, qvec: np.ndarray, k: int, mmr_lambda: float = 0.7) -> list[tuple[Example, float]]:
        """Maximal marginal relevance: each pick maximizes
        lambda * sim(query, ex) - (1 - lambda) * max sim(ex, already picked)."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        sims = self.similarities(qvec)
        if sims.size == 0:
            return []
        k = min(k, sims.size)
        vecs = self.vectors
        chosen: list[int] = []
        remaining = list(range(sims.size))
        while remaining and len(chosen) < k:
            if chosen:
                redundancy = (vecs[remaining] @ vecs[chosen].T).max(axis=1)
            else:
                redundancy = np.zeros(len(remaining), dtype=np.float32)
            mmr = mmr_lambda * sims[remaining] - (1.0 - mmr_lambda) * redundancy
            best = remaining[int(np.argmax(mmr))]
            chosen.append(best)
            remaining.remove(best)
        return [(self.examples[i], float(sims[i])) for i in chosen]
