"""Multi-task mixes: several datasets, each a task, sampled per micro-batch by weight or by temperature.

``data.mix`` in the tuning config lists the tasks; the run's own ``--data`` files join as tasks of weight 1
(a mix entry naming the same file sets its weight instead)::

    data:
      mix:
        - {path: apps/legal/tune.jsonl, weight: 3, name: legal}
        - {path: ../shared/data/instructions/general.jsonl, weight: 1, name: general}
      mix_temperature: 0      # 0: by weight; T > 0: p ~ rows^(1/T), ignoring the weights

Every micro-batch comes from one task, drawn with a seeded draw per micro-batch (so a resumed run draws
the same sequence); each task walks through its own shuffled, packed epochs. The draws per task, in
examples and tokens, land in the adapter card (``extra.mix``) and the tracked run; eval loss is reported
per task (``eval_loss.<task>``) beside the overall token-weighted one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.errors import InputError
from hybrid.tuning.card import DataFile
from hybrid.tuning.config import MixEntry, TuneConfig
from hybrid.tuning.data import DataReport, Example, Row

log = logging.getLogger("hybrid.tuning.trainer")


@dataclass
class Task:
    name: str
    path: str
    weight: float
    train: list[Example]
    eval: list[Example]
    probability: float = 0.0


@dataclass
class RunData:
    """A run's tokenized examples; ``tasks`` is empty without a mix, ``eval_groups`` holds per-task eval sets."""

    train: list[Example]
    eval: list[Example]
    report: DataReport
    files: list[DataFile]
    tasks: list[Task] = field(default_factory=list)
    eval_groups: dict[str, list[Example]] = field(default_factory=dict)


def _merge(into: DataReport, other: DataReport) -> None:
    into.kept.update(other.kept)
    into.skipped.update(other.skipped)
    into.skipped_by_file.update(other.skipped_by_file)
    for f, c in other.reasons_by_file.items():
        into.reasons_by_file.setdefault(f, type(c)()).update(c)
    into.truncated += other.truncated
    into.problems.extend(other.problems[:max(0, into.max_problems - len(into.problems))])


def mix_entries(cfg: TuneConfig, data: Sequence[str | os.PathLike[str]]) -> list[MixEntry]:
    """The mix's tasks: ``data.mix`` plus the run's data files not already named there (weight 1)."""
    entries = list(cfg.data.mix)
    named = {os.path.abspath(m.path) for m in entries}
    for p in data:
        if os.path.abspath(p) not in named:
            entries.append(MixEntry(path=str(p)))
            named.add(os.path.abspath(p))
    names = [m.name for m in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"data.mix task names must differ; repeated: {', '.join(dup)} (give the entries a name:)")
    for m in entries:
        if not Path(m.path).is_file():
            raise InputError(f"data.mix: task {m.name!r}: file not found: {m.path}")
    return entries


def probabilities(sizes: Sequence[int], weights: Sequence[float], temperature: float) -> list[float]:
    """Sampling probability per task: by weight, or with ``temperature`` > 0 by size^(1/T)."""
    raw = [n ** (1.0 / temperature) if n > 0 else 0.0 for n in sizes] if temperature > 0 else list(weights)
    total = sum(raw)
    if not total > 0:
        raise InputError(f"data.mix weights must sum to a positive number, got {list(weights)}")
    return [r / total for r in raw]


def load_run_data(cfg: TuneConfig, data: Sequence[str | os.PathLike[str]], tokenizer: Any, *,
                  eval_data: Sequence[str | os.PathLike[str]] = (), rows: Sequence[Row] | None = None,
                  progress: bool = False) -> RunData:
    """Tokenized train/eval examples: one pool without ``data.mix``, one task per dataset with it."""
    from hybrid.tuning.examples import load_examples

    if not cfg.data.mix:
        tr, ev, report, files = load_examples(cfg, data, tokenizer, eval_data=eval_data, rows=rows,
                                              progress=progress)
        return RunData(tr, ev, report, files)
    if rows:
        raise InputError("data.mix takes files only; write the in-memory rows to a JSONL file and list it")
    entries = mix_entries(cfg, data)
    # with --eval-data the eval files are the eval sets (one group each); else each task holds out its own
    task_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mix=[], eval_fraction=0.0)) \
        if eval_data else cfg
    report, files, tasks = DataReport(), [], []
    for m in entries:
        tr, ev, rep, fs = load_examples(task_cfg, [m.path], tokenizer, progress=progress)
        _merge(report, rep)
        files.extend(fs)
        tasks.append(Task(m.name, m.path, m.weight, tr, ev))
    groups = {t.name: t.eval for t in tasks if t.eval}
    for path in eval_data:
        ev, rep, fs = _load_eval_file(cfg, path, tokenizer, progress)
        _merge(report, rep)
        files.extend(fs)
        groups[Path(path).stem] = ev
    probs = probabilities([len(t.train) for t in tasks], [t.weight for t in tasks], cfg.data.mix_temperature)
    for t, p in zip(tasks, probs):
        t.probability = p
    log.info("mix: %s", ", ".join(f"{t.name} {len(t.train)} train / {len(t.eval)} eval, p={t.probability:.3f}"
                                  for t in tasks))
    train = [e for t in tasks for e in t.train]
    evals = [e for g in groups.values() for e in g]
    return RunData(train, evals, report, files, tasks, groups)


def _load_eval_file(cfg: TuneConfig, path: str | os.PathLike[str], tokenizer: Any, progress: bool
                    ) -> tuple[list[Example], DataReport, list[DataFile]]:
    from hybrid.tuning.data import encode_rows, file_sha256, read_rows
    from hybrid.tuning.examples import _system_prompt

    got, report = read_rows(path, cfg.data.format)
    ev, report = encode_rows(got, tokenizer, cfg.data, system_prompt=_system_prompt(cfg)[0], report=report,
                             progress=progress)
    f = DataFile(str(path), file_sha256(path), int(report.kept[str(path)]), "eval",
                 skipped=int(report.skipped_by_file[str(path)]))
    return ev, report, [f]


# ------------------------------------------------------------------------------------------------
# batch streams: where the trainer's next micro-batch comes from


class EpochStream:
    """One pool of examples: its epoch plans in order, crossing epoch borders (what ``hybrid tune`` always did).
    The position lives in ``state['epoch']`` / ``state['batch']`` so checkpoints resume it."""

    def __init__(self, plan: Callable[[Sequence[Example], int, str], list]) -> None:
        self._plan = plan
        self._cache: tuple[int, list] | None = None
        self.examples: Sequence[Example] = ()

    def _epoch(self, e: int) -> list:
        if self._cache is None or self._cache[0] != e:
            self._cache = (e, self._plan(self.examples, e, ""))
        return self._cache[1]

    def batches_per_epoch(self) -> int:
        return len(self._epoch(0))

    def next(self, state: dict[str, Any]) -> list:
        if state["batch"] >= len(self._epoch(state["epoch"])):
            state["epoch"] += 1
            state["batch"] = 0
        rows = self._epoch(state["epoch"])[state["batch"]]
        state["batch"] += 1
        return rows


class MixStream:
    """Draws each micro-batch's task with a seeded draw per micro-batch, then takes that task's next batch.

    The draw depends only on (seed, draw number), and each task's cursor is saved in ``state['mix']``, so a
    resumed run continues the very same sequence.
    """

    def __init__(self, tasks: Sequence[Task], plan: Callable[[Sequence[Example], int, str], list], seed: int) -> None:
        self.tasks = [t for t in tasks if t.probability > 0]
        self._plan = plan
        self.seed = seed
        self._cache: dict[str, tuple[int, list]] = {}

    def _epoch(self, t: Task, e: int) -> list:
        c = self._cache.get(t.name)
        if c is None or c[0] != e:
            c = self._cache[t.name] = (e, self._plan(t.train, e, t.name))
        return c[1]

    def batches_per_epoch(self) -> int:
        return sum(len(self._epoch(t, 0)) for t in self.tasks)

    def _pick(self, k: int) -> Task:
        u = random.Random(f"{self.seed}:mix:{k}").random()
        acc = 0.0
        for t in self.tasks:
            acc += t.probability
            if u < acc:
                return t
        return self.tasks[-1]  # float round-off at the top end

    def next(self, state: dict[str, Any]) -> list:
        mix = state.setdefault("mix", {"draws": 0, "cursor": {}, "examples": {}, "tokens": {}})
        t = self._pick(mix["draws"])
        e, b = mix["cursor"].get(t.name, [0, 0])
        if b >= len(self._epoch(t, e)):
            e, b = e + 1, 0
        rows = self._epoch(t, e)[b]
        mix["cursor"][t.name] = [e, b + 1]
        mix["examples"][t.name] = mix["examples"].get(t.name, 0) + sum(len(r) for r in rows)
        mix["tokens"][t.name] = mix["tokens"].get(t.name, 0) + sum(len(x) for r in rows for x in r)
        mix["draws"] += 1
        state["epoch"] = mix["draws"] // max(1, self.batches_per_epoch())
        return rows


def make_stream(run: RunData, plan: Callable[[Sequence[Example], int, str], list], seed: int
                ) -> EpochStream | MixStream:
    if run.tasks:
        return MixStream(run.tasks, plan, seed)
    s = EpochStream(plan)
    s.examples = run.train
    return s


# ------------------------------------------------------------------------------------------------
# per-task eval and the card's record


def _targets(exs: Sequence[Example]) -> int:
    # the same count collate() makes: position i carries a loss when token i+1 is a completion token
    return sum(sum(1 for m in e.loss_mask[1:] if m) for e in exs)


def evaluate_groups(evaluate: Callable[[Sequence[Example]], float | None], run: RunData
                    ) -> tuple[float | None, dict[str, float]]:
    """(overall eval loss, per-task eval loss). Without tasks: one pass over all eval examples. With tasks:
    one pass per task, combined token-weighted, so the overall number means the same as without a mix."""
    if not run.eval_groups:
        return evaluate(run.eval), {}
    per: dict[str, float] = {}
    total, count = 0.0, 0
    for name, exs in run.eval_groups.items():
        v = evaluate(exs)
        if v is None:
            continue
        n = _targets(exs)
        per[name] = v
        total += v * n
        count += n
    return (total / count if count else None), per


def mix_record(run: RunData, state: dict[str, Any], temperature: float) -> dict[str, Any] | None:
    """The card's ``extra.mix``: each task's weight, probability, sizes and what the run drew from it."""
    if not run.tasks:
        return None
    mix = state.get("mix") or {}
    return {"temperature": temperature, "draws": int(mix.get("draws", 0)), "tasks": {
        t.name: {"path": t.path, "weight": t.weight, "probability": round(t.probability, 6),
                 "train_examples": len(t.train), "eval_examples": len(t.eval),
                 "sampled_examples": int((mix.get("examples") or {}).get(t.name, 0)),
                 "sampled_tokens": int((mix.get("tokens") or {}).get(t.name, 0))} for t in run.tasks}}
