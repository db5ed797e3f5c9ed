"""Zero-shot extraction: the sentence (or clause) of the retrieved chunks that best answers a question.

No model is trained and nothing is generated. Each candidate sentence is scored by

- embedder cosine to the question (when an embedder is given), and
- the share of the question's content words it contains, weighted by an IDF computed over the
  candidate sentences (a word in every sentence tells nothing about which one answers).

::

    from hybrid.reader.zero_shot import select_span
    span = select_span("When is rent due?", ["Rent is due on the 1st. Late fees apply."])
    span.text                      # 'Rent is due on the 1st.'
    span.context_index, span.start, span.end   # (0, 0, 23): contexts[0][0:23] == span.text

With ``trim=True`` the sentence is cut to its clause run that holds the overlap, for short answers.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from hybrid.eval.metrics import content_tokens
from hybrid.reader.span import Span, split_sentences

_CLAUSE = re.compile(r"[^,;:()]+[,;:()]?")
EMBED_WEIGHT = 0.5  # share of the score from embedder cosine; the rest is word overlap


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


def score_sentences(question: str, contexts: Sequence[str], embedder=None,
                    query_vec: np.ndarray | None = None) -> list[Span]:
    """Every candidate sentence as a ``Span`` with its score in [0, 1], best first."""
    cands = [(ci, s, e) for ci, text in enumerate(contexts) for s, e in split_sentences(text or "")]
    if not cands:
        return []
    q = content_tokens(question)
    sets = [set(content_tokens(contexts[ci][s:e])) for ci, s, e in cands]
    idf = _idf(sets)
    default = math.log(1.0 + len(sets))  # a question word no sentence has: maximally rare
    lexical = np.array([_overlap(q, st, idf, default) for st in sets], dtype=np.float32)
    if embedder is not None:
        texts = [contexts[ci][s:e] for ci, s, e in cands]
        vecs = np.asarray(embedder.embed(texts), dtype=np.float32)
        qv = (np.asarray(query_vec, dtype=np.float32) if query_vec is not None
              else np.asarray(embedder.embed([question]), dtype=np.float32)[0])
        cos = np.clip(vecs @ qv / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(qv) + 1e-9), 0.0, 1.0)
        scores = EMBED_WEIGHT * cos + (1.0 - EMBED_WEIGHT) * lexical
    else:
        scores = lexical
    spans = [Span(text=contexts[ci][s:e], context_index=ci, start=s, end=e, score=float(sc), raw=float(sc))
             for (ci, s, e), sc in zip(cands, scores)]
    return sorted(spans, key=lambda sp: (-sp.score, sp.context_index, sp.start))


def select_span(question: str, contexts: Sequence[str], embedder=None, *, query_vec: np.ndarray | None = None,
                trim: bool = False) -> Span | None:
    """The best sentence (or, with ``trim``, clause run) for ``question``; None when there is no text."""
    ranked = score_sentences(question, contexts, embedder, query_vec)
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
    return best
