"""Training data: read chat / Alpaca / plain-text JSONL, validate every row, tokenize with the chat template.

Validation happens before the first step, so a bad row can never stop an epoch half-way: each bad row is
reported with its file and line number, counted by reason, and skipped::

    rows, report = read_rows("train.jsonl")            # Row(kind, messages | text, source, line)
    examples, report = encode_rows(rows, tokenizer, data_cfg, report=report)
    print(report.summary())  # "train.jsonl: 98 rows kept, 2 skipped (missing_field: 1, empty_answer: 1)"

Chat and Alpaca rows are rendered with ``hybrid.chat.render_chat`` (the same rendering as inference, the
system prompt always applied); only assistant tokens carry a loss. Plain-text rows (continued
pretraining) are cut into ``max_length`` windows and every token carries a loss.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from core.errors import InputError
from core.io import read_jsonl

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss ignores (PyTorch cross_entropy's default ignore_index)
_ROLES = ("system", "user", "assistant")


@dataclass
class Row:
    """One validated input row. ``kind`` is ``chat`` (``messages`` set) or ``text`` (``text`` set)."""

    kind: str
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    source: str = ""  # source document id: the train/eval split never separates one document
    line: int = 0
    file: str = ""


@dataclass
class Example:
    """Token ids plus a per-token flag: does this token carry a loss (is it a completion token)?"""

    input_ids: list[int]
    loss_mask: list[bool]
    source: str = ""
    line: int = 0

    @property
    def labels(self) -> list[int]:
        """Hugging Face-style labels: the token id where it is trained on, ``-100`` elsewhere."""
        return [t if m else IGNORE_INDEX for t, m in zip(self.input_ids, self.loss_mask)]

    @property
    def n_targets(self) -> int:
        # Position 0 is never predicted (nothing precedes it), so it never counts as a target.
        return sum(self.loss_mask[1:])

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataReport:
    """Kept and skipped rows per file, with the first few problems spelled out by line number."""

    kept: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    skipped_by_file: Counter = field(default_factory=Counter)
    reasons_by_file: dict[str, Counter] = field(default_factory=dict)  # file -> reason -> count
    truncated: int = 0
    problems: list[str] = field(default_factory=list)
    max_problems: int = 20

    def skip(self, file: str, line: int, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        self.skipped_by_file[file] += 1
        self.reasons_by_file.setdefault(file, Counter())[reason] += 1
        msg = f"{file}:{line}: {reason}: {message}"
        log.warning("skipped %s", msg)
        if len(self.problems) < self.max_problems:
            self.problems.append(msg)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        kept = sum(self.kept.values())
        parts = [f"{kept} rows kept", f"{self.n_skipped} skipped"]
        if self.skipped:
            parts[-1] += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) + ")"
        if self.truncated:
            parts.append(f"{self.truncated} truncated")
        return ", ".join(parts)


class RowError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# parsing


# Every row shape ``parse_row`` accepts, for the message that rejects a row of none of them.
ACCEPTED_SHAPES = ('chat {"messages": [{"role", "content"}, ...]}; alpaca {"instruction", "output"} '
                   '(+ "input"); Q/A {"question", "answer"} (+ "context", "title"); text {"text"}')


def rag_user_turn(question: str, blocks: Sequence[tuple[str, str]]) -> str:
    """The user turn exactly as the ``rag`` strategy renders numbered (source, text) blocks."""
    try:
        from hybrid.strategies import rag as _rag

        quote = getattr(_rag, "_quote")
        rendered = [f"[{i}] source: {src}\n{quote(text)}" for i, (src, text) in enumerate(blocks, 1)]
        return _rag.data_user_turn(question, rendered)
    except (ImportError, AttributeError):
        rendered = [f"[{i}] source: {src}\n\"\"\"\n{text.strip()}\n\"\"\"" for i, (src, text) in enumerate(blocks, 1)]
        return "Sources:\n" + "\n".join(rendered) + f"\n\nQuestion: {question}"


def _nonempty_str(obj: dict, key: str, line_kind: str) -> str:
    if key not in obj:
        raise RowError("missing_field", f"{line_kind} row has no '{key}' field")
    v = obj[key]
    if not isinstance(v, str):
        raise RowError("bad_type", f"'{key}' must be a string, got {type(v).__name__}")
    return v


def _prompt_answer(obj: dict, prompt: str, answer: str, optional: str, line_kind: str) -> tuple[str, str, str]:
    """A prompt/answer row's two required strings (neither blank) and its optional one ("" when
    absent), as written; each problem is a ``RowError``."""
    p, a = _nonempty_str(obj, prompt, line_kind), _nonempty_str(obj, answer, line_kind)
    extra = obj.get(optional, "") or ""
    if not isinstance(extra, str):
        raise RowError("bad_type", f"'{optional}' must be a string, got {type(extra).__name__}")
    if not p.strip():
        raise RowError("empty_prompt", f"'{prompt}' is empty")
    if not a.strip():
        raise RowError("empty_answer", f"'{answer}' is empty")
    return p, a, extra


def _source_of(obj: dict, fallback: str) -> str:
    for key in ("source", "doc_id", "document_id"):
        if isinstance(obj.get(key), str) and obj[key]:
            return obj[key]
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in ("source", "doc_id"):
            if isinstance(meta.get(key), str) and meta[key]:
                return meta[key]
    return fallback


def parse_row(obj: Any, fmt: str = "auto", *, line: int = 0, file: str = "") -> Row:
    """Validate one decoded JSON value; raises ``RowError(reason, message)`` when it is unusable."""
    if not isinstance(obj, dict):
        raise RowError("not_object", f"row must be a JSON object, got {type(obj).__name__}")
    if fmt == "auto":
        fmt = "chat" if "messages" in obj else "alpaca" if ("instruction" in obj or "output" in obj) \
            else "qa" if "question" in obj else "text" if "text" in obj else ""
        if not fmt:
            raise RowError("missing_field", f"row matches no accepted shape (keys: {sorted(obj)[:6]}); "
                                            f"accepted: {ACCEPTED_SHAPES}")
    fallback = f"{file}:{line}"
    if fmt == "chat":
        msgs = obj.get("messages")
        if msgs is None:
            raise RowError("missing_field", "chat row has no 'messages' field")
        if not isinstance(msgs, list) or not msgs:
            raise RowError("bad_type", "'messages' must be a non-empty list")
        clean = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise RowError("missing_field", f"messages[{i}] needs 'role' and 'content'")
            if m["role"] not in _ROLES:
                raise RowError("bad_role", f"messages[{i}].role must be one of {list(_ROLES)}, got {m['role']!r}")
            if not isinstance(m["content"], str):
                raise RowError("bad_type", f"messages[{i}].content must be a string")
            clean.append({"role": m["role"], "content": m["content"]})
        answers = [m for m in clean if m["role"] == "assistant"]
        if not answers:
            raise RowError("missing_field", "chat row has no assistant message to learn from")
        if any(not m["content"].strip() for m in answers):
            raise RowError("empty_answer", "an assistant message is empty")
        if not any(m["role"] == "user" and m["content"].strip() for m in clean):
            raise RowError("missing_field", "chat row has no non-empty user message")
        return Row("chat", messages=clean, source=_source_of(obj, fallback), line=line, file=file)
    if fmt == "alpaca":
        instruction, output, extra = _prompt_answer(obj, "instruction", "output", "input", "alpaca")
        user = instruction.strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        return Row("chat", messages=msgs, source=_source_of(obj, fallback), line=line, file=file)
    if fmt == "qa":
        question, answer, context = _prompt_answer(obj, "question", "answer", "context", "Q/A")
        user = question.strip()
        if context.strip():
            # the context is shown exactly as the rag strategy shows a retrieved source at inference
            label = next((str(obj[k]) for k in ("title", "source") if isinstance(obj.get(k), str) and obj[k]),
                         "context")
            user = rag_user_turn(question.strip(), [(label, context)])
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return Row("chat", messages=msgs, source=_source_of(obj, fallback), line=line, file=file)
    if fmt == "text":
        text = _nonempty_str(obj, "text", "text")
        if not text.strip():
            raise RowError("empty_answer", "'text' is empty")
        return Row("text", text=text, source=_source_of(obj, obj.get("id") if isinstance(obj.get("id"), str)
                                                            else fallback), line=line, file=file)
    raise InputError(f"data.format must be auto, chat, alpaca, qa or text, got {fmt!r}")


def read_rows(path: str | os.PathLike[str], fmt: str = "auto", *,
              report: DataReport | None = None) -> tuple[list[Row], DataReport]:
    """Every usable row of a JSONL file; bad JSON and bad rows are skipped and counted in ``report``."""
    report = report if report is not None else DataReport()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"data file not found: {p}")
    rows: list[Row] = []
    name = str(path)
    for n, obj in read_jsonl(p, errors="replace",
                             on_error=lambda n, e: report.skip(name, n, "bad_json", e.msg)):
        try:
            rows.append(parse_row(obj, fmt, line=n, file=name))
        except RowError as e:
            report.skip(name, n, e.reason, str(e))
    report.kept[name] += len(rows)
    return rows, report


def rows_from_records(records: Iterable[dict], fmt: str = "auto", *, name: str = "<memory>",
                      report: DataReport | None = None) -> tuple[list[Row], DataReport]:
    """Same as ``read_rows`` for rows already in memory (builders, tests)."""
    report = report if report is not None else DataReport()
    rows = []
    for n, obj in enumerate(records, 1):
        try:
            rows.append(parse_row(obj, fmt, line=n, file=name))
        except RowError as e:
            report.skip(name, n, e.reason, str(e))
    report.kept[name] += len(rows)
    return rows, report


# ------------------------------------------------------------------------------------------------
# tokenization


def _render(tokenizer: Any, messages: list[dict], system_prompt: str | None, add_generation_prompt: bool) -> str:
    # render_chat neutralizes control strings in every turn but the system prompt, exactly as at
    # inference, so a row cannot train on a forged turn and the spans below stay aligned
    from hybrid.chat import render_chat

    return render_chat(tokenizer, messages, system_prompt=system_prompt, add_generation_prompt=add_generation_prompt)


def encode_chat(row: Row, tokenizer: Any, system_prompt: str | None, *, train_on_prompt: bool = False) -> Example:
    """Render a chat row and mark which tokens belong to assistant turns.

    Each assistant span is found by rendering the conversation up to that turn twice, with and without
    the turn: the characters in between are the completion. Tokens are then mapped to characters by
    offsets, so a token straddling the boundary is never split in two.
    """
    msgs = row.messages or []
    full = _render(tokenizer, msgs, system_prompt, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, msgs[:i], system_prompt, True)
        upto = _render(tokenizer, msgs[: i + 1], system_prompt, False)
        if not full.startswith(upto) or not upto.startswith(before):
            raise RowError("template", "the chat template does not render turns as a prefix of the "
                                       "whole conversation, so the answer cannot be located")
        spans.append((len(before), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mask = []
    for start, end in enc["offset_mapping"]:
        mid = start if end <= start else end - 1  # the token's last character decides
        mask.append(train_on_prompt or any(a <= mid < b for a, b in spans))
    return Example(ids, mask, source=row.source, line=row.line)


def encode_text(row: Row, tokenizer: Any, max_length: int) -> list[Example]:
    """Continued pretraining: the document's tokens (+ EOS) in ``max_length`` windows, all trained on.

    Control strings in the document are neutralized as for a prompt (``hybrid.chat.neutralize``):
    a document that spells ``<|im_end|>`` must not teach the model to end its turn there.
    """
    from hybrid.chat import neutralize

    text, _ = neutralize(row.text, tokenizer, roles=False)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    out = []
    for start in range(0, len(ids), max_length):
        window = ids[start:start + max_length]
        if len(window) >= 2:
            out.append(Example(window, [True] * len(window), source=row.source, line=row.line))
    return out


def encode_rows(rows: Sequence[Row], tokenizer: Any, cfg: Any, *, system_prompt: str | None = None,
                report: DataReport | None = None, progress: bool = False) -> tuple[list[Example], DataReport]:
    """Tokenize rows. Over-long chat rows are truncated at the end or skipped (``cfg.overlong``).

    ``cfg`` is a ``DataSection``. Returns the examples and the updated report.
    """
    from tqdm.auto import tqdm

    report = report if report is not None else DataReport()
    out: list[Example] = []
    for row in tqdm(rows, desc="tokenize", unit="row", disable=not progress, leave=False):
        try:
            if row.kind == "text":
                out.extend(encode_text(row, tokenizer, cfg.max_length))
                continue
            ex = encode_chat(row, tokenizer, system_prompt, train_on_prompt=cfg.train_on_prompt)
        except RowError as e:
            report.skip(row.file, row.line, e.reason, str(e))
            report.kept[row.file] -= 1
            continue
        if len(ex) > cfg.max_length:
            first_target = next((i for i, m in enumerate(ex.loss_mask) if m), len(ex))
            if cfg.overlong == "skip" or first_target >= cfg.max_length - 1:
                why = "prompt alone" if first_target >= cfg.max_length - 1 else "row"
                report.skip(row.file, row.line, "too_long",
                            f"{why} is {len(ex) if why == 'row' else first_target} tokens, "
                            f"over data.max_length={cfg.max_length}")
                report.kept[row.file] -= 1
                continue
            ex = Example(ex.input_ids[: cfg.max_length], ex.loss_mask[: cfg.max_length], ex.source, ex.line)
            report.truncated += 1
        if ex.n_targets == 0:
            report.skip(row.file, row.line, "empty_answer", "no answer tokens after tokenization")
            report.kept[row.file] -= 1
            continue
        out.append(ex)
    return out, report


# ------------------------------------------------------------------------------------------------
# splitting


def split_by_source(items: Sequence[Any], eval_fraction: float, *, seed: int = 0,
                    key: Any = lambda x: x.source) -> tuple[list[Any], list[Any]]:
    """Deterministic train/eval split by source document: every item of a document lands on one side.

    A document goes to eval when a seeded hash of its id falls under ``eval_fraction``, so the split
    does not depend on row order and adding documents never moves existing ones. With two or more
    documents and ``eval_fraction > 0``, each side gets at least one document.
    """
    if eval_fraction <= 0:
        return list(items), []
    sources = sorted({key(x) for x in items})

    def score(s: str) -> float:
        return int(hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()[:12], 16) / float(16 ** 12)

    eval_set = {s for s in sources if score(s) < eval_fraction}
    if len(sources) >= 2:
        ranked = sorted(sources, key=score)
        if not eval_set:
            eval_set = {ranked[0]}
        if len(eval_set) == len(sources):
            eval_set.discard(ranked[-1])
    train = [x for x in items if key(x) not in eval_set]
    evals = [x for x in items if key(x) in eval_set]
    return train, evals


def split_rows(items: Sequence[Any], eval_fraction: float, *, seed: int = 0, key: Any = lambda x: x.source,
               min_documents: int = 5) -> tuple[list[Any], list[Any], str]:
    """(train, eval, how): by source document (``split_by_source``) when there are ``min_documents``
    or more; with fewer, holding out whole documents would starve training of one of two or three
    documents, so rows are split instead, stratified: each document gives about ``eval_fraction`` of its
    rows to eval and always keeps at least one for training. ``how`` says which split was used."""
    sources = sorted({key(x) for x in items})
    if eval_fraction <= 0:
        return list(items), [], "no eval split"
    if len(sources) >= min_documents:
        tr, ev = split_by_source(items, eval_fraction, seed=seed, key=key)
        return tr, ev, f"eval split by document ({len(sources)} documents)"
    by_doc: dict[str, list[int]] = {}
    for i, x in enumerate(items):
        by_doc.setdefault(key(x), []).append(i)
    held: set[int] = set()
    for src, idx in by_doc.items():
        n = min(len(idx) - 1, int(round(len(idx) * eval_fraction)))
        ranked = sorted(idx, key=lambda i: hashlib.sha256(f"{seed}:{src}:{i}".encode()).hexdigest())
        held.update(ranked[:max(0, n)])
    train = [x for i, x in enumerate(items) if i not in held]
    evals = [x for i, x in enumerate(items) if i in held]
    return train, evals, (f"eval split by row, stratified over {len(sources)} document(s) "
                          f"(fewer than {min_documents}: every document keeps training rows)")
