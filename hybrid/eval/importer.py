"""Import a SQuAD-format file into an app: corpus, seeded train/dev/test split by title, few-shot and
tuning rows. The engine behind ``hybrid app import APP_DIR --data FILE``.

    report = import_qa("policyqa-dev.json", "apps/policy", split=(0.6, 0.2, 0.2), seed=0)
    print(report.summary())

Input: SQuAD v1/v2 JSON (``data[].title``, ``paragraphs[].context``, ``qas[].answers``), or JSONL rows
``{"question", "context", "answer"}`` with optional ``title``, ``id``, ``answer_start`` (``answer`` may be
a string, a list, or SQuAD's ``{"text": [...], "answer_start": [...]}``).

Output in the app directory:

- ``corpus/<slug of title>.txt``: one file per article, its paragraphs separated by a blank line;
- ``questions/{train,dev,test}.jsonl``: ``{id, question, answer: [...], title, relevant_docs: [file],
  context, answer_start, unanswerable?}``; titles never straddle splits, so test articles are unseen;
- ``examples.jsonl`` (few-shot bank) and ``tune.jsonl`` (``{question, answer}``), from TRAIN only.

A bad row is a counted skip with its line number (JSONL) or question id (JSON), never an aborted import.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.io import atomic_write_text, read_jsonl, write_jsonl

SPLITS = ("train", "dev", "test")
MIN_TITLES = 3  # one title per split at least; with fewer, the split is by question


@dataclass
class QARow:
    """One question with its context, as read from the input."""

    id: str
    question: str
    answers: list[str]
    context: str
    title: str
    answer_start: int | None = None
    unanswerable: bool = False
    where: str = ""  # "line 12" or "id abc" for messages


@dataclass
class ImportReport:
    """What an import did, for the summary the CLI prints."""

    source: str
    articles: int = 0
    paragraphs: int = 0
    questions: dict[str, int] = field(default_factory=dict)  # split -> questions
    titles: dict[str, list[str]] = field(default_factory=dict)  # split -> titles
    split_by: str = "title"
    split_note: str = ""
    unanswerable: int = 0
    fixed_spans: list[str] = field(default_factory=list)  # where answer_start was wrong and was fixed
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> where
    renamed_ids: int = 0
    examples: int = 0
    tune: int = 0
    files: list[str] = field(default_factory=list)

    def summary(self, *, show: int = 3) -> list[str]:
        total = sum(self.questions.values())
        lines = [f"{self.source}: {self.articles} articles, {self.paragraphs} paragraphs, {total} questions "
                 f"({self.unanswerable} unanswerable)"]
        if self.split_note:
            lines.append(self.split_note)
        for s in SPLITS:
            titles = self.titles.get(s, [])
            shown = ", ".join(titles[:8]) + (f", ... ({len(titles)} titles)" if len(titles) > 8 else "")
            lines.append(f"  {s:<5} {self.questions.get(s, 0):>6} questions"
                         + (f"  titles: {shown}" if self.split_by == "title" else ""))
        if self.fixed_spans:
            lines.append(f"fixed {len(self.fixed_spans)} answer_start values that did not match their context "
                         f"(answer text found elsewhere in it): {', '.join(self.fixed_spans[:show])}"
                         + (" ..." if len(self.fixed_spans) > show else ""))
        for reason, where in sorted(self.skipped.items()):
            lines.append(f"skipped {len(where)} ({reason}): {', '.join(where[:show])}"
                         + (" ..." if len(where) > show else ""))
        if self.renamed_ids:
            lines.append(f"renamed {self.renamed_ids} duplicate question ids (suffix -2, -3, ...)")
        lines.append(f"examples.jsonl: {self.examples} rows, tune.jsonl: {self.tune} rows (train split only)")
        return lines


def slug(text: str, fallback: str = "article") -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text.strip().lower()).strip("-")
    return s[:80] or fallback


def _answers(raw: Any) -> tuple[list[str], list[int | None]]:
    """Answer texts and starts from a string, a list of strings/dicts, or {"text": [...], "answer_start": [...]}."""
    if raw is None:
        return [], []
    if isinstance(raw, str):
        return [raw], [None]
    if isinstance(raw, dict):
        texts = raw.get("text")
        starts = raw.get("answer_start")
        if isinstance(texts, list):
            starts = starts if isinstance(starts, list) else [None] * len(texts)
            return [str(t) for t in texts], [s if isinstance(s, int) else None for s in starts]
        return [str(texts)] if texts is not None else [], [starts if isinstance(starts, int) else None]
    if isinstance(raw, list):
        texts, starts = [], []
        for a in raw:
            if isinstance(a, dict):
                t, s = _answers(a)
                texts += t
                starts += s
            elif a is not None:
                texts.append(str(a))
                starts.append(None)
        return texts, starts
    return [str(raw)], [None]


def read_squad_json(path: Path, data: dict[str, Any], report: ImportReport) -> list[tuple[QARow, list[int | None]]]:
    out = []
    articles = data.get("data")
    if not isinstance(articles, list):
        raise InputError(f"{path}: not SQuAD-style JSON (expected a top-level 'data' list)")
    for ai, article in enumerate(articles):
        for pi, para in enumerate(article.get("paragraphs") or []):
            title = str(article.get("title") or para.get("document_id") or f"article-{ai}")
            context = str(para.get("context") or "")
            for qi, qa in enumerate(para.get("qas") or []):
                qid = str(qa.get("id") or f"{slug(title)}-{pi}-{qi}")
                texts, starts = _answers(qa.get("answers"))
                row = QARow(id=qid, question=str(qa.get("question") or ""), answers=texts, context=context,
                            title=title, unanswerable=bool(qa.get("is_impossible")), where=f"id {qid}")
                out.append((row, starts))
    return out


def read_qa_jsonl(path: Path, report: ImportReport) -> list[tuple[QARow, list[int | None]]]:
    out = []

    def bad_line(n: int, e: ValueError) -> None:
        report.skipped["not UTF-8" if isinstance(e, UnicodeDecodeError) else "invalid JSON"].append(f"line {n}")

    for n, row in read_jsonl(path, on_error=bad_line):
        if not isinstance(row, dict):
            report.skipped["not a JSON object"].append(f"line {n}")
            continue
        missing = [k for k in ("question", "context") if not str(row.get(k) or "").strip()]
        has_answer = any(k in row for k in ("answer", "answers"))
        if not has_answer and not (row.get("unanswerable") or row.get("is_impossible")):
            missing.append("answer")
        if missing:
            report.skipped[f"missing {'/'.join(missing)}"].append(f"line {n}")
            continue
        texts, starts = _answers(row.get("answer", row.get("answers")))
        if isinstance(row.get("answer_start"), int) and starts:
            starts = [row["answer_start"]] + starts[1:]
        title = str(row.get("title") or row.get("document_id") or "untitled")
        out.append((QARow(id=str(row.get("id") or f"line{n}"), question=str(row["question"]), answers=texts,
                          context=str(row["context"]), title=title,
                          unanswerable=bool(row.get("unanswerable") or row.get("is_impossible")),
                          where=f"line {n}"), starts))
    return out


def check_spans(pairs: list[tuple[QARow, list[int | None]]], report: ImportReport) -> list[QARow]:
    """Keep answers that occur in their context (fixing a wrong ``answer_start``); rows without any answer
    are unanswerable (SQuAD v2); rows whose answers are nowhere in the context are skipped."""
    kept = []
    for row, starts in pairs:
        if not row.question.strip():
            report.skipped["empty question"].append(row.where)
            continue
        if not row.context.strip():
            report.skipped["empty context"].append(row.where)
            continue
        answers = [(a.strip(), s) for a, s in zip(row.answers, starts) if a.strip()]
        if row.unanswerable or not answers:
            row.unanswerable, row.answers, row.answer_start = True, [], None
            report.unanswerable += 1
            kept.append(row)
            continue
        good: list[str] = []
        first_start = None
        fixed = False
        for text, start in answers:
            if start is not None and row.context[start:start + len(text)] == text:
                pos = start
            else:
                pos = row.context.find(text)
                if pos < 0:
                    continue
                fixed = fixed or start is not None
            if text not in good:
                good.append(text)
            if first_start is None:
                first_start = pos
        if not good:
            report.skipped["answer not in its context"].append(row.where)
            continue
        if fixed:
            report.fixed_spans.append(row.where)
        row.answers, row.answer_start = good, first_start
        kept.append(row)
    return kept


def read_qa_file(path: str | Path, report: ImportReport | None = None) -> tuple[list[QARow], ImportReport]:
    """Read and check a SQuAD JSON or QA JSONL file; raises ``InputError`` when nothing usable is in it."""
    p = Path(path)
    report = report or ImportReport(source=p.name)
    if not p.is_file():
        raise InputError(f"data file not found: {p}")
    if not p.read_text(encoding="utf-8").strip():
        raise InputError(f"{p}: the file is empty (expected SQuAD JSON or JSONL rows {{question, context, answer}})")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"{p}: invalid JSON at line {e.lineno} ({e.msg})") from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: not SQuAD-style JSON (expected an object with a 'data' list)")
        pairs = read_squad_json(p, data, report)
    else:
        pairs = read_qa_jsonl(p, report)
    rows = check_spans(pairs, report)
    if not rows:
        why = "; ".join(f"{len(w)} {r}" for r, w in report.skipped.items()) or "no questions"
        raise InputError(f"{p}: no usable questions ({why})")
    return rows, report


def _parts(n: int, fractions: tuple[float, float, float], at_least_one: bool) -> list[int]:
    """Sizes of the three splits for ``n`` items; every split with a positive fraction gets one if it can."""
    sizes = [int(round(n * f)) for f in fractions]
    sizes[0] = n - sizes[1] - sizes[2]
    if at_least_one:
        for i in (1, 2, 0):
            if fractions[i] > 0 and sizes[i] == 0:
                donor = max(range(3), key=lambda j: sizes[j])
                if sizes[donor] > 1:
                    sizes[donor] -= 1
                    sizes[i] += 1
    return sizes


def split_rows(rows: list[QARow], fractions: tuple[float, float, float], seed: int,
               report: ImportReport) -> dict[str, list[QARow]]:
    """Seeded split by title (so a test article was never seen in training); by question with fewer
    than three titles, which the report says."""
    titles = list(dict.fromkeys(r.title for r in rows))
    rng = random.Random(seed)
    if len(titles) >= MIN_TITLES:
        order = sorted(titles)
        rng.shuffle(order)
        sizes = _parts(len(order), fractions, at_least_one=True)
        bounds = [0, sizes[0], sizes[0] + sizes[1], len(order)]
        which = {t: SPLITS[i] for i in range(3) for t in order[bounds[i]:bounds[i + 1]]}
        out = {s: [r for r in rows if which[r.title] == s] for s in SPLITS}
        report.titles = {s: [t for t in order[bounds[i]:bounds[i + 1]]] for i, s in enumerate(SPLITS)}
        report.split_by = "title"
        return out
    sizes = _parts(len(titles), fractions, at_least_one=False)
    empty = [s for s, n in zip(SPLITS, sizes) if n == 0 and fractions[SPLITS.index(s)] > 0]
    report.split_by = "question"
    report.split_note = (f"only {len(titles)} title(s) ({', '.join(titles)}): a split by title would leave "
                         f"{' and '.join(empty) or 'a split'} empty, so questions are split at random instead "
                         f"(test questions share articles with training)")
    order = list(rows)
    rng.shuffle(order)
    sizes = _parts(len(order), fractions, at_least_one=True)
    bounds = [0, sizes[0], sizes[0] + sizes[1], len(order)]
    report.titles = {s: sorted({r.title for r in order[bounds[i]:bounds[i + 1]]}) for i, s in enumerate(SPLITS)}
    return {s: order[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}


def corpus_names(titles: list[str]) -> dict[str, str]:
    """Title -> corpus file name (slug + .txt), unique even when two titles slug alike."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for t in titles:
        base = slug(t)
        name, n = f"{base}.txt", 2
        while name in used:
            name, n = f"{base}-{n}.txt", n + 1
        used.add(name)
        names[t] = name
    return names


def parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--split must be three fractions like 0.6,0.2,0.2, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] <= 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise InputError(f"--split must be three fractions >= 0 (train > 0) that sum to 1, got {text!r}")
    return parts  # type: ignore[return-value]


def import_qa(data: str | Path, app_dir: str | Path, *, split: tuple[float, float, float] = (0.6, 0.2, 0.2),
              seed: int = 0, max_examples: int = 200, scope: str = "none",
              read: tuple[list[QARow], ImportReport] | None = None) -> ImportReport:
    """Write corpus, question splits, examples and tuning rows from ``data`` into ``app_dir``
    (``read``: the result of ``read_qa_file(data)`` when the caller already checked the file).

    ``scope="document"`` gives every question a ``filter`` on its own article's corpus file, for data
    whose questions only make sense inside one document ("does this website share my e-mail?"):
    retrieval then searches that document only, as an app scoped to the page a user is reading would."""
    if scope not in SCOPES:
        raise InputError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    rows, report = read or read_qa_file(data)
    root = Path(app_dir)
    titles = list(dict.fromkeys(r.title for r in rows))
    names = corpus_names(titles)
    # ids must be unique across the splits (the eval refuses duplicates)
    seen: dict[str, int] = {}
    for r in rows:
        if r.id in seen:
            seen[r.id] += 1
            r.id = f"{r.id}-{seen[r.id]}"
            report.renamed_ids += 1
        else:
            seen[r.id] = 1
    # corpus: every paragraph of every article, including those whose questions were all skipped
    paragraphs: dict[str, list[str]] = {t: [] for t in titles}
    for r in rows:
        if r.context not in paragraphs[r.title]:
            paragraphs[r.title].append(r.context)
    corpus = root / "corpus"
    for t, paras in paragraphs.items():
        atomic_write_text(corpus / names[t], "\n\n".join(p.strip() for p in paras) + "\n")
    report.articles = len(titles)
    report.paragraphs = sum(len(p) for p in paragraphs.values())
    splits = split_rows(rows, split, seed, report)
    qdir = root / "questions"
    for s, rs in splits.items():
        write_jsonl(qdir / f"{s}.jsonl", [question_row(r, names[r.title], scope) for r in rs])
        report.questions[s] = len(rs)
        report.files.append(f"questions/{s}.jsonl")
    train = [r for r in splits["train"] if not r.unanswerable]
    pairs = [{"question": r.question, "answer": r.answers[0]} for r in train]
    sample = list(pairs)
    random.Random(seed).shuffle(sample)
    report.examples = write_jsonl(root / "examples.jsonl", sample[:max_examples])
    report.tune = write_jsonl(root / "tune.jsonl", pairs)
    report.files += ["corpus/", "examples.jsonl", "tune.jsonl"]
    return report


SCOPES = ("none", "document")


def question_row(r: QARow, doc: str, scope: str = "none") -> dict[str, Any]:
    row: dict[str, Any] = {"id": r.id, "question": r.question, "answer": r.answers, "title": r.title,
                           "relevant_docs": [doc], "context": r.context, "answer_start": r.answer_start}
    if scope == "document":
        row["filter"] = {"source": doc}
    if r.unanswerable:
        row["unanswerable"] = True
    return row
