"""Forgetting: what an adapter costs the base model on general tasks that have nothing to do with its domain.

The base model and the base model with the adapter answer the same held-out general instructions (the
self-instruct seed tasks in ``../shared/data/instructions/``, never used for tuning); both are scored by
token F1 and ROUGE-L against the references, and both get a perplexity on the references as a general
text sample. The drop is base minus adapter, per task, with a paired bootstrap CI::

    tasks = general_tasks(".../self-instruct-seed-tasks.jsonl", limit=40)
    rep = measure_forgetting(model, tokenizer, "adapters/legal", tasks)
    rep["drop"]["f1"]   # {"mean": 0.03, "ci95": [0.01, 0.05], "p": 0.01}
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import InputError


@dataclass
class GeneralTask:
    id: str
    prompt: str
    reference: str


def general_tasks(path: str | os.PathLike[str], *, limit: int | None = None, seed: int = 0) -> list[GeneralTask]:
    """Self-instruct rows (``instruction``, ``instances[0].input/output``); rows without a usable output are
    skipped. ``limit`` takes a seeded sample."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"general task set not found: {p}")
    tasks: list[GeneralTask] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            inst = (obj.get("instances") or [{}])[0]
            prompt = str(obj["instruction"]).strip()
            if str(inst.get("input") or "").strip():
                prompt += "\n\n" + str(inst["input"]).strip()
            ref = str(inst.get("output") or "").strip()
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError):
            continue
        if prompt and ref:
            tasks.append(GeneralTask(str(obj.get("id", f"line-{n}")), prompt, ref))
    if not tasks:
        raise InputError(f"{p}: no usable general tasks (instruction + instances[0].output)")
    if limit is not None and limit < len(tasks):
        tasks = sorted(random.Random(seed).sample(tasks, limit), key=lambda t: t.id)
    return tasks


def _answers(model: Any, tokenizer: Any, tasks: Sequence[GeneralTask], max_new_tokens: int) -> list[str]:
    import torch

    out = []
    model.eval()
    for t in tasks:
        text = tokenizer.apply_chat_template([{"role": "user", "content": t.prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def _nll(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = 256) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, predicted tokens) per text, as plain text."""
    import torch
    import torch.nn.functional as F

    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :max_tokens]
        if ids.shape[1] < 2:
            out.append((0.0, 0))
            continue
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        out.append((float(F.cross_entropy(logits, ids[0, 1:], reduction="sum")), int(ids.shape[1] - 1)))
    return out


def _side(model: Any, tokenizer: Any, tasks: Sequence[GeneralTask], max_new_tokens: int) -> dict[str, Any]:
    from hybrid.eval.metrics import rouge_l, token_f1

    answers = _answers(model, tokenizer, tasks, max_new_tokens)
    nll = _nll(model, tokenizer, [t.reference for t in tasks])
    return {"answers": answers, "f1": [token_f1(a, t.reference) for a, t in zip(answers, tasks)],
            "rouge_l": [rouge_l(a, t.reference) for a, t in zip(answers, tasks)],
            "nll": [s / n if n else 0.0 for s, n in nll],
            "ppl": math.exp(sum(s for s, _ in nll) / max(1, sum(n for _, n in nll)))}


def measure_forgetting(model: Any, tokenizer: Any, adapter: str | os.PathLike[str], tasks: Sequence[GeneralTask],
                       *, max_new_tokens: int = 48, seed: int = 0) -> dict[str, Any]:
    """Base vs base+adapter on ``tasks``. ``model`` must be the bare base model: the adapter is attached
    to it here (after the base side is measured), so it is changed in place."""
    from hybrid.eval.stats import paired_bootstrap
    from hybrid.tuning.save import load_adapter

    base = _side(model, tokenizer, tasks, max_new_tokens)
    tuned = _side(load_adapter(model, adapter), tokenizer, tasks, max_new_tokens)
    drop = {}
    for m in ("f1", "rouge_l"):
        mean, (lo, hi), p = paired_bootstrap(base[m], tuned[m], seed=seed)
        drop[m] = {"mean": mean, "ci95": [lo, hi], "p": p}
    mean, (lo, hi), p = paired_bootstrap(tuned["nll"], base["nll"], seed=seed)
    drop["nll_per_token"] = {"mean": mean, "ci95": [lo, hi], "p": p}  # > 0: the adapter finds general text less likely
    avg = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"adapter": str(adapter), "n_tasks": len(tasks), "max_new_tokens": max_new_tokens,
            "base": {"f1": avg(base["f1"]), "rouge_l": avg(base["rouge_l"]), "ppl": base["ppl"]},
            "adapter_scores": {"f1": avg(tuned["f1"]), "rouge_l": avg(tuned["rouge_l"]), "ppl": tuned["ppl"]},
            "drop": drop, "per_task": [{"id": t.id, "base": b, "adapter": a}
                                       for t, b, a in zip(tasks, base["answers"], tuned["answers"])]}


def forgetting_markdown(rep: dict[str, Any]) -> str:
    b, a, d = rep["base"], rep["adapter_scores"], rep["drop"]

    def row(name: str, key: str) -> str:
        x = d[key]
        return (f"| {name} | {b[key]:.4f} | {a[key]:.4f} | {x['mean']:+.4f} | "
                f"[{x['ci95'][0]:+.4f}, {x['ci95'][1]:+.4f}] | {x['p']:.3f} |")

    x = d["nll_per_token"]
    return "\n".join([
        f"Forgetting of `{rep['adapter']}` on {rep['n_tasks']} general tasks (greedy, {rep['max_new_tokens']} new "
        "tokens); drop = base - adapter (positive: the adapter does worse), paired bootstrap 95% CI:", "",
        "| metric | base | adapter | drop | 95% CI | p |", "|---|---:|---:|---:|---|---:|",
        row("token F1", "f1"), row("ROUGE-L", "rouge_l"),
        f"| perplexity on the references | {b['ppl']:.2f} | {a['ppl']:.2f} | {x['mean']:+.4f} nats/token | "
        f"[{x['ci95'][0]:+.4f}, {x['ci95'][1]:+.4f}] | {x['p']:.3f} |", ""])
