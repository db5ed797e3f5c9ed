"""Batch prefill paths on real rag prompts: 8 answers one by one vs one batch, padded or row by row.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/batch_prefill.py            # apps/legal, 32 new, 1 thread
    .venv/bin/python benchmarks/batch_prefill.py --paths fp32_solo,fp32_rows --new 8

The 8 questions of ``benchmarks/serving.py``, each built into its ``rag`` prompt by the app's own
pipeline, then generated through ``HFGenerator._run`` (the path both the batching server and
``hybrid eval`` take), with every answer forced to ``--new`` tokens so all paths do the same work.
Paths: ``fp32_solo`` (one at a time, today's unbatched server), ``{fp32,bf16}_{pad,rows}``: one
batch of 8, bf16 being the weight copy batches use on bf16 CPUs, ``pad`` the single padded prefill
(``HFGenerator.row_prefill = False``), ``rows`` each prompt prefilled alone. Prints JSON; writes
nothing. Figures quoted in docs/serving.md ("Batches prefill row by row").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default=str(ROOT / "apps" / "legal"))
    ap.add_argument("--new", type=int, default=32, help="new tokens per answer (forced)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--paths", default="fp32_solo,bf16_pad,bf16_rows,fp32_pad,fp32_rows")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from benchmarks.serving import QUESTIONS
    from hybrid.generation import make_params
    from hybrid.pipeline import Assistant

    torch.set_num_threads(args.threads)
    bot = Assistant.from_dir(args.app, [f"generation.max_new_tokens={args.new}"])
    bot.warm_up()
    gen = bot.generator
    gen.warm_up()
    gen.threads = args.threads
    rows = []
    for q in QUESTIONS:
        p = bot.prepare(q, None, "rag", None, None)
        if not p.prompt.messages:
            raise SystemExit(f"no rag prompt for {q!r}: {p.prompt.notices}")
        rows.append(gen._prepare(p.prompt.messages, None, p.prompt.params or p.ctx.params))
    kwargs = gen._generation_kwargs
    gen._generation_kwargs = lambda p: {**kwargs(p), "min_new_tokens": p.max_new_tokens}  # same work on every path
    params = make_params(max_new_tokens=args.new, repetition_penalty=bot.app.generation.repetition_penalty)

    def run(batch: list[list[int]]) -> float:
        t = time.perf_counter()
        out = gen._run(batch, None, params, threading.Event(), [0])
        assert all(len(o) == args.new for o in out), [len(o) for o in out]
        return time.perf_counter() - t

    res: dict = {"app": Path(args.app).name, "threads": args.threads, "new_tokens": args.new,
                 "prompt_tokens": [len(r) for r in rows], "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    run([rows[0]])  # warm
    for path in [p.strip() for p in args.paths.split(",") if p.strip()]:
        dtype, how = path.split("_")
        gen._bf16, gen.row_prefill = dtype == "bf16", how == "rows"
        if how == "solo":
            each = [run([r]) for r in rows]
            res[path] = {"s": round(sum(each), 2), "each_s": [round(x, 2) for x in each]}
        else:
            run(rows[:2])  # warm (the bf16 copy is made on first use)
            res[path] = {"s": round(run(rows), 2)}
        print(path, res[path], flush=True)
    if "fp32_solo" in res:
        for path, r in res.items():
            if isinstance(r, dict) and "s" in r and path != "fp32_solo":
                r["x_one_by_one"] = round(res["fp32_solo"]["s"] / r["s"], 2)
    res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
