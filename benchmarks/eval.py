"""Evaluation throughput: batched ``hybrid eval`` versus answering one by one through ``pipeline.ask``.

    python benchmarks/eval.py --app apps/legal --questions apps/legal/questions.jsonl -n 16

Both sides use one warmed-up ``Assistant`` (same generator, knowledge base and settings), so the
only difference is batching. Writes ``benchmarks/results/eval.json`` with questions per minute per
strategy and the ratio (target: batched >= 2x one-by-one).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._util import RESULTS, SHARED_MACHINE_NOTE  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default="apps/legal")
    ap.add_argument("--questions", default="apps/legal/questions.jsonl")
    ap.add_argument("-n", "--limit", type=int, default=16)
    ap.add_argument("--strategies", default="few_shot,rag")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on both sides (1 was far faster on the busy 2-core machine); 0 = torch's default")
    ap.add_argument("--out", default=str(RESULTS / "eval.json"))
    args = ap.parse_args(argv)
    import os

    previous = None
    if Path(args.out).is_file():  # kept for comparison: what the last run measured
        try:
            old = json.loads(Path(args.out).read_text())
            previous = {k: old[k] for k in ("strategies", "note", "machine", "rag_breakdown", "threads") if k in old}
        except (OSError, ValueError):
            previous = None
    load_start = [round(x, 2) for x in os.getloadavg()]

    import dataclasses

    from hybrid.app import load_app
    from hybrid.eval.data import load_questions
    from hybrid.eval.runner import EvalConfig, run_eval
    from hybrid.pipeline import Assistant

    app = load_app(args.app)
    app = dataclasses.replace(app, generation=dataclasses.replace(app.generation, max_new_tokens=args.max_new_tokens))
    bot = Assistant(app, date="2026-01-01")
    bot.generator.batch_size = args.batch_size
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # this thread: one-by-one answers and the eval both run here
        bot.generator.threads = args.threads
    bot.warm_up()
    qs = load_questions(args.questions)
    cfg = EvalConfig(strategies=["few_shot"], limit=args.limit, batch_size=args.limit, threads=args.threads or None)
    sample = sorted(__import__("random").Random(cfg.seed).sample(qs.questions, min(args.limit, len(qs.questions))),
                    key=lambda q: q.id)
    results = {}
    for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        t = time.perf_counter()
        for q in sample:
            bot.ask(q.question, strategy=strategy)
        one = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:  # a fresh cache: every answer is computed
            t = time.perf_counter()
            res = run_eval(None, qs, d, dataclasses.replace(cfg, strategies=[strategy], limit=len(sample),
                                                           batch_size=len(sample)),
                           assistant=bot, progress=False)
            batched = time.perf_counter() - t
            assert res.computed == len(sample), res.computed
        results[strategy] = {
            "questions": len(sample),
            "one_by_one_qpm": round(60 * len(sample) / one, 2),
            "batched_qpm": round(60 * len(sample) / batched, 2),
            "speedup": round(one / batched, 2),
            "one_by_one_s": round(one, 2), "batched_s": round(batched, 2),
        }
        print(strategy, results[strategy], flush=True)
    out = {
        "benchmark": "eval throughput: batched hybrid eval vs pipeline.ask in a loop",
        "app": app.name, "model": bot.generator.model_id, "max_new_tokens": args.max_new_tokens,
        "generator_batch_size": args.batch_size, "strategies": results,
        "target": "batched >= 2x one-by-one questions per minute",
        "note": "includes report writing (plots) on the batched side; " + SHARED_MACHINE_NOTE,
        "threads": args.threads or "torch default",
        "batches": "each prompt prefilled alone (hybrid.generation.prefill), then decoded together; on bf16 "
                   "CPUs a bf16 weight copy without adapters, bf16-autocast prefill and fp32 decoding with them",
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start,
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "previous_run": previous,
    }
    from core.io import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
