"""What RAFT rows share: the ``rag`` strategy's user turn, the token budget a row may use, the
``BuildReport`` of rows written and skipped, and fitting sources into the budget (trim or drop the
distractors first, then trim the oracle around the answer)."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import InputError


def _rag_turn(question: str, blocks: list[tuple[str, str]]) -> str:
    """The user turn exactly as the ``rag`` strategy renders retrieved sources."""
    from hybrid.tuning.data import rag_user_turn

    return rag_user_turn(question, blocks)


@dataclass
class Budget:
    """Tokens a RAFT row may use: ``data.max_length`` minus the rendered system prompt and chat markers
    (``overhead``) and the row's own answer; ``count`` measures text (exact with a tokenizer)."""

    max_length: int
    overhead: int
    count: Callable[[str], int]
    exact: bool = False  # counted with the generator's tokenizer (else words * 1.4)

    def room(self, answer: str) -> int:
        """Tokens left for the user turn of a row whose answer is ``answer``."""
        return self.max_length - self.overhead - self.count(answer)

    def row_tokens(self, row: dict) -> int:
        return self.overhead + sum(self.count(m["content"]) for m in row["messages"])


def make_budget(max_length: int, system_prompt: str | None = None, tokenizer: Any = None) -> Budget:
    """The budget a tuning run with ``data.max_length`` and this rendered system prompt leaves a row.

    With the generator's tokenizer the chat template's markers are measured by rendering an empty
    exchange; without one, words * 1.4 (English averages ~1.3 tokens a word with SmolLM2's tokenizer)
    plus a few tokens for the markers.
    """
    if tokenizer is not None:
        from hybrid.chat import render_chat

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        shell = render_chat(tokenizer, [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
                            system_prompt, add_generation_prompt=False)
        return Budget(max_length, count(shell) + 2, count, exact=True)  # +2: tokens merging at the seams

    def estimate(text: str) -> int:
        return math.ceil(len(text.split()) * 1.4)

    return Budget(max_length, estimate(system_prompt or "") + 16, estimate, exact=False)


@dataclass
class BuildReport:
    """What a builder wrote and skipped (reason -> count, first problems by line or id), and row lengths."""

    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens per written row, system prompt included
    trimmed: Counter = field(default_factory=Counter)  # "distractor" / "oracle" -> rows where it was trimmed
    budget: int = 0
    exact: bool = False

    def skip(self, where: str, reason: str, message: str = "") -> None:
        self.skipped[reason] += 1
        if len(self.problems) < 10:
            self.problems.append(f"{where}: {reason}" + (f": {message}" if message else ""))

    def summary(self) -> list[str]:
        lines = [f"rows written: {self.rows}"]
        if self.lengths:
            xs = sorted(self.lengths)
            how = "tokenizer" if self.exact else "words*1.4 estimate"
            lines.append(f"tokens per row ({how}, system prompt included): min {xs[0]}, median "
                         f"{xs[len(xs) // 2]}, max {xs[-1]} (budget data.max_length={self.budget})")
        if self.trimmed:
            lines.append("trimmed to fit: " + ", ".join(f"{k} in {v} rows" for k, v in sorted(self.trimmed.items())))
        n = sum(self.skipped.values())
        lines.append(f"skipped: {n}" + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
                                       + ")" if n else ""))
        lines += [f"  {p}" for p in self.problems[:5]]
        return lines


def trim_around(text: str, at_word: int, n_words: int, max_words: int) -> str:
    """At most ``max_words`` words of ``text`` centred on words ``[at_word, at_word + n_words)``."""
    words = text.split()
    if len(words) <= max_words:
        return text
    keep = max(max_words, n_words)
    start = max(0, min(at_word - (keep - n_words) // 2, len(words) - keep))
    end = min(len(words), start + keep)
    return ("... " if start > 0 else "") + " ".join(words[start:end]) + (" ..." if end < len(words) else "")


def _word_span(text: str, answer: str, char_start: int | None = None) -> tuple[int, int]:
    """(index of the answer's first word in ``text.split()``, its word count)."""
    pos = char_start if char_start is not None and text[char_start:char_start + len(answer)] == answer \
        else text.find(answer)
    if pos < 0:
        norm = " ".join(text.split())
        pos_n = norm.find(" ".join(answer.split()))
        return (len(norm[:pos_n].split()) if pos_n >= 0 else 0), max(1, len(answer.split()))
    return len(text[:pos].split()), max(1, len(text[pos:pos + len(answer)].split()))


def fit_blocks(question: str, blocks: list[tuple[str, str]], oracle_at: int | None, answer_span: tuple[int, int],
               room: int, count: Callable[[str], int], trimmed: Counter | None = None
               ) -> tuple[list[tuple[str, str]], int | None] | None:
    """(blocks, the oracle's new index) whose rendered user turn fits ``room`` tokens, or None.

    First trim the longest distractor to half (down to 40 words), then drop distractors from the end;
    only then trim the oracle around the answer (``answer_span`` = first word, word count), as little
    as fits. Dropping a distractor before the oracle moves it up: cite the returned index.
    """
    blocks = list(blocks)
    done: set[str] = set()

    def fits(bs: list[tuple[str, str]]) -> bool:
        return count(_rag_turn(question, bs)) <= room

    while not fits(blocks):
        others = [i for i in range(len(blocks)) if i != oracle_at]
        if not others:
            break
        longest = max(others, key=lambda i: len(blocks[i][1].split()))
        words = blocks[longest][1].split()
        done.add("distractor")
        if len(words) > 40:
            blocks[longest] = (blocks[longest][0], " ".join(words[:len(words) // 2]) + " ...")
            continue
        drop = others[-1]
        blocks.pop(drop)
        if oracle_at is not None and drop < oracle_at:
            oracle_at -= 1
    if not fits(blocks):
        if oracle_at is None:
            return None
        src, text = blocks[oracle_at]
        at, n = answer_span
        lo, hi = n, len(text.split())  # largest window that fits, by bisection
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            trial = blocks[:oracle_at] + [(src, trim_around(text, at, n, mid))] + blocks[oracle_at + 1:]
            if fits(trial):
                best, lo = trial, mid + 1
            else:
                hi = mid - 1
        if best is None:
            return None
        blocks = best
        done.add("oracle")
    if trimmed is not None:
        for k in done:
            trimmed[k] += 1
    return blocks, oracle_at


def _start_raft(n_distractors: int, oracle_fraction: float, report: "BuildReport | None",
                seed: int) -> tuple["BuildReport", random.Random]:
    """Both RAFT builders' argument checks, their report and their seeded RNG."""
    if n_distractors < 0:
        raise InputError(f"n_distractors must be >= 0, got {n_distractors}")
    if not 0 <= oracle_fraction <= 1:
        raise InputError(f"oracle_fraction must be in [0, 1], got {oracle_fraction}")
    return (report if report is not None else BuildReport()), random.Random(seed)


def _add_raft_row(rows: list[dict], question: str, blocks, reply: str, budget, report, **extra) -> None:
    """One RAFT chat row (sources block + question, then the cited reply), its length recorded."""
    row = {"messages": [{"role": "user", "content": _rag_turn(question, blocks)},
                        {"role": "assistant", "content": reply}], **extra}
    rows.append(row)
    if budget is not None:
        report.lengths.append(budget.row_tokens(row))


def _close_report(rows: list[dict], budget, report) -> list[dict]:
    report.rows += len(rows)
    if budget is not None:
        report.budget, report.exact = budget.max_length, budget.exact
    return rows
