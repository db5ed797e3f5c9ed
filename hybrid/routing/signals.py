"""The signals every router reads: computed once per query, shared by ``rules`` and ``learned``.

- ``top`` / ``margin``: the best retrieval relevance and its lead over the second hit;
- ``example_sim``: mean cosine of the query to its nearest few-shot examples;
- ``adapter_sim``: mean cosine to the nearest prompts the adapter was trained on (kNN);
- ``n_words`` and ``qtype`` (lookup / style / howto / other) from the query's wording;
- ``quoted_words``: the words of the longest passage the query quotes ("Convert this clause: "..."");
- ``extract``: the extract strategy's calibrated confidence that its quoted span answers, filled in by
  the rules router only when it asks (``RouteContext.extract_confidence``), else None. It is not a
  learned-router feature: ``vector()`` and ``NAMES`` are unchanged, so saved ``router.json`` files load.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from core.types import Hit

QTYPES = ("lookup", "style", "howto", "other")

_STYLE = re.compile(r"^\s*(?:please\s+)?(?:draft|write|rewrite|reword|rephrase|summari[sz]e|format|compose|"
                    r"turn|convert|make|create|give me a (?:template|summary|list)|list)\b|\b(?:in the style|"
                    r"template|tone|bullet points?|one sentence|plain english|as a table)\b", re.IGNORECASE)
_HOWTO = re.compile(r"^\s*(?:how (?:do|can|should|would) (?:i|we|you)|how to|what (?:should|do) i do|"
                    r"steps? to|what are the steps)\b", re.IGNORECASE)
_LOOKUP = re.compile(r"^\s*(?:what|which|when|where|who|whom|whose|how (?:many|much|long|often|old|soon)|"
                     r"is|are|does|do|did|can|could|will|was|were|has|have|under)\b", re.IGNORECASE)


_QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d|\u2018([^\u2019]+)\u2019|(?<![A-Za-z])\'([^\']+)\'(?![A-Za-z])')


def quoted_words(query: str) -> int:
    """Words in the longest quoted passage of ``query`` (straight or curly quotes); 0 when none.

    >>> quoted_words('Convert to plain English: "The Tenant shall not keep any animal."')
    7
    """
    return max((len(next(g for g in m.groups() if g is not None).split()) for m in _QUOTED.finditer(query)),
               default=0)


def question_type(query: str) -> str:
    if _STYLE.search(query):
        return "style"
    if _HOWTO.search(query):
        return "howto"
    if _LOOKUP.search(query) or query.rstrip().endswith("?"):
        return "lookup"
    return "other"


@dataclass
class Signals:
    top: float = 0.0
    margin: float = 0.0
    example_sim: float = 0.0
    adapter_sim: float = 0.0
    n_words: int = 0
    qtype: str = "other"
    n_hits: int = 0
    extract: float | None = None  # extract's confidence in [0, 1]; None = not asked or not available
    quoted_words: int = 0  # words of the longest quoted passage in the query

    NAMES = ("top", "margin", "example_sim", "adapter_sim", "length", *(f"q_{t}" for t in QTYPES))

    def vector(self) -> np.ndarray:
        """Numeric features for the learned router (names in ``Signals.NAMES``)."""
        onehot = [1.0 if self.qtype == t else 0.0 for t in QTYPES]
        return np.array([self.top, self.margin, self.example_sim, self.adapter_sim,
                         min(self.n_words, 60) / 60.0, *onehot], dtype=np.float32)

    def describe(self) -> str:
        return (f"retrieval {self.top:.2f} (margin {self.margin:.2f}), examples {self.example_sim:.2f}, "
                f"adapter {self.adapter_sim:.2f}, {self.n_words} words, {self.qtype}"
                + (f", {self.quoted_words} words quoted" if self.quoted_words else "")
                + (f", extract {self.extract:.2f}" if self.extract is not None else ""))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RouteContext:
    """What a router may look at for one query. ``retrieve`` is lazy and its hits are reused by the
    strategy that answers, so routing never searches twice. ``extract_confidence`` is lazy the same
    way: the pipeline runs extract once, and reuses that answer when the router then picks extract."""

    query: str
    query_vec: np.ndarray
    retrieve: Callable[[], list[Hit]]
    examples: object | None = None  # ExampleBank
    adapter_vecs: np.ndarray | None = None  # embeddings of the adapter's training prompts
    excluded: dict[str, str] = field(default_factory=dict)  # strategy -> why it is impossible
    costs: dict[str, float] = field(default_factory=dict)
    neighbours: int = 3
    extract_confidence: Callable[[], float | None] | None = None  # None: extract cannot be scored here
    # which scorer extract uses: "reader" (a tuned reader's calibrated probability) or "zero_shot";
    # lazy like the confidence, as knowing it loads the reader
    extract_scorer: Callable[[], str] | None = None
    _signals: Signals | None = None

    def available(self, names) -> list[str]:
        return [n for n in names if n not in self.excluded]

    def signals(self) -> Signals:
        if self._signals is None:
            self._signals = compute_signals(self)
        return self._signals


def knn_similarity(vecs: np.ndarray | None, qvec: np.ndarray, k: int) -> float:
    if vecs is None or len(vecs) == 0:
        return 0.0
    sims = vecs @ qvec.astype(np.float32)
    return float(np.sort(sims)[::-1][:k].mean())


def compute_signals(rc: RouteContext) -> Signals:
    from hybrid.strategies import names_with
    from hybrid.strategies.base import relevance

    # no retrieval when no strategy that uses the KB can run (the KB is missing or empty)
    hits = [] if all(n in rc.excluded for n in names_with("uses_kb")) else rc.retrieve()
    rel = sorted((relevance(h) for h in hits), reverse=True)
    top = rel[0] if rel else 0.0
    margin = (rel[0] - rel[1]) if len(rel) > 1 else top
    ex = rc.examples.top_similarity(rc.query_vec, rc.neighbours) if rc.examples is not None else 0.0
    return Signals(top=float(top), margin=float(margin), example_sim=float(ex),
                   adapter_sim=knn_similarity(rc.adapter_vecs, rc.query_vec, rc.neighbours),
                   n_words=len(rc.query.split()), qtype=question_type(rc.query), n_hits=len(hits),
                   quoted_words=quoted_words(rc.query))
