"""``Reader``: an extractive question-answering head on a small encoder (MiniLM by default).

::

    from hybrid.reader.model import Reader, load_reader
    reader = Reader("runs/reader")          # a tuned reader dir; cheap until warm_up()/predict()
    spans = reader.predict("When is rent due?", ["Rent is due on the 1st. Late fees apply."])
    spans[0].text, spans[0].score           # ('the 1st', 0.93): calibrated probability the span is right
    reader.threshold                        # below this score the extract strategy abstains

A tuned reader directory holds ``model.safetensors``, ``config.json``, the tokenizer and
``reader_card.json`` (calibration ``a``/``b``, abstain ``threshold``, training record). Any encoder
directory without a QA head also loads: the head is then randomly initialised (seeded), calibration
is the identity (a=1, b=0) and the threshold is ``DEFAULT_THRESHOLD``.

Long contexts are read in windows of ``max_length`` tokens overlapping by ``stride``; the best span over
all windows wins and its character offsets point into the context it came from.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import InputError, ModelError
from hybrid.reader.span import Span

log = logging.getLogger(__name__)

CARD = "reader_card.json"
DEFAULT_THRESHOLD = 0.05  # probability; a reader trained without unanswerable rows rarely abstains
HEAD_SEED = 0  # the randomly initialised head of an untuned encoder is the same on every load
QUOTES = ("span", "sentence")  # what extract quotes: the reader's span, or the whole sentence around it


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def default_base() -> Path:
    from indexes.embed import bundled_minilm_path

    return bundled_minilm_path()


def load_qa_model(path: str | Path, error: type[Exception], *, what: str):
    """(``AutoModelForQuestionAnswering``, fast tokenizer) from ``path``; a bad directory raises
    ``error`` with one line. Shared by loading a reader and by training one."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialized" is expected for a new head
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(str(path))
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise error(f"cannot load {what} from {path}: {str(e).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if not getattr(tok, "is_fast", False):
        raise error(f"{what} at {path} needs a fast tokenizer (tokenizer.json) for char offsets")
    return model, tok


def read_card(path: Path) -> dict:
    f = Path(path) / CARD
    if not f.is_file():
        return {}
    try:
        card = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"unreadable reader card {f}: {e}") from None
    return card if isinstance(card, dict) else {}


class Reader:
    """Question + contexts -> one best ``Span`` per context. Loads lazily, thread-safe.

    >>> Reader().predict("Who pays?", ["The tenant pays the deposit."])[0].context_index  # doctest: +SKIP
    0
    """

    def __init__(self, path: str | Path | None = None, *, max_length: int = 384, stride: int = 128,
                 batch_size: int = 16):
        self.path = Path(path).expanduser() if path else None
        self.max_length = max_length
        self.stride = stride
        self.batch_size = batch_size
        self.card: dict = {}
        self._model = None
        self._tok = None
        self._lock = threading.RLock()

    @classmethod
    def from_model(cls, model, tokenizer, card: dict | None = None, **kw) -> "Reader":
        """Wrap an already loaded model (training evaluates the model it is training)."""
        r = cls(None, **kw)
        r._model, r._tok, r.card = model, tokenizer, dict(card or {})
        return r

    # -- loading ---------------------------------------------------------------------------------
    @property
    def tuned(self) -> bool:
        return bool(self.card.get("trained"))

    @property
    def calibration(self) -> tuple[float, float]:
        c = self.card.get("calibration") or {}
        return float(c.get("a", 1.0)), float(c.get("b", 0.0))

    @property
    def threshold(self) -> float:
        t = self.card.get("threshold")
        return float(t) if t is not None else DEFAULT_THRESHOLD

    @property
    def quote(self) -> str:
        """"span" or "sentence": what the card says scored higher on its eval split (default span)."""
        q = self.card.get("quote")
        return q if q in QUOTES else QUOTES[0]

    def warm_up(self) -> "Reader":
        with self._lock:
            if self._model is not None:
                return self
            import torch

            path = self.path or default_base()
            if not Path(path).is_dir():
                raise ModelError(f"reader not found: {path} is not a directory (train one with "
                                 f"`hybrid tune reader`)")
            self.card = read_card(path)
            # read the way it was trained: the card's window size, unless the caller chose one
            self.max_length = int(self.card.get("max_length", self.max_length))
            self.stride = int(self.card.get("stride", self.stride))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(HEAD_SEED)  # an untrained head is the same on every load
                model, tok = load_qa_model(path, ModelError, what="a reader")
            model.eval()
            self._model, self._tok = model, tok
            log.info("reader %s loaded (%s)", path, "tuned" if self.tuned else "untuned head")
            return self

    @property
    def model(self):
        return self.warm_up()._model

    @property
    def tokenizer(self):
        return self.warm_up()._tok

    # -- predicting ------------------------------------------------------------------------------
    def encode(self, questions: Sequence[str], contexts: Sequence[str], *, padding=True):
        """Tokenize (question, context) pairs into overlapping windows with offsets.
        ``overflow_to_sample_mapping`` maps each window back to its pair."""
        return self.tokenizer(list(questions), list(contexts), truncation="only_second",
                              max_length=self.max_length, stride=self.stride, return_overflowing_tokens=True,
                              return_offsets_mapping=True, padding=padding)

    def logits(self, enc) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits of every window, batched, without gradients."""
        import torch

        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        n = len(enc["input_ids"])
        starts, ends = [], []
        model = self.model
        with torch.no_grad():
            for i in range(0, n, self.batch_size):
                batch = {k: torch.tensor(enc[k][i:i + self.batch_size]) for k in keys}
                out = model(**batch)
                starts.append(out.start_logits.float().numpy())
                ends.append(out.end_logits.float().numpy())
        return np.concatenate(starts), np.concatenate(ends)

    def predict(self, question: str, contexts: Sequence[str], max_answer_tokens: int = 30) -> list[Span]:
        """One best span per non-empty context (``context_index`` says which), best first."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("question is empty: ask a question")
        if max_answer_tokens < 1:
            raise InputError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
        keep = [i for i, c in enumerate(contexts) if c and c.strip()]
        if not keep:
            return []
        spans = self.predict_pairs([question] * len(keep), [contexts[i] for i in keep], max_answer_tokens)
        for sp, i in zip(spans, keep):
            sp.context_index = i
        return sorted(spans, key=lambda s: (-s.score, -s.raw))

    def best(self, question: str, contexts: Sequence[str], max_answer_tokens: int = 30) -> Span | None:
        spans = self.predict(question, contexts, max_answer_tokens)
        return spans[0] if spans else None

    def predict_pairs(self, questions: Sequence[str], contexts: Sequence[str],
                      max_answer_tokens: int = 30) -> list[Span]:
        """The best span of each (question, context) pair, in input order (``context_index`` = pair)."""
        if not questions:
            return []
        enc = self.encode(questions, contexts)
        start, end = self.logits(enc)
        a, b = self.calibration
        best: dict[int, tuple[float, int, int]] = {}
        null: dict[int, float] = {}
        band = np.triu(np.ones((start.shape[1], start.shape[1]), dtype=bool)) & \
            ~np.triu(np.ones((start.shape[1], start.shape[1]), dtype=bool), k=max_answer_tokens)
        for f in range(start.shape[0]):
            pair = enc["overflow_to_sample_mapping"][f]
            seq = enc.sequence_ids(f)
            ctx_mask = np.array([s == 1 for s in seq] + [False] * (start.shape[1] - len(seq)))
            null_score = float(start[f, 0] + end[f, 0])
            # the no-answer score of a pair is its lowest over windows (the window that holds the answer)
            null[pair] = min(null.get(pair, null_score), null_score)
            if not ctx_mask.any():
                continue
            s = np.where(ctx_mask, start[f], -np.inf)
            e = np.where(ctx_mask, end[f], -np.inf)
            grid = np.where(band, s[:, None] + e[None, :], -np.inf)
            k = int(np.argmax(grid))
            si, ei = divmod(k, grid.shape[1])
            raw = float(grid[si, ei])
            if pair not in best or raw > best[pair][0]:
                offs = enc["offset_mapping"][f]
                best[pair] = (raw, int(offs[si][0]), int(offs[ei][1]))
        out = []
        for pair in range(len(questions)):
            raw, cs, ce = best.get(pair, (-math.inf, 0, 0))
            nl = null.get(pair, 0.0)
            prob = sigmoid(a * (raw - nl) + b) if math.isfinite(raw) else 0.0
            out.append(Span(text=contexts[pair][cs:ce], context_index=pair, start=cs, end=ce,
                            score=float(prob), raw=raw if math.isfinite(raw) else 0.0, null=nl))
        return out


_CACHE: dict[str, Reader] = {}
_CACHE_LOCK = threading.Lock()


def load_reader(path: str | Path | None = None) -> Reader:
    """The warmed-up ``Reader`` at ``path`` (default: the untuned bundled MiniLM), one per process."""
    key = str(Path(path).expanduser().resolve()) if path else "<default>"
    with _CACHE_LOCK:
        reader = _CACHE.get(key)
        if reader is None:
            reader = _CACHE[key] = Reader(path)
    return reader.warm_up()


def clear_cache() -> None:
    """Forget loaded readers (tests; a re-trained reader in a long-lived process)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def has_reader(path: str | Path) -> bool:
    """A tuned reader directory: weights plus its card."""
    p = Path(path)
    return (p / CARD).is_file() and (p / "model.safetensors").is_file()
