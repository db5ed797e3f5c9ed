"""The reader's calibration step on its own, with a reader whose margins are set by hand: when the
threshold is learned from unanswerable questions, when the default is kept (and the card says why),
and a fitted slope that would invert the scores is refused. The real training path is in
test_abstain.py (slow)."""

from __future__ import annotations

from hybrid.reader.calibrate import calibrate
from hybrid.reader.data import QARow
from hybrid.reader.model import DEFAULT_THRESHOLD, sigmoid
from hybrid.reader.span import Span

CTX = "Ana lives in Oslo. Ana works as a pilot."


class MarginReader:
    """Answers each question with a fixed span and margin (``raw``; no-answer score 0)."""

    def __init__(self, answers: dict[str, tuple[str, float]]):
        self.answers = answers

    def predict_pairs(self, questions, contexts, max_answer_tokens=30):
        out = []
        for i, q in enumerate(questions):
            text, margin = self.answers[q]
            start = contexts[i].find(text)
            out.append(Span(text, i, start, start + len(text), sigmoid(margin), raw=margin, null=0.0))
        return out


def _row(q: str, answer: str | None) -> QARow:
    start = CTX.index(answer) if answer else None
    return QARow(q, q, CTX, answer or "", start, "ana", f"t#{q}")


def _mixed(reverse: bool = False):
    """Six answerable rows answered right with a high margin, four unanswerable ones with a low margin
    (or the other way round with ``reverse``), plus one wrong answer so both classes occur."""
    hi, lo = (-3.0, 3.0) if reverse else (3.0, -3.0)
    rows, answers = [], {}
    for i in range(6):
        q = f"where{i}"
        rows.append(_row(q, "Oslo"))
        answers[q] = ("Oslo", hi + 0.1 * i)
    for i in range(4):
        q = f"age{i}"
        rows.append(_row(q, None))
        answers[q] = ("pilot", lo - 0.1 * i)
    rows.append(_row("job", "pilot"))
    answers["job"] = ("Oslo", lo)  # answerable but wrong: a low margin, F1 0
    return rows, MarginReader(answers)


def test_threshold_is_chosen_on_the_eval_split_when_it_has_unanswerables():
    rows, reader = _mixed()
    cal = calibrate(reader, rows, unanswerable_rows=4)
    assert cal.calibration["fitted"] and cal.calibration["a"] > 0
    assert cal.threshold_from == "eval split: 4 unanswerable and 7 answerable questions"
    # the threshold abstains on every unanswerable row and answers every right one
    probs = {r.id: sigmoid(cal.calibration["a"] * reader.answers[r.id][1] + cal.calibration["b"]) for r in rows}
    assert all(probs[f"age{i}"] < cal.threshold for i in range(4))
    assert all(probs[f"where{i}"] >= cal.threshold for i in range(6))
    # the sentence "Ana lives in Oslo." against gold "Oslo": F1 0.4 on each of the six right rows
    assert cal.after == {"em": round(6 / 7, 4), "f1": round(6 / 7, 4), "f1_sentence": round(0.4 * 6 / 7, 4)}


def test_no_eval_split_keeps_the_default_and_says_why():
    cal = calibrate(MarginReader({}), [], unanswerable_rows=3)
    assert cal.after is None
    assert cal.threshold == DEFAULT_THRESHOLD
    assert cal.threshold_from == "default (no eval split to choose it on)"
    assert cal.calibration == {"a": 1.0, "b": 0.0, "fitted": False}


def test_eval_split_without_unanswerables_keeps_the_default_threshold():
    rows, reader = _mixed()
    answerable = [r for r in rows if r.start is not None]
    cal = calibrate(reader, answerable, unanswerable_rows=2)
    assert cal.calibration["fitted"]
    assert cal.threshold == DEFAULT_THRESHOLD
    assert cal.threshold_from == "default (the eval split has no unanswerable questions)"
    cal = calibrate(reader, answerable, unanswerable_rows=0)
    assert cal.threshold_from == "default (no unanswerable questions in the data)"


def test_a_slope_that_would_invert_the_scores_is_not_used():
    rows, reader = _mixed(reverse=True)  # right answers get the low margins
    cal = calibrate(reader, rows, unanswerable_rows=4)
    assert cal.calibration["fitted"] is False
    assert cal.calibration["a"] == 1.0 and cal.calibration["b"] == 0.0
    assert cal.calibration["why"].startswith("fitted slope -")


def test_quote_is_the_span_when_gold_answers_are_short():
    rows, reader = _mixed()
    cal = calibrate(reader, rows, unanswerable_rows=4)
    # gold "Oslo", quoted sentence "Ana lives in Oslo." scores F1 0.5: the span (F1 1.0) is kept
    assert cal.quote == "span"
    assert cal.after["f1"] > cal.after["f1_sentence"]
    assert "span F1" in cal.quote_from and "sentence F1" in cal.quote_from


def test_quote_is_the_sentence_when_gold_answers_are_whole_clauses():
    gold = "Ana works as a pilot."
    rows = [QARow(f"q{i}", f"q{i}", CTX, gold, CTX.index(gold), "ana", f"t#{i}") for i in range(4)]
    # the reader finds only part of each answer: the sentence around it is closer to the gold clause
    reader = MarginReader({f"q{i}": ("a pilot", 2.0) for i in range(4)})
    cal = calibrate(reader, rows, unanswerable_rows=0)
    assert cal.quote == "sentence"
    assert cal.after["f1_sentence"] == 1.0 and cal.after["f1"] < 1.0


def test_no_eval_split_quotes_the_span():
    cal = calibrate(MarginReader({}), [], unanswerable_rows=0)
    assert cal.quote == "span" and "default" in cal.quote_from
