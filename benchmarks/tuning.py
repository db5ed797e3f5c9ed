"""Tuning throughput and memory: this project's loop vs a plain ``transformers.Trainer`` + ``peft``.

Both sides train the embedded SmolLM2-135M-Instruct with the same LoRA config, the same data (by default
the 175 self-instruct seed tasks in /work/shared, uneven lengths like real instruction data; ``--data
catalogue`` for the uniform sample set), rendered with the chat template and with loss on the answer
only, the same max sequence length, number of optimizer steps, LR schedule and about the same number of
examples per step, under the same precision (bf16 autocast where the CPU has native bf16). Each side runs
in its own subprocess, back to back, so peak RSS is its own. Eval loss is measured identically for both
(each held-out example alone, token-weighted mean).

    .venv/bin/python benchmarks/tuning.py --out benchmarks/results/tuning.json

The baseline follows the Trainer docs: ``get_peft_model`` + ``Trainer`` + ``DataCollatorForSeq2Seq``
padding each batch to its longest row, random sampling. Our side packs examples into rows with
per-example positions and runs the LM head only on answer tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM = "You are the shop assistant of Kestrel Outfitters, an outdoor gear shop."
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def _cfg(steps: int, max_length: int, batch_tokens: int, lr: float, seed: int):
    from core.config import load_config
    from hybrid.tuning.config import TuneConfig

    return load_config(TuneConfig, None, [], data={
        "method": "lora", "lora": LORA,
        "data": {"system_prompt": SYSTEM, "max_length": max_length, "eval_fraction": 0.1},
        "train": {"max_steps": steps, "batch_tokens": batch_tokens, "lr": lr, "warmup_steps": 2,
                  "schedule": "cosine", "eval_every": 0, "seed": seed, "progress": False,
                  "tensorboard": False, "log_every": 1}})


SELF_INSTRUCT = ROOT.parent / "shared" / "data" / "instructions" / "self-instruct-seed-tasks.jsonl"


def _records(name: str) -> list[dict]:
    """``self-instruct``: 175 real instruction tasks (Apache-2.0, first instance each), 55-400 tokens
    once rendered - the uneven lengths real instruction data has. ``catalogue``: the uniform sample set."""
    if name == "catalogue":
        from hybrid.tuning.sample import catalogue_rows

        return catalogue_rows()
    from core.io import read_jsonl

    rows = []
    for _, task in read_jsonl(SELF_INSTRUCT):
        inst = task["instances"][0]
        rows.append({"instruction": task["instruction"], "input": inst.get("input", ""),
                     "output": inst["output"], "source": task["id"]})
    return rows


def _rows(name: str):
    from hybrid.tuning.data import rows_from_records

    return rows_from_records(_records(name))[0]


def _examples(cfg, tokenizer, name: str):
    from hybrid.tuning.trainer import load_examples

    train_ex, eval_ex, _, _ = load_examples(cfg, [], tokenizer, rows=_rows(name))
    return train_ex, eval_ex


def plain_eval_loss(model, examples, bf16: bool) -> float:
    """Same measurement for both sides: each example alone, loss on answer tokens, token-weighted."""
    import torch
    import torch.nn.functional as F

    from hybrid.tuning.trainer import autocast

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(bf16, torch.device("cpu")):
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            labels = torch.tensor(ex.labels[1:])
            keep = labels != -100
            total += float(F.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_ours(a) -> dict:
    import torch

    from hybrid.models import load_base_model
    from hybrid.tuning.batches import plan_epoch
    from hybrid.tuning.trainer import train, use_bf16

    cfg = _cfg(a.steps, a.max_length, a.batch_tokens, a.lr, a.seed)
    model, tok = load_base_model()
    train_ex, eval_ex = _examples(cfg, tok, a.data)
    plan = plan_epoch(train_ex, max_length=cfg.pack_length(), batch_tokens=cfg.train.batch_tokens,
                      seed=cfg.train.seed, epoch=0)
    per_batch = sum(len(row) for mb in plan for row in mb) / len(plan)  # examples per step (grad_accum=1)
    res = train(cfg, [], None, model=model, tokenizer=tok, rows=_rows(a.data), progress=False)
    bf16 = use_bf16("auto", torch.device("cpu"))
    ev = plain_eval_loss(res.model, eval_ex, bf16)
    return {"useful_tokens": res.tokens_seen, "train_seconds": res.train_seconds,
            "useful_tokens_per_s": res.tokens_seen / res.train_seconds,
            "padded_tokens": res.padded_tokens, "examples_per_step": per_batch,
            "steps": res.steps, "eval_loss": ev, "bf16": bf16, "peak_rss_mb": _peak_rss_mb(),
            "train_loss_last": res.step_losses[-1]}



def child_baseline(a) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from hybrid.models import load_base_model
    from hybrid.tuning.trainer import use_bf16

    cfg = _cfg(a.steps, a.max_length, a.batch_tokens, a.lr, a.seed)
    model, tok = load_base_model()
    train_ex, eval_ex = _examples(cfg, tok, a.data)  # same rendering, masking and split as ours
    train_ds = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e), "labels": e.labels} for e in train_ex]
    model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=LORA["r"], lora_alpha=LORA["alpha"],
                                             lora_dropout=LORA["dropout"], target_modules=LORA["target_modules"]))
    bf16 = use_bf16("auto", torch.device("cpu"))
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    counted = {"useful": 0, "padded": 0}

    def counting_collator(features):
        batch = collator(features)
        counted["useful"] += int(batch["attention_mask"].sum())
        counted["padded"] += int(batch["attention_mask"].numel())
        return batch

    args = TrainingArguments(
        output_dir=str(Path(a.workdir) / "baseline"), per_device_train_batch_size=a.baseline_batch,
        max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="cosine", warmup_steps=2,
        logging_steps=1, save_strategy="no", report_to=[], bf16=bf16, use_cpu=True, seed=a.seed,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=counting_collator)
    t0 = time.perf_counter()
    out = trainer.train()
    secs = time.perf_counter() - t0
    ev = plain_eval_loss(model, eval_ex, bf16)
    return {"useful_tokens": counted["useful"], "padded_tokens": counted["padded"], "train_seconds": secs,
            "useful_tokens_per_s": counted["useful"] / secs, "examples_per_step": a.baseline_batch,
            "steps": out.global_step, "eval_loss": ev, "bf16": bf16, "peak_rss_mb": _peak_rss_mb(),
            "train_loss_last": trainer.state.log_history[-2].get("loss") if len(trainer.state.log_history) > 1
            else None}


def child_peak(a) -> dict:
    """Measured matmul peak (GFLOP/s) in fp32 and bf16 with this process's threads."""
    import torch

    out = {"threads": torch.get_num_threads()}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(2048, 2048, dtype=dt)
        y = torch.randn(2048, 2048, dtype=dt)
        x @ y
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(3):
                x @ y
            best = max(best, 3 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
        out[f"{name}_gflops"] = best
    return out


def model_flops_per_token() -> dict:
    """LoRA training FLOPs per token: forward 2N + backward 2N (activation grads; frozen weights need no
    weight grads), N = decoder matmul params, plus the LM head on answer tokens. LoRA's own matmuls and
    attention scores are left out (small at r=16, L<=128), so MFU is slightly understated."""
    from hybrid.models import resolve_model

    cfg = json.loads((resolve_model().path / "config.json").read_text())
    d, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = d // heads
    per_layer = d * d * 2 + 2 * d * kv * hd + 3 * d * f
    return {"body_params": per_layer * layers, "head_params": d * cfg["vocab_size"],
            "flops_per_token": 4 * per_layer * layers}


def run_child(kind: str, a, nice: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--steps", str(a.steps), "--max-length", str(a.max_length),
           "--batch-tokens", str(a.batch_tokens), "--baseline-batch", str(a.baseline_batch), "--lr", str(a.lr),
           "--seed", str(a.seed), "--workdir", a.workdir, "--data", a.data]
    if nice:
        cmd = ["nice", "-n", str(nice)] + cmd
    load_before = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                                    "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} failed")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t
    res["loadavg_before"] = [round(x, 2) for x in load_before]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--data", choices=["self-instruct", "catalogue"], default="self-instruct")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-tokens", type=int, default=1024)
    p.add_argument("--baseline-batch", type=int, default=0, help="0 = match our examples per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tuning.json"))
    p.add_argument("--workdir", default="/tmp/hybrid-bench-tuning")
    p.add_argument("--child", choices=["ours", "baseline", "peak"], default=None)
    a = p.parse_args()
    if a.child:
        fn = {"ours": child_ours, "baseline": child_baseline, "peak": child_peak}[a.child]
        print(json.dumps(fn(a)))
        return
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    if busy and "OMP_NUM_THREADS" not in os.environ:
        # On a machine already busier than its cores, OpenMP threads spin against other jobs and both
        # sides slow down ~5x and erratically; one thread each gives stable, comparable numbers.
        os.environ["OMP_NUM_THREADS"] = "1"
    threads = os.environ.get("OMP_NUM_THREADS")
    peak = run_child("peak", a, a.nice)
    ours = run_child("ours", a, a.nice)
    if not a.baseline_batch:
        a.baseline_batch = max(1, round(ours["examples_per_step"]))
    base = run_child("baseline", a, a.nice)
    fpt = model_flops_per_token()
    for side in (ours, base):
        achieved = side["useful_tokens_per_s"] * fpt["flops_per_token"] / 1e9
        side["achieved_gflops"] = achieved
        side["mfu_vs_bf16_peak" if side["bf16"] else "mfu_vs_fp32_peak"] = achieved / (
            peak["bf16_gflops"] if side["bf16"] else peak["fp32_gflops"])
        side["padding_share"] = 1 - side["useful_tokens"] / max(1, side["padded_tokens"])
    ratios = {"useful_tokens_per_s": ours["useful_tokens_per_s"] / base["useful_tokens_per_s"],
              "peak_rss": ours["peak_rss_mb"] / base["peak_rss_mb"],
              "eval_loss": ours["eval_loss"] / base["eval_loss"]}
    result = {
        "benchmark": "tuning: LoRA r=16 on SmolLM2-135M-Instruct, same data/steps/lr/schedule/precision",
        "command": "python benchmarks/tuning.py " + " ".join(sys.argv[1:]),
        "settings": {"data": a.data, "steps": a.steps, "max_length": a.max_length, "our_batch_tokens": a.batch_tokens,
                     "baseline_batch_size": a.baseline_batch, "lr": a.lr, "seed": a.seed, "lora": LORA,
                     "omp_num_threads": threads, "nice": a.nice},
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "matmul_peak": peak, "model_flops": fpt,
                    "contention": "shared with other jobs; see loadavg_before/after per side "
                                  "(1/5/15-min load; > cpus means we got a fraction of the CPU)"},
        "ours": ours, "baseline_trainer_peft": base, "ratios_ours_over_baseline": ratios,
        "targets": {"useful_tokens_per_s_ratio >= 1.3": ratios["useful_tokens_per_s"] >= 1.3,
                    "peak_rss_ratio <= 0.9": ratios["peak_rss"] <= 0.9,
                    "eval_loss_no_worse_within_2pct": ours["eval_loss"] <= base["eval_loss"] * 1.02,
                    "eval_loss_strictly_no_worse": ours["eval_loss"] <= base["eval_loss"]},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "targets": result["targets"],
                      "ours_tok_s": ours["useful_tokens_per_s"], "base_tok_s": base["useful_tokens_per_s"]}, indent=2))


if __name__ == "__main__":
    main()
