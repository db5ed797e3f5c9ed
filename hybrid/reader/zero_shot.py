"""Zero-shot extraction: the sentence (or clause) of the retrieved chunks that best answers a question.

No model is trained and nothing is generated. Each candidate sentence is scored by

- embedder cosine to the question (when an embedder is given), and
- the share of the question's content words it contains, weighted by an IDF computed over the
  candidate sentences (a word in every sentence tells nothing about which one answers),

half each; that is the sentence's score (the answer's confidence). Sentences are ranked by the score
plus ``RANK_PRIOR`` times how far their chunk's retrieval relevance (``priors``) is below the best
chunk's, so a sentence from a weakly retrieved chunk needs a clearly better match to win.

::

    from hybrid.reader.zero_shot import select_span
    span = select_span("When is rent due?", ["Rent is due on the 1st. Late fees apply."])
    span.text                      # 'Rent is due on the 1st.'
    span.context_index, span.start, span.end   # (0, 0, 23): contexts[0][0:23] == span.text

The source's own reference markers at the end of the sentence ("... in bats [29, 30].") are left out
of the quote: the answer carries its own citation. With ``trim=True`` the sentence is cut to its clause
run that holds the overlap, for short answers.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from dataclasses import dataclass

from hybrid.eval.metrics import content_tokens
from hybrid.reader.span import SPLITTERS, Span, split_sentences

_CLAUSE = re.compile(r"[^,;:()]+[,;:()]?")
# reference markers ending a sentence: "[12]", "[29, 30]", "[3-5]", possibly several, then punctuation
_TAIL_CITATIONS = re.compile(r"(?:\s*\[\s*\d{1,3}(?:\s*[,\u2013\u2014-]\s*\d{1,3})*\s*\][\s.;,]*)+$")
EMBED_WEIGHT = 0.5  # share of the score from embedder cosine; the rest is word overlap
# weight of the chunk's retrieval relevance gap in the ranking (chosen on the COVID-QA and PolicyQA dev
# parts: docs/reader.md, benchmarks/results/extract-ablation-dev.json)
RANK_PRIOR = 0.5
# questions whose answer is a number, a quantity or a date
_NUMERIC_Q = re.compile(r"\b(how (many|much|long|old|often|large|big|high|low|far|fast)|what (percentage|proportion|"
                        r"percent|fraction|number|year|age|rate|dose|size|amount)|which year|when)\b", re.I)
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class ZeroShot:
    """Settings of the zero-shot selector; the defaults are what ``extract`` uses.

    ``embed_weight``: share of cosine in the base score. ``rank_prior``: times (chunk relevance - the
    best chunk's relevance), added to the ranking key (``Span.raw``) but not to ``Span.score``, so the
    confidence stays on the scale the router's ``extract_min`` was fitted on. ``neighbour``: share of the score taken from the window of the
    sentence and the one before it in its chunk (word overlap over both, mean of both vectors), for
    sentences whose subject is named in the previous one. ``restate_penalty``: subtracted, scaled by
    how few content words the sentence adds to the question (0 new words: all of it, 4 or more: none).
    ``answer_type``: added when a how-many / when / what-percentage question meets a sentence with a
    digit. ``splitter``: a name in ``span.SPLITTERS``. ``tail_citations``: keep the source's reference
    markers that end the chosen sentence in the quote (off: they are cut, ``drop_tail_citations``).
    """

    embed_weight: float = EMBED_WEIGHT
    rank_prior: float = RANK_PRIOR
    neighbour: float = 0.0
    restate_penalty: float = 0.0
    answer_type: float = 0.0
    splitter: str = "plain"
    tail_citations: bool = False


DEFAULT = ZeroShot()


def _idf(docs: list[set[str]]) -> dict[str, float]:
    n = len(docs)
    df: dict[str, int] = {}
    for d in docs:
        for t in d:
            df[t] = df.get(t, 0) + 1
    return {t: math.log(1.0 + n / (1.0 + c)) for t, c in df.items()}


def _overlap(q: list[str], sent: set[str], idf: dict[str, float], default: float) -> float:
    total = sum(idf.get(t, default) for t in q)
    if total <= 0:
        return 0.0
    return sum(idf.get(t, default) for t in q if t in sent) / total


def _trim(text: str, start: int, end: int, q: list[str], idf: dict[str, float], default: float) -> tuple[int, int]:
    """The shortest run of clauses in text[start:end] that keeps all the sentence's overlap weight."""
    clauses = [(start + m.start(), start + m.end()) for m in _CLAUSE.finditer(text[start:end])]
    if len(clauses) < 2:
        return start, end
    full = _overlap(q, set(content_tokens(text[start:end])), idf, default)
    best = (start, end)
    for i in range(len(clauses)):
        for j in range(i, len(clauses)):
            s, e = clauses[i][0], clauses[j][1]
            if e - s >= best[1] - best[0]:
                break
            if _overlap(q, set(content_tokens(text[s:e])), idf, default) >= full - 1e-9:
                best = (s, e)
                break
    s, e = best
    while s < e and (text[s].isspace() or text[s] in ",;:()"):
        s += 1
    while e > s and (text[e - 1].isspace() or text[e - 1] in ",;:("):
        e -= 1
    return (s, e) if e > s else (start, end)


def drop_tail_citations(text: str, start: int, end: int) -> int:
    """The end of ``text[start:end]`` without the reference markers that close it ("[29, 30].").

    >>> t = "It spreads in bats [29, 30]."
    >>> t[:drop_tail_citations(t, 0, len(t))]
    'It spreads in bats'
    """
    m = _TAIL_CITATIONS.search(text, start, end)
    if m is None or m.start() <= start or m.end() != end:
        return end
    return m.start()


class SentenceVectors:
    """An embedder's ``embed`` through a bounded LRU of text -> vector (thread-safe).

    Zero-shot ``extract`` embeds every sentence of the chunks it reads, and questions on one topic read
    the same chunks again: each sentence is embedded once per process, up to ``size`` of them.
    """

    def __init__(self, inner, size: int = 20_000):
        self.inner, self.size = inner, size
        self._vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        """Everything but ``embed`` (``dim``, ``name`` ...) is the inner embedder's."""
        if name.startswith("__") or name in ("inner", "size", "_vecs", "_lock"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def embed(self, texts: Sequence[str], **kw) -> np.ndarray:
        if not texts:
            return np.asarray(self.inner.embed([], **kw), dtype=np.float32)
        got: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                if t in self._vecs:
                    self._vecs.move_to_end(t)
                    got[t] = self._vecs[t]
        missing = [t for t in dict.fromkeys(texts) if t not in got]
        if missing:
            new = np.asarray(self.inner.embed(missing, **kw), dtype=np.float32)
            got.update(zip(missing, new))
            with self._lock:
                self._vecs.update(zip(missing, new))
                while len(self._vecs) > self.size:
                    self._vecs.popitem(last=False)
        return np.stack([got[t] for t in texts])


def _cosine(vecs: np.ndarray, qv: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1) * np.linalg.norm(qv) + 1e-9
    return np.clip(vecs @ qv / norms, 0.0, 1.0)


def score_sentences(question: str, contexts: Sequence[str], embedder=None,
                    query_vec: np.ndarray | None = None, *, priors: Sequence[float] | None = None,
                    config: ZeroShot = DEFAULT) -> list[Span]:
    """Every candidate sentence as a ``Span``, best first: ``score`` is its own score in [0, 1], ``raw``
    the ranking key (the score plus the retrieval prior, when ``priors`` are given).

    ``priors`` (one per context, e.g. retrieval relevance) are used by ``config.rank_prior`` only.
    """
    split = SPLITTERS[config.splitter]
    cands = [(ci, s, e) for ci, text in enumerate(contexts) for s, e in split(text or "")]
    if not cands:
        return []
    q = content_tokens(question)
    sets = [set(content_tokens(contexts[ci][s:e])) for ci, s, e in cands]
    idf = _idf(sets)
    default = math.log(1.0 + len(sets))  # a question word no sentence has: maximally rare
    lexical = np.array([_overlap(q, st, idf, default) for st in sets], dtype=np.float32)
    # the sentence before each one in the same chunk (itself for a chunk's first sentence)
    prev = [i - 1 if i > 0 and cands[i - 1][0] == cands[i][0] else i for i in range(len(cands))]
    if config.neighbour:
        window = np.array([_overlap(q, sets[i] | sets[j], idf, default) for i, j in enumerate(prev)],
                          dtype=np.float32)
        lexical = (1.0 - config.neighbour) * lexical + config.neighbour * window
    if embedder is not None:
        texts = [contexts[ci][s:e] for ci, s, e in cands]
        vecs = np.asarray(embedder.embed(texts), dtype=np.float32)
        qv = (np.asarray(query_vec, dtype=np.float32) if query_vec is not None
              else np.asarray(embedder.embed([question]), dtype=np.float32)[0])
        cos = _cosine(vecs, qv)
        if config.neighbour:
            cos = (1.0 - config.neighbour) * cos + config.neighbour * _cosine(vecs + vecs[prev], qv)
        scores = config.embed_weight * cos + (1.0 - config.embed_weight) * lexical
    else:
        scores = lexical
    if config.restate_penalty:
        qs = set(q)
        new = np.array([len(st - qs) for st in sets], dtype=np.float32)
        scores = scores - config.restate_penalty * np.clip(1.0 - new / 4.0, 0.0, 1.0)
    if config.answer_type and _NUMERIC_Q.search(question):
        digit = np.array([bool(_DIGIT.search(contexts[ci][s:e])) for ci, s, e in cands], dtype=np.float32)
        scores = scores + config.answer_type * digit
    scores = np.clip(scores, 0.0, 1.0)
    # the ranking key: the sentence's own score, lowered by how far its chunk's retrieval relevance is
    # below the best chunk's; the score (the answer's confidence) stays the sentence's own
    key = scores
    if config.rank_prior and priors is not None:
        if len(priors) != len(contexts):
            raise ValueError(f"priors: need one per context ({len(contexts)}), got {len(priors)}")
        pr = np.asarray(priors, dtype=np.float32)
        key = scores + config.rank_prior * (pr[[ci for ci, _, _ in cands]] - pr.max())
    spans = [Span(text=contexts[ci][s:e], context_index=ci, start=s, end=e, score=float(sc), raw=float(k))
             for (ci, s, e), sc, k in zip(cands, scores, key)]
    return sorted(spans, key=lambda sp: (-sp.raw, sp.context_index, sp.start))


def select_span(question: str, contexts: Sequence[str], embedder=None, *, query_vec: np.ndarray | None = None,
                trim: bool = False, priors: Sequence[float] | None = None,
                config: ZeroShot = DEFAULT) -> Span | None:
    """The best sentence (or, with ``trim``, clause run) for ``question``; None when there is no text."""
    ranked = score_sentences(question, contexts, embedder, query_vec, priors=priors, config=config)
    if not ranked:
        return None
    best = ranked[0]
    if trim:
        q = content_tokens(question)
        sets = [set(content_tokens(sp.text)) for sp in ranked]
        idf, default = _idf(sets), math.log(1.0 + len(sets))
        text = contexts[best.context_index]
        s, e = _trim(text, best.start, best.end, q, idf, default)
        best = Span(text=text[s:e], context_index=best.context_index, start=s, end=e, score=best.score,
                    raw=best.raw)
    if not config.tail_citations:
        text = contexts[best.context_index]
        e = drop_tail_citations(text, best.start, best.end)
        if e != best.end:
            best = Span(text=text[best.start:e], context_index=best.context_index, start=best.start, end=e,
                        score=best.score, raw=best.raw)
    return best
