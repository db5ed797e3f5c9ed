"""Extractive readers: pick the answer span out of retrieved chunks, without generating.

::

    from hybrid.reader import select_span, load_reader
    span = select_span("When is rent due?", ["Rent is due on the 1st. Late fees apply."], embedder)
    span.text, span.start, span.end, span.score      # 'Rent is due on the 1st.', 0, 23, 0.8

    reader = load_reader("~/.cache/hybrid/apps/legal/reader")  # a tuned reader, shared per process
    best = reader.best("When is rent due?", ["Rent is due on the 1st. Late fees apply."])

- ``zero_shot``: sentence scoring (embedder cosine + IDF-weighted word overlap), no training;
- ``model``: ``Reader``, a question-answering head on the MiniLM encoder, windowed over long contexts;
- ``train``: ``train_reader`` tunes it on SQuAD v1/v2 JSON or JSONL question/context/answer rows,
  through ``data`` (read, check and split the rows), ``features`` (token windows and batches) and
  ``calibrate`` (EM/F1, score calibration, the abstain threshold).

Heavy modules (torch, transformers) load only in ``model``/``train``, never on import of this package.
"""

from __future__ import annotations

from hybrid.reader.span import Span
from hybrid.reader.zero_shot import select_span, split_sentences

__all__ = ["Span", "select_span", "split_sentences", "load_reader"]


def load_reader(path):
    """The ``Reader`` at ``path``, loaded once per process (thread-safe cache keyed by path)."""
    from hybrid.reader.model import load_reader as _load

    return _load(path)
