"""Tuning encoder-decoder models (T5, FLAN-T5, BART): the prompt feeds the encoder, the answer is the
decoder's target.

    result = train_seq2seq(cfg, data=["train.jsonl"], out="adapters/legal")   # cfg.base_model: a T5 dir
    Seq2SeqGenerator(cfg.base_model).load_adapter("legal", "adapters/legal")

Rows are read, checked, split and rendered exactly as for causal models (``hybrid.tuning.mix.load_run_data``).
``to_pair`` then splits each tokenized example: the tokens before its last answer are the encoder input,
with the tokenizer's special tokens around them as ``hybrid.chat.encode_rendered`` adds them at inference
(T5 appends ``</s>``); the last answer plus EOS are the labels. Earlier turns stay in the encoder input as
context without a loss, as inference sees them. Rows are never packed; the loss is the summed token
cross-entropy over the labels, as in ``hybrid.tuning.loss``, so step losses compare with causal runs.
The loop is deliberately small (one process, no checkpoints, resume, data mix or early stopping); each of
those settings is refused in one line (``check_supported``), never ignored. Adapters carry the usual
card and peft's ``SEQ_2_SEQ_LM`` task type, so ``PeftModel.from_pretrained`` rebuilds the right wrapper.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from core.errors import ConfigError, InputError
from hybrid.tuning.batches import plan_epoch
from hybrid.tuning.config import TuneConfig
from hybrid.tuning.data import IGNORE_INDEX
from hybrid.tuning.seq2seq_data import Pair, collate_pairs, special_tokens_around, to_pair, to_pairs  # noqa: F401

log = logging.getLogger("hybrid.tuning.trainer")  # the name run logs carry (docs/tuning.md)

# Linear layers LoRA adapts when the config keeps its (Llama-named) default targets: T5 / FLAN-T5 / mT5
# attention (q, k, v, o) and feed-forward (wi, or gated wi_0 / wi_1, and wo); BART-family attention
# and feed-forward. Only the names the model has are used.
SEQ2SEQ_LORA_TARGETS = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo",
                        "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
# IA3's analogue of its Llama default (keys, values and the feed-forward output): (targets, feed-forward)
SEQ2SEQ_IA3_TARGETS = ((("k", "v", "wo"), ("wo",)), (("k_proj", "v_proj", "fc2"), ("fc2",)))


def is_encoder_decoder(model: Any) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def wants_seq2seq(cfg: TuneConfig, model: Any = None) -> bool:
    """Should this run train an encoder-decoder? Asks the given model, else ``cfg.base_model``'s config."""
    if model is not None:
        return is_encoder_decoder(model)
    from hybrid.generation.seq2seq import is_encoder_decoder_model

    return is_encoder_decoder_model(cfg.base_model)


def check_supported(cfg: TuneConfig, *, resume: bool = False) -> None:
    """Refuse, in one line, the settings this loop does not implement for encoder-decoder models."""
    tc, problems = cfg.train, []
    if cfg.data.train_on_prompt:
        problems.append("data.train_on_prompt (the prompt is the encoder's input, never a target)")
    if cfg.data.mix:
        problems.append("data.mix")
    if resume:
        problems.append("--resume")
    if tc.save_every:
        problems.append("train.save_every (checkpoints)")
    if tc.early_stopping_patience:
        problems.append("train.early_stopping_patience")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        problems.append("multi-process runs (torchrun / accelerate launch)")
    if problems:
        raise InputError(f"encoder-decoder tuning does not support {'; '.join(problems)}: unset it or tune "
                         "a causal model")


# ------------------------------------------------------------------------------------------------
# model and loss


def _resolve_targets(model: Any, configured: list[str], default: list[str], candidates: Sequence[str]) -> list[str]:
    """The config's targets; but a config that kept the causal default gets this model's equivalents."""
    present = {full.rsplit(".", 1)[-1] for full, _ in model.named_modules() if full}
    if list(configured) != list(default) or all(t in present for t in configured):
        return list(configured)
    picked = [t for t in candidates if t in present]
    if picked:
        log.info("target modules: %s (the default names %s are not in this encoder-decoder model)",
                 ", ".join(picked), ", ".join(default))
    return picked or list(configured)


def _lora(model: Any, cfg: TuneConfig, task: Any) -> Any:
    from peft import LoraConfig

    from hybrid.tuning.config import LoraSection
    from hybrid.tuning.methods import _check_targets

    s = cfg.lora
    targets = _resolve_targets(model, s.target_modules, LoraSection().target_modules, SEQ2SEQ_LORA_TARGETS)
    _check_targets(model, targets, "lora")
    return LoraConfig(task_type=task, r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else targets,
                      use_rslora=s.use_rslora, use_dora=s.use_dora, bias=s.bias)


def _ia3(model: Any, cfg: TuneConfig, task: Any) -> Any:
    from peft import IA3Config

    from hybrid.tuning.config import IA3Section
    from hybrid.tuning.methods import _check_targets

    s, d = cfg.ia3, IA3Section()
    targets, ff = list(s.target_modules), list(s.feedforward_modules)
    if targets == d.target_modules and ff == d.feedforward_modules:  # the Llama default: this model's analogue
        present = {full.rsplit(".", 1)[-1] for full, _ in model.named_modules() if full}
        targets, ff = next(((list(t), list(f)) for t, f in SEQ2SEQ_IA3_TARGETS if set(t) <= present), (targets, ff))
    _check_targets(model, targets, "ia3")
    return IA3Config(task_type=task, target_modules=targets, feedforward_modules=ff)


def _prompt(model: Any, cfg: TuneConfig, task: Any) -> Any:
    from peft import PromptTuningConfig

    if cfg.prompt_tuning.init_text:  # peft would fetch a tokenizer by name for it
        raise ConfigError("prompt_tuning.init_text is not supported for encoder-decoder models; leave it empty")
    return PromptTuningConfig(task_type=task, num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens)


def _prefix(model: Any, cfg: TuneConfig, task: Any) -> Any:
    from peft import PrefixTuningConfig

    s = cfg.prefix_tuning
    return PrefixTuningConfig(task_type=task, num_virtual_tokens=s.num_virtual_tokens, prefix_projection=s.prefix_projection)


# the peft config per method, with task type SEQ_2_SEQ_LM (hybrid.tuning.methods builds CAUSAL_LM ones);
# "full" needs none and uses hybrid.tuning.methods' own
PEFT_CONFIGS: dict[str, Callable[[Any, TuneConfig, Any], Any]] = {
    "lora": _lora, "ia3": _ia3, "prompt_tuning": _prompt, "prefix_tuning": _prefix}


def prepare_seq2seq_model(model: Any, cfg: TuneConfig) -> Any:
    """Wrap ``model`` for ``cfg.method`` (peft task type SEQ_2_SEQ_LM) and put it in training mode."""
    from peft import TaskType, get_peft_model

    from hybrid.tuning.methods import methods

    if cfg.method == "full":
        out = methods.get("full")(model, cfg)
    elif cfg.method not in PEFT_CONFIGS:
        raise ConfigError(f"tuning method {cfg.method!r} has no encoder-decoder variant; known: "
                          f"{', '.join(['full', *PEFT_CONFIGS])}")
    else:
        try:
            out = get_peft_model(model, PEFT_CONFIGS[cfg.method](model, cfg, TaskType.SEQ_2_SEQ_LM))
        except ValueError as e:  # peft's own checks (e.g. an incompatible module type)
            raise ConfigError(f"{cfg.method}: {str(e).splitlines()[0]}") from None
    out.train()
    return out


def seq2seq_loss_module(model: Any) -> Any:
    """An ``nn.Module``: (encoder ids, mask, labels) -> summed token cross-entropy over the labels."""
    import torch
    import torch.nn.functional as F

    from hybrid.tuning.methods import is_peft

    base = model.get_base_model() if is_peft(model) else model

    class SummedSeq2SeqLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, position_ids, targets, attention_mask=None):
            # the decoder reads the labels shifted right behind decoder_start_token_id (-100 -> pad)
            dec = base.prepare_decoder_input_ids_from_labels(labels=targets)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=dec,
                             use_cache=False)
            sel = targets != IGNORE_INDEX
            return F.cross_entropy(out.logits[sel].float(), targets[sel], reduction="sum")

    return SummedSeq2SeqLoss()


def evaluate_pairs(loss_mod: Any, pairs: Sequence[Pair], cfg: TuneConfig, *, pad_id: int, bf16: bool) -> float | None:
    """Token-weighted mean loss over ``pairs``."""
    import torch

    from hybrid.tuning.device import autocast
    from hybrid.tuning.loss import _to

    if not pairs:
        return None
    plan = plan_epoch(pairs, max_length=cfg.data.max_length, batch_tokens=cfg.train.batch_tokens, seed=0, epoch=0,
                      packing=False, shuffle=False)
    was_training = loss_mod.training
    loss_mod.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(bf16, torch.device("cpu")):
        for rows in plan:
            b = collate_pairs(rows, pad_id=pad_id)
            total += float(loss_mod(**_to(b, "cpu")))
            count += b.n_targets
    if was_training:
        loss_mod.train()
    return total / count if count else None


# ------------------------------------------------------------------------------------------------
# the loop


class _NoHooks:
    """Stands in for the trainer's ``Callbacks`` when ``train_seq2seq`` is called directly."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _batches(pairs: Sequence[Pair], cfg: TuneConfig) -> Iterator[list]:
    """Micro-batches epoch after epoch (each epoch reshuffled by its seed)."""
    epoch = 0
    while True:
        yield from plan_epoch(pairs, max_length=cfg.data.max_length, batch_tokens=cfg.train.batch_tokens,
                              seed=cfg.train.seed, epoch=epoch, packing=False)
        epoch += 1


def train_seq2seq(cfg: TuneConfig, data: Sequence[str | os.PathLike[str]] = (), out: str | os.PathLike[str] | None = None,
                  *, eval_data: Sequence[str | os.PathLike[str]] = (), resume: bool = False, model: Any = None,
                  tokenizer: Any = None, rows: Sequence[Any] | None = None,
                  on_step: Callable[[int, dict], None] | None = None, progress: bool | None = None,
                  hooks: Any = None) -> Any:
    """Train ``cfg.method`` on an encoder-decoder model; the same arguments and ``TrainResult`` as
    ``hybrid.tuning.trainer.train``. ``model``/``tokenizer`` default to ``cfg.base_model`` loaded with
    ``hybrid.generation.seq2seq.load_seq2seq_model``; ``hooks`` is the trainer's ``Callbacks``."""
    import torch

    from hybrid.chat import template_hash
    from hybrid.tuning.card import AdapterCard
    from hybrid.tuning.device import autocast, use_bf16
    from hybrid.tuning.examples import _system_prompt
    from hybrid.tuning.loss import _to, last_epoch_loss, lr_at
    from hybrid.tuning.methods import trainable_summary
    from hybrid.tuning.mix import load_run_data
    from hybrid.tuning.run_files import Metrics, run_dir_for
    from hybrid.tuning.trainer import TrainResult

    check_supported(cfg, resume=resume)
    t0 = time.perf_counter()
    tc = cfg.train
    show = tc.progress if progress is None else progress
    if tc.threads:
        torch.set_num_threads(tc.threads)
    random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    if model is None:
        from hybrid.generation.seq2seq import load_seq2seq_model
        model, tokenizer = load_seq2seq_model(cfg.base_model)
    if tokenizer is None:
        raise InputError("a tokenizer is required with a custom model")
    if not is_encoder_decoder(model):
        raise InputError(f"{type(model).__name__} is not an encoder-decoder model; tune it with hybrid.tuning.train")
    resolved = getattr(model, "hybrid_resolved", None)

    run_data = load_run_data(cfg, data, tokenizer, eval_data=eval_data, rows=rows, progress=show)
    train_p, eval_p = to_pairs(run_data.train, tokenizer), to_pairs(run_data.eval, tokenizer, "eval")
    report, files = run_data.report, run_data.files
    log.info("data: %s; %d train / %d eval pairs", report.summary(), len(train_p), len(eval_p))

    model.config.use_cache = False
    model = prepare_seq2seq_model(model, cfg)
    log.info("%s", trainable_summary(model, cfg.method))
    bf16 = use_bf16(tc.precision, torch.device("cpu"))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    loss_mod = seq2seq_loss_module(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    per_epoch = len(plan_epoch(train_p, max_length=cfg.data.max_length, batch_tokens=tc.batch_tokens,
                               seed=tc.seed, epoch=0, packing=False))
    steps_per_epoch = max(1, math.ceil(per_epoch / tc.grad_accum))
    total = tc.max_steps or max(1, math.ceil(tc.epochs * steps_per_epoch))
    run_dir = run_dir_for(out) if out is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    metrics = Metrics(run_dir / "metrics.jsonl" if run_dir else None, tc.tensorboard)
    hooks = hooks if hooks is not None else _NoHooks()
    hooks.on_start({"out": str(out) if out is not None else "", "total_steps": total, "steps_per_epoch": steps_per_epoch,
                    "train_examples": len(train_p), "eval_examples": len(eval_p), "world_size": 1, "resume": False})

    history: list[tuple[int, float]] = []
    losses: list[float] = []
    step_targets: list[int] = []
    tokens = targets_seen = padded = 0

    def run_eval(step: int) -> None:
        ev = evaluate_pairs(loss_mod, eval_p, cfg, pad_id=pad_id, bf16=bf16)
        if ev is not None:
            history.append((step, ev))
            metrics.log({"step": step, "eval_loss": ev})

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"tune {cfg.method} (seq2seq)", unit="step", disable=not show, dynamic_ncols=True)
    if eval_p and tc.eval_at_start:
        run_eval(0)
    stream = _batches(train_p, cfg)
    step_seconds = 0.0
    loss_mod.train()
    try:
        for step in range(1, total + 1):
            t_step = time.perf_counter()
            mine = [collate_pairs(next(stream), pad_id=pad_id) for _ in range(tc.grad_accum)]
            n_targets = sum(b.n_targets for b in mine)
            lr = lr_at(step - 1, total, tc)
            for g in opt.param_groups:
                g["lr"] = lr
            step_loss = 0.0
            for b in mine:
                with autocast(bf16, torch.device("cpu")):
                    loss_sum = loss_mod(**_to(b, "cpu"))
                (loss_sum / max(1, n_targets)).backward()
                step_loss += float(loss_sum.detach())
            step_loss /= max(1, n_targets)
            gnorm = torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            step_seconds += time.perf_counter() - t_step
            tokens += sum(b.n_tokens for b in mine)
            targets_seen += n_targets
            padded += sum(b.n_padded for b in mine)
            losses.append(step_loss)
            step_targets.append(n_targets)
            row: dict[str, Any] = {"step": step, "loss": step_loss, "lr": lr, "grad_norm": float(gnorm), "tokens": tokens}
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.1e}")
            if step % tc.log_every == 0 or step == total:
                metrics.log(row)
            if eval_p and ((tc.eval_every and step % tc.eval_every == 0) or step == total):
                run_eval(step)
                row["eval_loss"] = history[-1][1]
            hooks.on_log(row)
            if on_step is not None:
                on_step(step, row)
    finally:
        bar.close()
        metrics.close()

    wall = time.perf_counter() - t0
    train_loss, loss_steps = last_epoch_loss(losses, step_targets, steps_per_epoch)
    basis = f"token-weighted mean over the last {loss_steps} steps" + (
        " = one epoch" if loss_steps == steps_per_epoch else f" (less than one epoch of {steps_per_epoch})")
    rendered, template, sp_hash = _system_prompt(cfg)
    card = AdapterCard(
        base_model_id=resolved.model_id if resolved else str(getattr(model.config, "_name_or_path", "") or "custom"),
        base_model_sha=resolved.sha if resolved else "", method=cfg.method, template_hash=template_hash(tokenizer),
        system_prompt=template, system_prompt_hash=sp_hash, data=files,
        hyperparameters={"config": asdict(cfg), "world_size": 1, "bf16": bf16, "packed": False, "total_steps": total},
        train_loss=train_loss, eval_loss=history[-1][1] if history else None, wall_time_s=round(wall, 2),
        tokens_seen=tokens, steps=total,
        extra={"base_model_arg": cfg.base_model, "architecture": "encoder-decoder", "data_report": report.summary(),
               "train_loss_basis": basis, "eval_history": history, "target_tokens": targets_seen})
    hooks.on_card(card)
    saved = None
    if out is not None:
        from hybrid.tuning.save import save_adapter

        model.eval()
        extra = {"tune_config.json": json.dumps(asdict(cfg), indent=2, sort_keys=True) + "\n"}
        if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
            extra["metrics.jsonl"] = (run_dir / "metrics.jsonl").read_text(encoding="utf-8")
        saved = save_adapter(model, Path(out), card=card, tokenizer=tokenizer, extra_files=extra)
    hooks.on_end(card, saved, "FINISHED")
    return TrainResult(out=saved, card=card, steps=total, train_loss=train_loss,
                       eval_loss=history[-1][1] if history else None, eval_history=history, step_losses=losses,
                       tokens_seen=tokens, target_tokens=targets_seen, padded_tokens=padded, wall_time_s=wall,
                       train_seconds=step_seconds, train_loss_basis=basis, report=report, model=model)
