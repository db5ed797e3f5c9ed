"""The one result type every reader returns, and the sentence bounds a span can be widened to."""

from __future__ import annotations

import re
from dataclasses import dataclass

# a sentence ends at . ! ? (followed by space/end) or at a line break; decimals like 3.5 stay whole
_SENTENCE = re.compile(r"[^\n]+?(?:[.!?]+(?=\s|$)|(?=\n)|$)", re.MULTILINE)
MIN_SENTENCE_CHARS = 3


@dataclass
class Span:
    """An answer span: ``contexts[context_index][start:end] == text``.

    ``score`` is in [0, 1] (a calibrated probability for a tuned reader, a heuristic for zero-shot);
    ``raw`` is the reader's uncalibrated score and ``null`` its no-answer score (None for zero-shot).

    >>> Span("the 1st", 0, 12, 19, 0.8).text
    'the 1st'
    """

    text: str
    context_index: int
    start: int
    end: int
    score: float
    raw: float = 0.0
    null: float | None = None

    @property
    def margin(self) -> float:
        """Best-span score minus the no-answer score: what the calibration maps to a probability."""
        return self.raw - (self.null if self.null is not None else 0.0)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each sentence in ``text``, whitespace trimmed."""
    out = []
    for m in _SENTENCE.finditer(text):
        s, e = m.start(), m.end()
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e - s >= MIN_SENTENCE_CHARS:
            out.append((s, e))
    return out


# a word before a full stop that does not end a sentence: abbreviations, initials, "et al.", "Fig."
_ABBREV = re.compile(r"(?:\b(?:al|e\.g|i\.e|etc|fig|figs|ref|refs|eq|eqs|vs|cf|approx|ca|no|nos|vol|pp|p|dr|mr|mrs|ms|"
                     r"prof|st|inc|ltd|co|corp|jr|sr|sec|art|para|resp|min|max|sp|spp|u\.s|u\.k|e\.u)|\b[A-Z])\.$",
                     re.IGNORECASE)
_CITATION = re.compile(r"^(?:\[[\d,\s\u2013-]+\]|\([\d,\s\u2013-]+\))[.!?]*$")  # "[12].", "(3, 4)."
_NUMBER = re.compile(r"^\(?\d+(?:\.\d+)*\.?\)?$")  # a section or list number: "2.1.", "(3)"


def split_sentences_careful(text: str) -> list[tuple[int, int]]:
    """``split_sentences`` without the splits scientific and legal text fools it into: after
    abbreviations and initials ("et al.", "Fig.", "e.g.", "J."), before a lower-case word, before a
    bare citation marker ("[12].", which joins the sentence it cites for) and after a bare section
    number ("2.1.", which joins the sentence it numbers). Line breaks always end a sentence.

    >>> t = "As Smith et al. showed in Fig. 2, it spreads. [3]. Masks help."
    >>> [t[s:e] for s, e in split_sentences_careful(t)]
    ['As Smith et al. showed in Fig. 2, it spreads. [3].', 'Masks help.']
    """
    out: list[tuple[int, int]] = []
    for s, e in split_sentences(text):
        if out and "\n" not in text[out[-1][1]:s]:
            ps, pe = out[-1]
            prev, cur = text[ps:pe], text[s:e]
            if (_ABBREV.search(prev.rsplit(None, 1)[-1]) or cur[0].islower() or _CITATION.match(cur)
                    or _NUMBER.match(prev)):
                out[-1] = (ps, e)
                continue
        out.append((s, e))
    return out


SPLITTERS = {"plain": split_sentences, "careful": split_sentences_careful}


def sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """The smallest run of whole sentences of ``text`` that holds ``text[start:end]``.

    >>> t = "Rent is due on the 1st. Late fees apply."
    >>> s, e = sentence_bounds(t, 15, 22); t[s:e]
    'Rent is due on the 1st.'
    """
    if end <= start:
        return start, end
    inside = [(s, e) for s, e in split_sentences(text) if s < end and e > start]
    if not inside:
        return start, end
    return min(start, inside[0][0]), max(end, inside[-1][1])


def widen_to_sentence(span: Span, contexts) -> Span:
    """``span`` widened to the whole sentence(s) it sits in, score unchanged."""
    text = contexts[span.context_index]
    s, e = sentence_bounds(text, span.start, span.end)
    return Span(text=text[s:e], context_index=span.context_index, start=s, end=e, score=span.score,
                raw=span.raw, null=span.null)
