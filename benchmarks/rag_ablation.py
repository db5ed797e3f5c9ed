"""Why does ``rag`` lose to a plain LangChain chain? One factor at a time, on a dev split.

Each variant changes one setting of the app (``--set``-style overrides) and answers the same sampled
dev questions with ``rag``; the LangChain chain (plain greedy defaults, the same generator, embedder
and ``max_new_tokens``) answers them once. Scores are token F1 against the gold spans, and every
variant is compared with the chain and with the app's current defaults by a paired bootstrap over
the same questions.

    benchmarks/rag_ablation.py --app /tmp/apps/covid --questions /tmp/apps/covid/questions/dev.jsonl -n 60 \\
        --out benchmarks/results/rag-ablation-covidqa.json

The questions must come from documents kept out of the test part (``hybrid app import`` writes
``questions/dev.jsonl`` for exactly this): settings are chosen here and reported on ``test.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._util import machine_info, write_json  # noqa: E402

# name -> overrides, each one factor away from the app's defaults ("defaults": none)
VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "repetition_penalty=1.0": ["generation.repetition_penalty=1.0"],
    "k=3": ["rag.k=3"],
    "max_prompt_tokens=768": ["generation.max_prompt_tokens=768"],
    "chunk_size=400": ["knowledge_base.chunk_size=400", "knowledge_base.chunk_overlap=60"],
    "framing=plain": ["rag.framing=plain"],
    "answer_style=short": ["rag.answer_style=short"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--app", required=True, help="app directory (its KB is built from its sources when missing)")
    ap.add_argument("--questions", required=True, help="dev questions (JSONL), never the test part")
    ap.add_argument("-n", "--limit", type=int, default=60, help="seeded sample of dev questions")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="an override applied to every variant and to the chain's max_new_tokens")
    ap.add_argument("--work", default=None, help="report and cache directory (default: .cache/ablation/<app>)")
    ap.add_argument("--out", required=True, help="JSON results")
    args = ap.parse_args(argv)

    import dataclasses

    from hybrid.app import load_app
    from hybrid.eval.baseline import langchain_rag_baseline
    from hybrid.eval.runner import EvalConfig, run_eval
    from hybrid.eval.stats import bootstrap_ci, paired_bootstrap
    from hybrid.pipeline import Assistant, build_kb

    info = machine_info()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    base = load_app(args.app, args.extra)
    work = Path(args.work or Path(".cache/ablation") / base.name).resolve()
    results: dict[str, dict] = {}
    scores: dict[str, dict[str, float]] = {}
    embedder = None
    generator = None
    for name in names:
        over = list(args.extra) + VARIANTS[name]
        app = load_app(args.app, over)
        kb_tag = f"c{app.knowledge_base.chunk_size}-o{app.knowledge_base.chunk_overlap}"
        app = dataclasses.replace(app, knowledge_base=dataclasses.replace(
            app.knowledge_base, path=str(work / f"kb-{kb_tag}")))
        bot = Assistant(app, embedder=embedder, generator=generator)
        embedder, generator = bot.embedder, bot.generator
        t = time.perf_counter()
        if bot.knowledge_base is None:
            bot = Assistant(app, embedder=embedder, generator=generator,
                            knowledge_base=build_kb(app, embedder, progress=True))
        with_chain = name == names[0]
        cfg = EvalConfig(strategies=["rag"] + (["langchain"] if with_chain else []), limit=args.limit,
                         learned_cv=False)
        res = run_eval(app, args.questions, work / "report", cfg, assistant=bot, progress=True,
                       baseline=langchain_rag_baseline if with_chain else None)
        for r in res.rows:
            if r["strategy"] in ("rag", "langchain"):
                key = name if r["strategy"] == "rag" else "langchain chain"
                scores.setdefault(key, {})[r["question_id"]] = float(r["scores"]["primary"])
        results[name] = {"overrides": VARIANTS[name], "seconds": round(time.perf_counter() - t, 1),
                         "computed": res.computed, "cached": res.cached,
                         "retrieval": res.summary.get("retrieval")}
        print(f"{name:28s} rag F1 {sum(scores[name].values()) / len(scores[name]):.4f}  "
              f"({results[name]['seconds']} s)", flush=True)

    chain = scores["langchain chain"]
    qids = sorted(chain)
    table = []
    for name in ["langchain chain", *names]:
        vals = [scores[name][q] for q in qids]
        lo, hi = bootstrap_ci(vals)
        row = {"system": name, "f1": round(sum(vals) / len(vals), 4), "ci": [round(lo, 4), round(hi, 4)]}
        if name != "langchain chain":
            d, (dlo, dhi), p = paired_bootstrap(vals, [chain[q] for q in qids])
            row["vs_chain"] = {"diff": round(d, 4), "ci": [round(dlo, 4), round(dhi, 4)], "p": round(p, 4)}
            if name != names[0]:
                d, (dlo, dhi), p = paired_bootstrap(vals, [scores[names[0]][q] for q in qids])
                row["vs_defaults"] = {"diff": round(d, 4), "ci": [round(dlo, 4), round(dhi, 4)], "p": round(p, 4)}
        table.append(row)
        print(f"{name:28s} {row['f1']:.4f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]"
              + (f"  vs chain {row['vs_chain']['diff']:+.4f} (p={row['vs_chain']['p']:.3f})" if "vs_chain" in row else "")
              + (f"  vs defaults {row['vs_defaults']['diff']:+.4f} (p={row['vs_defaults']['p']:.3f})"
                 if "vs_defaults" in row else ""))
    info["loadavg_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    write_json(Path(args.out), {"app": base.name, "questions": args.questions, "n": len(qids),
                                "extra_overrides": args.extra, "machine": info, "variants": results,
                                "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
