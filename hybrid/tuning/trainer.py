"""The training loop: packed batches, completion-only loss, accumulation, warmup + decay, clipping,
periodic eval with early stopping, checkpoints with exact resume, metrics, and multi-process runs.

Why an own loop instead of ``transformers.Trainer``: packing removes padding, and the LM head runs only
on positions that carry a loss (completion tokens), which skips most of the vocab projection and its
huge logits tensor. ``benchmarks/tuning.py`` measures the difference against a plain Trainer::

    cfg = load_config(TuneConfig, "configs/lora.yaml")
    result = train(cfg, data=["train.jsonl"], out="adapters/shop")
    result.eval_loss, result.out   # adapters/shop holds adapter_model.safetensors + adapter_card.json

Under ``torchrun --nproc-per-node N`` / ``accelerate launch`` the same call trains data-parallel:
each rank takes every N-th micro-batch, DDP averages gradients, rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.errors import InputError
from hybrid.tuning.batches import MicroBatch, collate, plan_epoch
from hybrid.tuning.card import AdapterCard
from hybrid.tuning.config import TuneConfig
from hybrid.tuning.data import DataReport, Row
from hybrid.tuning.device import Dist, _all_sum, autocast, setup_distributed, use_bf16  # noqa: F401 - re-exported
from hybrid.tuning.examples import _system_prompt, load_examples  # noqa: F401 - re-exported
from hybrid.tuning.loss import _loss_module, _to, evaluate, last_epoch_loss, lr_at  # noqa: F401 - re-exported
from hybrid.tuning.run_files import Callbacks, Metrics, RunCallback, _resume_key, default_callbacks, run_dir_for  # noqa: F401,E501

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What ``train`` produced: where, how long, and how well."""

    out: Path | None
    card: AdapterCard | None
    steps: int
    train_loss: float | None
    eval_loss: float | None
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    tokens_seen: int = 0
    target_tokens: int = 0
    padded_tokens: int = 0  # tokens fed to the model including row-end padding
    wall_time_s: float = 0.0
    train_seconds: float = 0.0  # time inside optimizer steps only (no data prep, eval or saving)
    train_loss_basis: str = ""  # what ``train_loss`` averages, e.g. "... over the last 12 steps = one epoch"
    stopped_early: bool = False
    report: DataReport | None = None
    model: Any = None  # the trained (peft-wrapped) model, for immediate use or evaluation


# ------------------------------------------------------------------------------------------------
# the loop


def train(cfg: TuneConfig, data: Sequence[str | os.PathLike[str]] = (), out: str | os.PathLike[str] | None = None,
          *, eval_data: Sequence[str | os.PathLike[str]] = (), resume: bool = False, model: Any = None,
          tokenizer: Any = None, rows: Sequence[Row] | None = None, on_step: Callable[[int, dict], None] | None = None,
          progress: bool | None = None, callbacks: Sequence[RunCallback] = ()) -> TrainResult:
    """Train ``cfg.method`` on ``data`` and save the adapter to ``out`` (nothing is saved when ``out`` is None).

    ``model``/``tokenizer`` default to ``hybrid.models.load_base_model(cfg.base_model)``. ``on_step(step,
    metrics)`` runs after every optimizer step (and after its checkpoint, if one was due). ``callbacks``
    observe the run beside the ones its config asks for (``cfg.track``: MLflow); an exception raised in
    ``on_step`` (e.g. a pruned sweep trial) ends the run and reaches every callback's ``on_fail``.
    """
    d = setup_distributed()
    # built before the model loads, so an unreachable tracking store with on_unreachable=fail costs nothing
    hooks = Callbacks([*default_callbacks(cfg, d.main), *(callbacks if d.main else ())])
    try:
        return _train(cfg, data, out, eval_data=eval_data, resume=resume, model=model, tokenizer=tokenizer,
                      rows=rows, on_step=on_step, progress=progress, hooks=hooks, d=d)
    except BaseException as e:
        hooks.on_fail(e)
        raise


def _train(cfg: TuneConfig, data: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str] | None, *,
           eval_data: Sequence[str | os.PathLike[str]], resume: bool, model: Any, tokenizer: Any,
           rows: Sequence[Row] | None, on_step: Callable[[int, dict], None] | None, progress: bool | None,
           hooks: Callbacks, d: Dist) -> TrainResult:
    import torch

    from hybrid.chat import template_hash
    from hybrid.tuning.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from hybrid.tuning.methods import prepare_model, trainable_summary, uses_virtual_tokens
    from hybrid.tuning.mix import evaluate_groups, load_run_data, make_stream, mix_record

    t0 = time.perf_counter()
    tc = cfg.train
    show = (tc.progress if progress is None else progress) and d.main
    if tc.threads:
        torch.set_num_threads(tc.threads)
    random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    from hybrid.tuning.seq2seq import train_seq2seq, wants_seq2seq

    if wants_seq2seq(cfg, model):  # T5, BART: the prompt feeds the encoder, the answer is the decoder's target
        return train_seq2seq(cfg, data, out, eval_data=eval_data, resume=resume, model=model, tokenizer=tokenizer,
                             rows=rows, on_step=on_step, progress=show, hooks=hooks)
    if model is None:
        from hybrid.models import load_base_model

        model, tokenizer = load_base_model(cfg.base_model)
    if tokenizer is None:
        raise InputError("a tokenizer is required with a custom model")
    resolved = getattr(model, "hybrid_resolved", None)
    max_ctx = getattr(model.config, "max_position_embeddings", None)
    if max_ctx and cfg.data.max_length > max_ctx:
        raise InputError(f"data.max_length={cfg.data.max_length} exceeds the model's context window ({max_ctx})")

    run_data = load_run_data(cfg, data, tokenizer, eval_data=eval_data, rows=rows, progress=show)
    train_ex, eval_ex, report, files = run_data.train, run_data.eval, run_data.report, run_data.files
    if d.main:
        log.info("data: %s; %d train / %d eval examples", report.summary(), len(train_ex), len(eval_ex))

    model.config.use_cache = False
    model = prepare_model(model, cfg).to(d.device)
    if d.main:
        log.info("%s", trainable_summary(model, cfg.method))
    packed = tc.packing and not uses_virtual_tokens(cfg.method)
    bf16 = use_bf16(tc.precision, d.device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    loss_mod = _loss_module(model, cfg.method)
    ddp_mod = loss_mod
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_mod = DDP(loss_mod, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999), eps=1e-8)

    row_len = cfg.pack_length() if packed else cfg.data.max_length

    def plan(examples: Sequence, epoch: int, task: str) -> list:
        # a mix task's own seed, so adding a task does not reshuffle the others
        return plan_epoch(examples, max_length=row_len, batch_tokens=tc.batch_tokens,
                          seed=f"{tc.seed}:{task}" if task else tc.seed, epoch=epoch, packing=packed)

    stream = make_stream(run_data, plan, tc.seed)
    per_step = tc.grad_accum * d.world
    steps_per_epoch = max(1, math.ceil(stream.batches_per_epoch() / per_step))
    total = tc.max_steps or max(1, math.ceil(tc.epochs * steps_per_epoch))

    run_dir = run_dir_for(out) if out is not None else None
    ckpt_root = run_dir / "checkpoints" if run_dir else None
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "targets": 0,
                             "best_eval": None, "bad_evals": 0, "eval_history": [], "step_losses": [],
                             "step_targets": [],
                             "elapsed": 0.0, "key": _resume_key(cfg)}
    if resume:
        if ckpt_root is None:
            raise InputError("--resume needs --out (checkpoints live beside the adapter)")
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            raise InputError(f"nothing to resume: no checkpoint under {ckpt_root}")
        loaded = load_checkpoint(ckpt, model=model, optimizer=opt)
        if loaded.get("key") != state["key"]:
            raise InputError(f"checkpoint {ckpt} was written with different settings (method, data or "
                             "optimizer); resume with the same config or start a new run")
        state = loaded
        if d.main:
            log.warning("resuming from %s (step %d)", ckpt, state["step"])
    if run_dir is not None and d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    metrics = Metrics(run_dir / "metrics.jsonl" if (run_dir and d.main) else None, tc.tensorboard)
    hooks.on_start({"out": str(out) if out is not None else "", "total_steps": total,
                    "steps_per_epoch": steps_per_epoch, "train_examples": len(train_ex),
                    "eval_examples": len(eval_ex), "world_size": d.world, "resume": resume})

    def run_eval(row: dict[str, Any]) -> float | None:
        ev_, per_task = evaluate_groups(
            lambda exs: evaluate(loss_mod, exs, cfg, pad_id=pad_id, bf16=bf16, dist_=d, packed=packed), run_data)
        row["eval_loss"] = ev_
        row.update({f"eval_loss.{k}": v for k, v in per_task.items()})
        state["eval_by_task"] = per_task
        return ev_

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=state["step"], desc=f"tune {cfg.method}", unit="step", disable=not show,
               dynamic_ncols=True)
    best_weights: dict[str, Any] | None = None
    stopped_early = False
    window_loss, window_tok, window_t = 0.0, 0, time.perf_counter()
    if eval_ex and tc.eval_at_start and state["step"] == 0 and not state["eval_history"]:
        row0: dict[str, Any] = {"step": 0}
        ev0 = run_eval(row0)
        state["eval_history"].append([0, ev0])
        metrics.log(row0)
        hooks.on_log(row0)
    loss_mod.train()
    step_seconds = 0.0
    try:
        while state["step"] < total:
            t_step = time.perf_counter()
            # Gather this step's micro-batches (this rank's share), crossing epoch borders if needed.
            mine: list[MicroBatch] = []
            n_targets_step = 0
            n_tokens_step = 0
            for j in range(per_step):
                rows_ = stream.next(state)
                if j % d.world == d.rank:
                    mine.append(collate(rows_, pad_id=pad_id, packed=packed))
            n_targets_step = sum(b.n_targets for b in mine)
            n_tokens_step = sum(b.n_tokens for b in mine)
            state["padded"] = state.get("padded", 0) + sum(b.n_padded for b in mine) * d.world
            n_targets_step, n_tokens_step = (int(x) for x in _all_sum([n_targets_step, n_tokens_step], d))
            lr = lr_at(state["step"], total, tc)
            for g in opt.param_groups:
                g["lr"] = lr
            step_loss = 0.0
            for k, b in enumerate(mine):
                sync = contextlib.nullcontext() if (d.world == 1 or k == len(mine) - 1) else ddp_mod.no_sync()
                with sync, autocast(bf16, d.device):
                    loss_sum = ddp_mod(**_to(b, d.device))
                    # DDP averages gradients over ranks; scaling by world makes that a global token mean.
                    loss = loss_sum * (d.world / max(1, n_targets_step))
                loss.backward()
                step_loss += float(loss_sum.detach())
            step_loss = _all_sum([step_loss], d)[0] / max(1, n_targets_step)
            gnorm = (torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm) if tc.max_grad_norm > 0
                     else torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
            opt.step()
            opt.zero_grad(set_to_none=True)
            step_seconds += time.perf_counter() - t_step
            state["step"] += 1
            state["tokens"] += n_tokens_step
            state["targets"] += n_targets_step
            state["step_losses"].append(step_loss)
            state.setdefault("step_targets", []).append(n_targets_step)
            window_loss += step_loss * n_targets_step
            window_tok += n_tokens_step
            now = time.perf_counter()
            tps = window_tok / max(now - window_t, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{tps:.0f}")
            row: dict[str, Any] = {"step": state["step"], "epoch": state["epoch"], "loss": step_loss, "lr": lr,
                                   "grad_norm": float(gnorm), "tokens": state["tokens"], "tokens_per_s": tps}
            if state["step"] % tc.log_every == 0 or state["step"] == total:
                metrics.log(row)
                window_loss, window_tok, window_t = 0.0, 0, now
            last = state["step"] == total
            if eval_ex and ((tc.eval_every and state["step"] % tc.eval_every == 0) or last):
                ev_row: dict[str, Any] = {"step": state["step"]}
                ev = run_eval(ev_row)
                state["eval_history"].append([state["step"], ev])
                metrics.log(ev_row)
                row.update(ev_row)
                bar.set_postfix(loss=f"{step_loss:.3f}", eval=f"{ev:.3f}", tok_s=f"{tps:.0f}")
                best = state["best_eval"]
                if best is None or ev < best - tc.early_stopping_delta:
                    state["best_eval"], state["bad_evals"] = ev, 0
                    if tc.early_stopping_patience:
                        best_weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                else:
                    state["bad_evals"] += 1
                    if tc.early_stopping_patience and state["bad_evals"] >= tc.early_stopping_patience:
                        stopped_early = True
            if ckpt_root is not None and tc.save_every and state["step"] % tc.save_every == 0 and not last:
                if d.main:
                    save_checkpoint(ckpt_root, step=state["step"], model=model, optimizer=opt,
                                    state={**state, "elapsed": state["elapsed"] + time.perf_counter() - t0})
            hooks.on_log(row)
            if on_step is not None:
                on_step(state["step"], row)
            if stopped_early:
                if d.main:
                    log.warning("early stopping at step %d: eval loss has not improved for %d evals",
                                state["step"], state["bad_evals"])
                break
    finally:
        bar.close()
        metrics.close()

    if stopped_early and best_weights is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_weights:
                    p.copy_(best_weights[n])
    wall = state.get("elapsed", 0.0) + time.perf_counter() - t0
    history = [(int(s), float(v)) for s, v in state["eval_history"]]
    final_eval = (state["best_eval"] if stopped_early else (history[-1][1] if history else None))
    losses = state["step_losses"]
    train_loss, loss_steps = last_epoch_loss(losses, state.get("step_targets", []), steps_per_epoch)
    basis = f"token-weighted mean over the last {loss_steps} steps = one epoch" if loss_steps == steps_per_epoch \
        else f"token-weighted mean over all {loss_steps} steps (less than one epoch of {steps_per_epoch})"

    card = AdapterCard(
        base_model_id=resolved.model_id if resolved else str(getattr(model.config, "_name_or_path", "") or "custom"),
        base_model_sha=resolved.sha if resolved else "",
        method=cfg.method,
        template_hash=template_hash(tokenizer),
        system_prompt=_system_prompt(cfg)[1],
        system_prompt_hash=_system_prompt(cfg)[2],
        data=files,
        hyperparameters={"config": asdict(cfg), "world_size": d.world, "bf16": bf16, "packed": packed,
                         "total_steps": total},
        train_loss=train_loss,
        eval_loss=final_eval,
        wall_time_s=round(wall, 2),
        tokens_seen=int(state["tokens"]),
        steps=int(state["step"]),
        extra={"base_model_arg": cfg.base_model, "data_report": report.summary(), "train_loss_basis": basis,
               "eval_history": history, "target_tokens": int(state["targets"])},
    )
    mix = mix_record(run_data, state, cfg.data.mix_temperature)
    if mix is not None:
        card.extra["mix"] = mix
        card.extra["eval_loss_by_task"] = dict(state.get("eval_by_task") or {})
    hooks.on_card(card)
    saved = None
    if out is not None and d.main:
        from hybrid.tuning.save import save_adapter

        model.eval()
        extra = {}
        if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
            extra["metrics.jsonl"] = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
        extra["tune_config.json"] = json.dumps(asdict(cfg), indent=2, sort_keys=True) + "\n"
        saved = save_adapter(model, out, card=card, tokenizer=tokenizer, extra_files=extra)
    hooks.on_end(card, saved, "FINISHED")
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has finished writing before any rank returns
    return TrainResult(out=saved, card=card, steps=int(state["step"]), train_loss=train_loss, eval_loss=final_eval,
                       eval_history=history, step_losses=list(losses), tokens_seen=int(state["tokens"]),
                       train_loss_basis=basis,
                       target_tokens=int(state["targets"]), padded_tokens=int(state.get("padded", 0)),
                       wall_time_s=wall, train_seconds=step_seconds,
                       stopped_early=stopped_early, report=report, model=model)
