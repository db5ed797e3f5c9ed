"""Answer metrics: exact match and token F1 (SQuAD normalization), ROUGE-L, BLEU, groundedness.

All functions take a prediction and one or several references and return a float in [0, 1];
with several references the best one counts. None of them can return NaN: empty cases are
scored by rule (two empties match; one empty side scores 0) and flagged by ``is_empty_case``.

    >>> round(token_f1("The cat sat", ["a cat sat down"]), 3)
    0.8
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_CITATION = re.compile(r"\[\d{1,3}\]")  # "[1]" markers cite a source; they are not part of the answer
_PUNCT = set(string.punctuation) | {"\u2014", "\u2013", "\u2019", "\u2018", "\u201c", "\u201d"}


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, drop citation markers like [1], punctuation and articles, fold
    white space."""
    text = _CITATION.sub(" ", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def _refs(references: str | Sequence[str]) -> list[str]:
    if isinstance(references, str):
        return [references]
    return list(references) or [""]


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in _refs(references)))


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    pred = tokens(prediction)
    return max(_f1(pred, tokens(r)) for r in _refs(references))


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F-measure over normalized tokens (beta = 1)."""
    pred = tokens(prediction)
    best = 0.0
    for r in _refs(references):
        ref = tokens(r)
        if not pred or not ref:
            best = max(best, float(pred == ref))
            continue
        lcs = _lcs(pred, ref)
        if lcs:
            p, rc = lcs / len(pred), lcs / len(ref)
            best = max(best, 2 * p * rc / (p + rc))
    return best


def _ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def bleu(prediction: str, references: str | Sequence[str], max_n: int = 4) -> float:
    """Sentence BLEU with add-one smoothing on orders above 1 (short answers would score 0 otherwise).

    That is Lin & Och's (2004) smoothing, method 2 of Chen & Cherry (2014): on the normalized tokens the
    score equals sacrebleu's ``sentence_bleu(..., smooth_method="add-k", smooth_value=1, tokenize="none")``.
    """
    pred = tokens(prediction)
    refs = [tokens(r) for r in _refs(references)]
    if not pred:
        return float(all(not r for r in refs))
    log_p = 0.0
    for n in range(1, max_n + 1):
        p_grams = _ngrams(pred, n)
        total = sum(p_grams.values())
        max_ref: Counter = Counter()
        for r in refs:
            for g, c in _ngrams(r, n).items():
                max_ref[g] = max(max_ref[g], c)
        clipped = sum(min(c, max_ref[g]) for g, c in p_grams.items())
        if n == 1:
            if clipped == 0:
                return 0.0
            log_p += math.log(clipped / total)
        else:
            log_p += math.log((clipped + 1) / (total + 1))
    ref_len = min((len(r) for r in refs), key=lambda L: (abs(L - len(pred)), L))
    bp = 1.0 if len(pred) > ref_len else math.exp(1 - ref_len / max(len(pred), 1))
    return bp * math.exp(log_p / max_n)


_STOP = frozenset(
    "a an the of to in on at for by with and or but is are was were be been being it its this that these "
    "those as from i you he she we they them his her our your their not no do does did so if then than "
    "there here what which who whom how when where why can could will would shall should may might must "
    "has have had also just only any all some".split()
)


def content_tokens(text: str) -> list[str]:
    return [t for t in tokens(text) if t not in _STOP]


def groundedness(answer: str, context: str | Sequence[str]) -> tuple[float, str | None]:
    """Share of the answer's content tokens that appear in the context. Deterministic and local.

    Returns ``(score, flag)``; ``flag`` names an empty case (``empty_answer``, ``empty_context``),
    which is scored 1.0 for an empty answer (nothing unsupported was said) and 0.0 for an empty
    context with a non-empty answer. Never NaN.
    """
    ctx_text = context if isinstance(context, str) else "\n".join(context)
    ans = content_tokens(answer)
    if not ans:
        return 1.0, "empty_answer"
    ctx = set(content_tokens(ctx_text))
    if not ctx:
        return 0.0, "empty_context"
    return sum(t in ctx for t in ans) / len(ans), None


REFUSAL_PATTERNS = re.compile(
    r"\b(i (do not|don't|cannot|can't) (know|find|answer|say)|not (found|stated|mentioned|covered) in|"
    r"no (information|answer)|(is|are) not (in|covered by) the (documents|sources|context)|unanswerable|"
    r"i'm not sure|i am not sure|unable to (find|answer))\b",
    re.IGNORECASE,
)


def is_refusal(answer: str) -> bool:
    """True when the answer declines (used for refusal accuracy on unanswerable questions)."""
    return not answer.strip() or bool(REFUSAL_PATTERNS.search(answer))


def answer_scores(prediction: str, references: str | Sequence[str]) -> dict[str, float]:
    """Every answer metric at once, plus the answer length in tokens."""
    return {
        "em": exact_match(prediction, references),
        "f1": token_f1(prediction, references),
        "rouge_l": rouge_l(prediction, references),
        "bleu": bleu(prediction, references),
        "length": float(len(prediction.split())),
    }


def mean(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else 0.0
