"""The one result type every reader returns."""

from __future__ import annotations

from dataclasses import dataclass


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
