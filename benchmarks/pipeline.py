"""Routing overhead and end-to-end latency per strategy on the embedded models (legal app).

    python benchmarks/pipeline.py [--app apps/legal] [-n 6] [--max-new-tokens 64] [--out benchmarks/results/pipeline.json]

For every question (a mix of the app's held-out types) it answers once per fixed strategy and once
through the router (``auto``), with MiniLM + SmolLM2-135M on CPU, all components warmed up first.
The router's cost is counted conservatively: its decision time (signals + scoring), plus the query
embedding, plus the retrieval it triggers whenever the chosen strategy does not reuse it (rag and
tuned_rag reuse it). The fixed strategies are the anchor: they are
what a user runs without a router. Target: router overhead < 5% of the median end-to-end latency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._util import percentile  # noqa: E402


def pct(xs, q):
    """The nearest observed value at quantile ``q`` (0-1); None for no values."""
    return percentile(xs, 100 * q, method="nearest") if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", default=str(ROOT / "apps" / "legal"))
    ap.add_argument("-n", type=int, default=6, help="questions (mixed types)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0 = torch's default); on a shared, oversubscribed CPU one "
                         "thread avoids OpenMP threads spinning against each other")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from hybrid.app import load_app
    from hybrid.pipeline import Assistant, demo_questions

    load0 = os.getloadavg()
    app = load_app(args.app, [f"generation.max_new_tokens={args.max_new_tokens}"])
    t = time.perf_counter()
    bot = Assistant(app).warm_up()
    warm = time.perf_counter() - t
    excluded = bot.excluded()
    from hybrid.strategies import strategy_names

    # every registered strategy that generates (extract quotes a span, no generation to time)
    strategies = [s for s in strategy_names() if s != "extract" and s not in excluded]
    questions = demo_questions(app, args.n)
    bot.ask(questions[0], strategy=strategies[0])  # first generation pays one-off kernel setup

    rows = []
    for q in questions:
        for s in [*strategies, "auto"]:
            ans = bot.ask(q, strategy=s)
            tm = ans.timings
            rows.append({"question": q[:80], "requested": s, "strategy": ans.strategy,
                         "total_s": tm.get("total", 0.0), "route_s": tm.get("route", 0.0),
                         "retrieve_s": tm.get("retrieve", 0.0), "embed_s": tm.get("embed", 0.0),
                         "generate_s": tm.get("generate", 0.0), "prompt_tokens": ans.usage.get("prompt_tokens", 0),
                         "completion_tokens": ans.usage.get("completion_tokens", 0)})
            print(f"{s:>9} -> {ans.strategy:<9} total {tm.get('total', 0):6.2f}s  route {tm.get('route', 0)*1000:6.1f}ms"
                  f"  generate {tm.get('generate', 0):6.2f}s", flush=True)

    per = {}
    for s in [*strategies, "auto"]:
        rs = [r for r in rows if r["requested"] == s]
        per[s] = {"n": len(rs), "median_total_s": statistics.median(r["total_s"] for r in rs),
                  "p90_total_s": pct([r["total_s"] for r in rs], 0.9),
                  "median_generate_s": statistics.median(r["generate_s"] for r in rs),
                  "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in rs),
                  "median_completion_tokens": statistics.median(r["completion_tokens"] for r in rs)}
    auto = [r for r in rows if r["requested"] == "auto"]
    # the router's own cost, counted conservatively: its decision, the query embedding (few_shot
    # reuses it, tuned does not) and the retrieval when the chosen strategy does not reuse it
    overhead = [r["route_s"] + r["embed_s"] + (r["retrieve_s"] if r["strategy"] not in ("rag", "tuned_rag") else 0.0)
                for r in auto]
    med_total = statistics.median(r["total_s"] for r in auto)
    share = statistics.median(overhead) / med_total if med_total else None
    fixed_median = statistics.median(r["total_s"] for r in rows if r["requested"] != "auto")
    result = {
        "benchmark": "pipeline routing overhead and latency per strategy",
        "command": "python benchmarks/pipeline.py " + " ".join(sys.argv[1:]),
        "app": app.name, "router": app.router.kind, "questions": len(questions),
        "max_new_tokens": args.max_new_tokens,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "load_average_at_start": load0,
                    "load_average_at_end": os.getloadavg()},
        "warm_up_s": round(warm, 2), "excluded": excluded,
        "per_strategy": per,
        "router": {"median_decision_s": statistics.median(r["route_s"] for r in auto),
                   "median_overhead_s": statistics.median(overhead),
                   "max_overhead_s": max(overhead),
                   "median_auto_total_s": med_total,
                   "median_fixed_total_s": fixed_median,
                   "overhead_share_of_median_latency": share,
                   "target": "< 0.05", "target_met": share is not None and share < 0.05,
                   "routes": {s: sum(1 for r in auto if r["strategy"] == s) for s in set(r["strategy"] for r in auto)}},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("per_strategy", "router")}, indent=2))


if __name__ == "__main__":
    main()
