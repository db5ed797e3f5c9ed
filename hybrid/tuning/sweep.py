"""Hyperparameter sweeps with Optuna: a search space in YAML, one tracked training run per trial, pruning
on the per-step eval loss, and the study in an RDB (SQLite by default) so it resumes and can be shared::

    space = load_space("sweep.yaml")
    result = run_sweep(cfg, space, trials=6, data=["train.jsonl"], out="sweeps/shop", study_db="study.sqlite")
    result.best_value, result.best_adapter        # sweeps/shop/best holds the best trial's adapter

The space file names parameters; each is a list (a categorical choice), a ``{low, high[, log][, step]}``
range, or a single value (fixed for every trial)::

    lr: {low: 3.0e-4, high: 5.0e-3, log: true}
    rank: [8, 16, 32]
    alpha: {low: 8, high: 64}
    steps: 10
    pruning: {startup_trials: 2, eval_every: 5}

Several machines run one study by pointing ``--study-db`` at the same RDB URL (``postgresql://...`` or
``mysql://...``; SQLite only for processes on one machine): Optuna hands each process its own trials.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.config import read_yaml
from core.errors import ConfigError, InputError

# space name -> (config key, value type); a table rather than branches, so a new knob is one line
PARAMS: dict[str, tuple[str, type]] = {
    "lr": ("train.lr", float),
    "rank": ("lora.r", int),
    "alpha": ("lora.alpha", float),
    "dropout": ("lora.dropout", float),
    "steps": ("train.max_steps", int),
    "epochs": ("train.epochs", float),
    "method": ("method", str),
    "weight_decay": ("train.weight_decay", float),
    "warmup_steps": ("train.warmup_steps", int),
    "virtual_tokens": ("prompt_tuning.num_virtual_tokens", int),
}
LOG_BY_DEFAULT = {"lr", "weight_decay"}


@dataclass
class Dim:
    name: str
    choices: list[Any] | None = None  # categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    fixed: Any = None

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return self.low is not None and self.low <= value <= self.high

    def suggest(self, trial: Any) -> Any:
        kind = PARAMS[self.name][1]
        if self.fixed is not None:
            return self.fixed
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if kind is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)


@dataclass
class Space:
    dims: list[Dim]
    startup_trials: int = 2  # trials that run to the end before the median pruner may stop any
    warmup_steps: int = 0  # steps of each trial that are never pruned
    eval_every: int = 0  # 0: keep the config's train.eval_every
    path: str = ""

    def searched(self) -> list[Dim]:
        return [d for d in self.dims if d.fixed is None]


def _num(v: Any, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{where} must be finite, got {v!r}")
    return x


def parse_space(raw: Any, where: str = "<space>") -> Space:
    """A ``Space`` from the YAML mapping; any unknown parameter or malformed range is one ``ConfigError``."""
    if not isinstance(raw, dict) or not raw:
        got = "nothing" if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"sweep space {where} must be a mapping of parameters, got {got}")
    raw = dict(raw)
    prune = raw.pop("pruning", None) or {}
    if not isinstance(prune, dict):
        raise ConfigError(f"sweep space {where}: pruning must be a mapping")
    unknown_p = sorted(set(prune) - {"startup_trials", "warmup_steps", "eval_every"})
    if unknown_p:
        raise ConfigError(f"sweep space {where}: unknown pruning setting {unknown_p[0]!r} "
                          "(known: startup_trials, warmup_steps, eval_every)")
    dims = []
    for name, spec in raw.items():
        if name not in PARAMS:
            raise ConfigError(f"sweep space {where}: unknown parameter {name!r} (known: {', '.join(sorted(PARAMS))})")
        kind = PARAMS[name][1]
        at = f"sweep space {where}: {name}"
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{at}: an empty list of choices")
            dims.append(Dim(name, choices=[kind(x) if kind is not str else str(x) for x in spec]))
        elif isinstance(spec, dict):
            extra = sorted(set(spec) - {"low", "high", "log", "step"})
            if extra or "low" not in spec or "high" not in spec:
                raise ConfigError(f"{at}: a range is {{low, high[, log][, step]}}, got keys {sorted(spec)}")
            if kind is str:
                raise ConfigError(f"{at}: takes a list of choices, not a range")
            low, high = _num(spec["low"], f"{at}.low"), _num(spec["high"], f"{at}.high")
            log = bool(spec.get("log", name in LOG_BY_DEFAULT))
            if not low < high:
                raise ConfigError(f"{at}: low ({low}) must be < high ({high})")
            if log and low <= 0:
                raise ConfigError(f"{at}: a log range needs low > 0, got {low}")
            step = _num(spec["step"], f"{at}.step") if spec.get("step") is not None else None
            if step is not None and log:
                raise ConfigError(f"{at}: step and log cannot be combined")
            dims.append(Dim(name, low=low, high=high, log=log, step=step))
        else:
            dims.append(Dim(name, fixed=kind(spec) if kind is not str else str(spec)))
    s = Space(dims, path=where, **{k: int(_num(v, f"sweep space {where}: pruning.{k}")) for k, v in prune.items()})
    if not s.searched():
        raise ConfigError(f"sweep space {where}: nothing to search (every parameter has a single value)")
    return s


def load_space(path: str | os.PathLike[str]) -> Space:
    return parse_space(read_yaml(path, what="sweep space", missing=InputError), str(path))


def trial_config(base: Any, values: dict[str, Any]) -> Any:
    """``base`` with the trial's values set, rebuilt from its dict so every section's checks run again
    (a bad combination is one ``ConfigError``)."""
    from core.config import _build  # noqa: PLC2701 - the same builder load_config uses

    raw = dataclasses.asdict(base)
    for k, v in values.items():
        *path, leaf = PARAMS[k][0].split(".")
        node = raw
        for part in path:
            node = node[part]
        node[leaf] = v
    if "epochs" in values and "steps" not in values:
        raw["train"]["max_steps"] = 0
    return _build(type(base), raw, "<sweep trial>")


def baseline_values(base: Any, space: Space) -> dict[str, Any]:
    """The config's own values of the searched parameters (trial 0 of a new study: the preset itself)."""
    raw = dataclasses.asdict(base)
    out = {}
    for d in space.searched():
        node: Any = raw
        for part in PARAMS[d.name][0].split("."):
            node = node[part]
        out[d.name] = node
    return out


# ------------------------------------------------------------------------------------------------
# the study


@dataclass
class SweepResult:
    study_name: str
    storage: str
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_adapter: Path | None
    trials: list[dict[str, Any]] = field(default_factory=list)  # number, state, value, params, steps
    ran: int = 0  # trials run by this call
    direction: str = "minimize"
    report: Path | None = None
    plot: Path | None = None


def storage_url(study_db: str | os.PathLike[str] | None, out: Path) -> str:
    """A SQLite path, an RDB URL (``postgresql://...``: shared by several machines) or ``OUT/study.sqlite``."""
    s = str(study_db) if study_db else str(out / "study.sqlite")
    if "://" in s:
        return s
    Path(s).parent.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + str(Path(s).resolve())


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(study: Any) -> list[int]:
    """Trials left RUNNING by a killed process of this host: mark them failed and queue their parameters
    again, so a resumed sweep retries them. Trials of other hosts (a shared study) are left alone."""
    import optuna

    host = socket.gethostname()
    again = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        h, _, pid = str(t.user_attrs.get("owner", "")).rpartition(":")
        if h == host and pid.isdigit() and not _pid_alive(int(pid)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            again.append(t.number)
    return again


def _finished(study: Any) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


class _Pruning:
    """The trial's ``on_step``: report each eval loss, stop the run when the median pruner says so."""

    def __init__(self, trial: Any, final_step: int = 0) -> None:
        self.trial = trial
        self.final = final_step  # 0: unknown (steps derived from epochs)
        self.last_step = 0

    def __call__(self, step: int, row: dict[str, Any]) -> None:
        import optuna

        self.last_step = step
        ev = row.get("eval_loss")
        if ev is None or not math.isfinite(ev):
            return
        self.trial.report(float(ev), step)
        # at the final step the trial has already paid for its training: keep its result
        if not (self.final and step >= self.final) and self.trial.should_prune():
            raise optuna.TrialPruned(f"eval loss {ev:.4f} at step {step} is worse than the median")


def _open_study(optuna: Any, name: str, url: str, direction: str, pruner: Any, attempts: int = 3) -> Any:
    """Create or load the study. Two processes opening a new database at once (a second machine, or a
    monitor reading the study) can race on writing the schema's version row; the loser sees a unique-
    constraint error while the schema is in fact there, so that error is retried after a short pause."""
    import time

    tried = 0
    while True:
        try:
            return optuna.create_study(study_name=name, storage=url, load_if_exists=True, direction=direction,
                                       pruner=pruner)
        except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, a locked file
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            tried += 1
            if "UNIQUE constraint" not in first or tried >= attempts:
                raise InputError(f"cannot open the study storage {url}: {first}") from None
            time.sleep(0.2 * tried)


def run_sweep(cfg: Any, space: Space, trials: int, *, data: Sequence[str | os.PathLike[str]] = (),
              eval_data: Sequence[str | os.PathLike[str]] = (), out: str | os.PathLike[str],
              study_db: str | os.PathLike[str] | None = None, study_name: str | None = None,
              objective: Callable[[Any, Path, Any], float] | None = None, objective_name: str = "eval_loss",
              direction: str = "minimize", model_factory: Callable[[Any], tuple[Any, Any]] | None = None,
              baseline: bool = True, seed: int = 0, echo: Callable[[str], None] = lambda s: None) -> SweepResult:
    """Run trials until the study holds ``trials`` finished (complete or pruned) ones, then write the best
    trial's adapter to ``OUT/best`` and the report (``OUT/sweep.md`` with ``OUT/sweep.png``).

    ``objective(trial_cfg, adapter_dir, train_result)`` returns the value to optimise in ``direction``; by
    default the trial's final eval loss (minimised). Pruning compares the per-step eval losses, so it is on
    only for the eval-loss objective: a downstream score is known only at the end of a trial. ``model_factory(cfg)`` returns a fresh ``(model, tokenizer)`` per trial (default: load
    ``cfg.base_model``); every trial needs untouched base weights.
    """
    from hybrid.tuning.tracking import require

    optuna = require("optuna", "hybrid tune sweep")
    from hybrid.tuning.trainer import train

    if trials < 1:
        raise InputError(f"--trials must be >= 1, got {trials}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(study_db, out_dir)
    name = study_name or out_dir.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if direction not in ("minimize", "maximize"):
        raise InputError(f"direction must be minimize or maximize, got {direction!r}")
    prune = objective is None
    pruner = optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_steps) \
        if prune else optuna.pruners.NopPruner()
    study = _open_study(optuna, name, url, direction, pruner)
    if study.direction.name.lower() != direction:
        raise InputError(f"study {name!r} in {url} was created to {study.direction.name.lower()}; this objective "
                         f"needs {direction}: use another --study-db or study name")
    # A seeded sampler restarts its sequence in every process; advancing the seed by the trials already in
    # the study keeps a resumed (or a second machine's) run from repeating the parameters tried before.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
    retried = recover_interrupted(study)
    if retried:
        echo(f"resuming: trials {retried} were interrupted; their parameters run again")
    if baseline and not study.get_trials(deepcopy=False):
        values = baseline_values(cfg, space)
        outside = [f"{d.name}={values[d.name]}" for d in space.searched() if not d.contains(values[d.name])]
        if outside:
            echo(f"no preset trial: the config's {', '.join(outside)} lies outside the space")
        else:
            study.enqueue_trial(values, user_attrs={"baseline": True})
    if space.eval_every:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every=space.eval_every))
    if model_factory is None:
        from hybrid.models import load_base_model

        def model_factory(c: Any) -> tuple[Any, Any]:
            return load_base_model(c.base_model)

    fixed = {d.name: d.fixed for d in space.dims if d.fixed is not None}
    ran, failures = 0, 0
    while _finished(study) < trials:
        trial = study.ask()
        trial.set_user_attr("owner", _owner())
        values = {d.name: d.suggest(trial) for d in space.dims}
        tdir = out_dir / "trials" / f"trial-{trial.number:03d}"
        pruning = None
        try:
            tcfg = trial_config(cfg, {**values, **fixed})
            tcfg = dataclasses.replace(tcfg, track=dataclasses.replace(
                tcfg.track, experiment=f"hybrid-sweep-{name}", run_name=f"trial-{trial.number:03d}",
                tags={**tcfg.track.tags, "optuna.study": name, "optuna.trial": str(trial.number),
                      "optuna.storage": url if url.startswith("sqlite") else url.split("@")[-1]}))
            pruning = _Pruning(trial, tcfg.train.max_steps) if prune else None
            model, tokenizer = model_factory(tcfg)
            res = train(tcfg, data, tdir, eval_data=eval_data, model=model, tokenizer=tokenizer,
                        on_step=pruning, progress=False)
            if not res.eval_history and objective is None:
                raise InputError("the sweep's objective is eval loss, but the trial had no eval examples "
                                 "(set data.eval_fraction > 0 or give --eval-data)")
            value = objective(tcfg, tdir, res) if objective else res.eval_loss
            if value is None or not math.isfinite(value):
                raise InputError(f"trial {trial.number}: no {objective_name} (is there eval data?)")
            trial.set_user_attr("steps", res.steps)
            study.tell(trial, float(value))
            echo(f"trial {trial.number}: {objective_name} {value:.4f}  {_fmt(values)}")
        except optuna.TrialPruned:
            trial.set_user_attr("steps", pruning.last_step if pruning else None)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            shutil.rmtree(tdir, ignore_errors=True)
            echo(f"trial {trial.number}: pruned at step {pruning.last_step if pruning else '?'}  {_fmt(values)}")
        except (ConfigError, InputError) as e:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += 1
            echo(f"trial {trial.number}: failed: {e}")
            if failures >= 3 and ran == 0:
                raise InputError(f"the sweep's first {failures} trials failed; last: {e}") from None
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        ran += 1
    return _finish(study, out_dir, url, name, ran, objective_name, direction)


def _fmt(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _finish(study: Any, out_dir: Path, url: str, name: str, ran: int, objective_name: str,
            direction: str) -> SweepResult:
    import optuna

    from hybrid.tuning.sweep_report import write_report

    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
             "steps": t.user_attrs.get("steps"), "baseline": bool(t.user_attrs.get("baseline"))}
            for t in study.get_trials(deepcopy=False)]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    result = SweepResult(name, url, None, None, {}, None, rows, ran, direction=direction)
    if complete:
        best = study.best_trial
        result.best_number, result.best_value, result.best_params = best.number, best.value, dict(best.params)
        src = out_dir / "trials" / f"trial-{best.number:03d}"
        if src.is_dir():  # a shared study's best may have run on another machine
            result.best_adapter = _publish(src, out_dir / "best")
    result.report, result.plot = write_report(result, out_dir, objective_name)
    return result


def _publish(src: Path, dst: Path) -> Path:
    """Copy the best adapter into place atomically: a reader sees the old best or the new one, never half."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def downstream_objective(app_dir: str | os.PathLike[str], questions: str | os.PathLike[str], strategy: str, *,
                         limit: int | None = None) -> Callable[[Any, Path, Any], float]:
    """The ``eval:<strategy>`` objective: the app answers a dev question set with the trial's adapter, and the
    mean primary score of ``strategy`` (``hybrid eval``'s own scoring) is maximised."""
    from hybrid.eval.runner import EvalConfig

    try:
        ecfg = EvalConfig(strategies=[strategy], limit=limit, learned_cv=False)
    except ValueError as e:
        raise InputError(f"--objective eval:{strategy}: {e}") from None
    if not Path(questions).is_file():
        raise InputError(f"dev question set not found: {questions}")

    def score(tcfg: Any, adapter_dir: Path, res: Any) -> float:
        from hybrid.app import load_app
        from hybrid.eval.runner import run_eval

        app = load_app(app_dir)
        app = dataclasses.replace(app, adapter=dataclasses.replace(app.adapter, path=str(Path(adapter_dir).resolve())))
        report_dir = adapter_dir.with_name(adapter_dir.name + ".eval")
        r = run_eval(app, questions, report_dir, ecfg, progress=False)
        value = r.summary["strategies"][strategy]["primary"]["mean"]
        if tcfg.track.enabled is not False:
            from hybrid.tuning.tracking import log_eval_run, mlflow_available

            if mlflow_available():
                log_eval_run({"primary": value}, adapter=adapter_dir, params={"strategy": strategy},
                             artifacts=[p for p in (report_dir / "report.md",) if p.is_file()],
                             experiment=tcfg.track.experiment, uri=tcfg.track.uri,
                             on_unreachable=tcfg.track.on_unreachable, tags=dict(tcfg.track.tags))
        return float(value)

    return score
