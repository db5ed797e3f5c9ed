"""A run's examples: read the data files (or given rows), split off eval rows, render the system prompt
and tokenize; the files' counts land in the card's ``DataFile`` entries."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from core.errors import InputError
from hybrid.tuning.card import DataFile
from hybrid.tuning.config import TuneConfig
from hybrid.tuning.data import DataReport, Example, Row, encode_rows, file_sha256, read_rows, split_rows

log = logging.getLogger("hybrid.tuning.trainer")  # the name run logs have always carried (docs/tuning.md)


# ------------------------------------------------------------------------------------------------
# data


def _system_prompt(cfg: TuneConfig) -> tuple[str, str, str]:
    """(text rendered into examples, template recorded in the card, its hash)."""
    from hybrid.chat import DEFAULT_SYSTEM_PROMPT, SystemPrompt, system_prompt_hash

    sp = SystemPrompt(cfg.data.system_prompt if cfg.data.system_prompt is not None else DEFAULT_SYSTEM_PROMPT)
    values = {"app_name": cfg.data.app_name} if "app_name" in sp.variables else {}
    return sp.render(**values), sp.template, system_prompt_hash(sp)


def load_examples(cfg: TuneConfig, data: Sequence[str | os.PathLike[str]], tokenizer: Any, *,
                  eval_data: Sequence[str | os.PathLike[str]] = (), rows: Sequence[Row] | None = None,
                  progress: bool = False) -> tuple[list[Example], list[Example], DataReport, list[DataFile]]:
    """Read, validate, split and tokenize. Empty or all-invalid data is one clear ``InputError``."""
    system_text = _system_prompt(cfg)[0]
    report = DataReport()
    files: list[DataFile] = []
    train_rows: list[Row] = list(rows or [])
    for path in data:
        got, report = read_rows(path, cfg.data.format, report=report)
        train_rows.extend(got)
        files.append(DataFile(str(path), file_sha256(path), len(got), "train"))
    eval_rows: list[Row] = []
    for path in eval_data:
        got, report = read_rows(path, cfg.data.format, report=report)
        eval_rows.extend(got)
        files.append(DataFile(str(path), file_sha256(path), len(got), "eval"))
    if not train_rows:
        names = ", ".join(map(str, data)) or "<rows>"
        if report.n_skipped == 0:
            raise InputError(f"no training rows in {names}: the dataset is empty")
        raise InputError(f"all {report.n_skipped} rows of {names} are invalid; first problem: {report.problems[0]}")
    if not eval_data:
        train_rows, eval_rows, how = split_rows(train_rows, cfg.data.eval_fraction, seed=cfg.train.seed)
        log.info("%s: %d train / %d eval rows", how, len(train_rows), len(eval_rows))
    train_ex, report = encode_rows(train_rows, tokenizer, cfg.data, system_prompt=system_text,
                                   report=report, progress=progress)
    eval_ex, report = encode_rows(eval_rows, tokenizer, cfg.data, system_prompt=system_text,
                                  report=report, progress=progress)
    for f in files:
        # the card's counts come from the same report as the printed summary, tokenization skips included
        f.rows = int(report.kept[f.path])
        f.skipped = int(report.skipped_by_file[f.path])
        f.skipped_reasons = dict(sorted(report.reasons_by_file.get(f.path, {}).items()))
    if not train_ex:
        raise InputError(f"no usable training examples after tokenization ({report.summary()}); "
                         f"first problem: {report.problems[0] if report.problems else 'none'}")
    return train_ex, eval_ex, report, files
