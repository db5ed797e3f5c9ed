"""Which zero-shot sentence selection should ``extract`` use? One factor at a time, on dev parts only.

Step 1 (``collect``, once per app): every sampled dev question goes through ``Assistant.prepare`` with
``strategy="extract"``, exactly as ``hybrid eval --strategies extract`` answers it; the top ``--depth``
hits in retrieval order (with their relevance), the query vector and the strategy's own answer are
cached as JSON. A variant's ``k`` (default: what extract reads, ``ZERO_SHOT_K``) takes the first k of
them and keeps those with relevance >= ``rag.min_score``, best first, as extract does. Step 2 (``score``): each selection variant
(``hybrid.reader.zero_shot.ZeroShot`` settings) re-selects a sentence from the cached chunks, with
sentence embeddings cached by text, and is scored with the token F1 of ``hybrid.eval.metrics`` (below
the zero-shot threshold the answer is the app's don't-know sentence, as in the strategy). Every
variant is compared with today's selector by a paired bootstrap over the same questions.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/extract_ablation.py \\
        --app covid=/tmp/apps/covid --app policy=/tmp/apps/policy --out benchmarks/results/extract-ablation-dev.json

``--questions`` defaults to each app's ``questions/dev.jsonl``: settings are chosen here and only then
reported on ``test.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._util import machine_info, write_json  # noqa: E402
from hybrid.reader.zero_shot import SentenceVectors  # noqa: E402

# name -> ZeroShot settings. "baseline" is the selector before the retrieval prior (rank_prior 0); each
# variant below it is one factor away from it; "default" is ZeroShot() as shipped; "default+..." one
# factor away from the default.
_OLD = {"rank_prior": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": _OLD,
    "embed_weight=0.3": {**_OLD, "embed_weight": 0.3},
    "embed_weight=0.7": {**_OLD, "embed_weight": 0.7},
    **{f"rank_prior={a}": {"rank_prior": a} for a in (0.1, 0.2, 0.3, 0.5, 1.0)},
    "neighbour=0.3": {**_OLD, "neighbour": 0.3},
    "neighbour=0.5": {**_OLD, "neighbour": 0.5},
    "splitter=careful": {**_OLD, "splitter": "careful"},
    "restate_penalty=0.1": {**_OLD, "restate_penalty": 0.1},
    "restate_penalty=0.2": {**_OLD, "restate_penalty": 0.2},
    "answer_type=0.05": {**_OLD, "answer_type": 0.05},
    "answer_type=0.1": {**_OLD, "answer_type": 0.1},
    "default": {},
    "default+embed_weight=0.6": {"embed_weight": 0.6},
    "default+embed_weight=0.7": {"embed_weight": 0.7},
    "default+neighbour=0.5": {"neighbour": 0.5},
    "default+splitter=careful": {"splitter": "careful"},
    "default+restate_penalty=0.2": {"restate_penalty": 0.2},
    # session 12: how many chunks zero-shot selection reads (it read rag.k = 6), and the closing
    # reference markers; "k=6" is the selector before that change, the reference for these
    "k=6": {"k": 6, "tail_citations": True},
    **{f"k={k}": {"k": k, "tail_citations": True} for k in (4, 8, 10, 12, 16)},
    "k=6+markers cut": {"k": 6},
}


class CachedEmbedder(SentenceVectors):
    """The app's sentence-vector cache (``SentenceVectors``), unbounded and kept on disk as .npy + .json
    (no pickle), so later runs embed nothing they already did."""

    def __init__(self, inner, path: Path):
        super().__init__(inner, size=sys.maxsize)
        self.path = path
        keys, arr = path.with_suffix(".json"), path.with_suffix(".npy")
        if keys.exists() and arr.exists():
            self._vecs.update(zip(json.loads(keys.read_text()), np.load(arr, allow_pickle=False)))

    def embed(self, texts, **_: Any) -> np.ndarray:
        if self.inner is None and any(t not in self._vecs for t in texts):
            raise RuntimeError("texts not in the embedding cache and no embedder loaded")
        return super().embed(texts, batch_size=64)

    def save(self) -> None:
        keys = list(self._vecs)
        tmp = self.path.with_suffix(".tmp.npy")
        np.save(tmp, np.stack([self._vecs[k] for k in keys]) if keys else np.zeros((0, 384), np.float32))
        tmp.replace(self.path.with_suffix(".npy"))
        self.path.with_suffix(".json").write_text(json.dumps(keys))


def collect(app_dir: str, questions: str, limit: int | None, seed: int, cache: Path,
            depth: int = 16) -> tuple[list[dict], Any]:
    """Retrieve the top ``depth`` hits once per question (or load them from ``cache``)."""
    from hybrid.app import load_app
    from hybrid.eval.data import load_questions
    from hybrid.pipeline import Assistant
    from hybrid.strategies.base import relevance

    bot = Assistant(load_app(app_dir))
    if cache.exists():
        return json.loads(cache.read_text()), bot.embedder
    qlist = list(load_questions(questions).questions)
    if limit is not None and limit < len(qlist):
        qlist = sorted(random.Random(seed).sample(qlist, limit), key=lambda q: q.id)
    rows = []
    for q in qlist:
        ready = bot.prepare(q.question, None, "extract", filters=q.filter)
        ctx = ready.ctx
        hits = ctx.retrieve(depth)  # retrieval order; the top k of it is what a k-deep search returns
        rows.append({"id": q.id, "question": q.question.strip(), "answers": list(q.answers or [""]),
                     "hits": [h.chunk.text for h in hits], "relevance": [float(relevance(h)) for h in hits],
                     "min_score": ctx.min_score,
                     "query_vec": [float(x) for x in ctx.query_vec], "dont_know": ctx.dont_know,
                     "strategy_answer": ready.prompt.direct or "",
                     "strategy_confidence": float(ready.prompt.confidence or 0.0)})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows))
    return rows, bot.embedder


def contexts(row: dict, k: int) -> tuple[list[str], list[float]]:
    """The chunks extract reads from the first ``k`` hits, best first, and their relevance."""
    top = sorted((p for p in zip(row["hits"][:k], row["relevance"][:k]) if p[1] >= row["min_score"]),
                 key=lambda p: -p[1])
    return [t for t, _ in top], [r for _, r in top]


def answer(row: dict, emb, settings: dict[str, Any], threshold: float) -> tuple[str, float, str]:
    """(answer text as extract would give it, confidence, chosen sentence)."""
    from hybrid.reader.zero_shot import ZeroShot, select_span
    from hybrid.strategies.extract import ZERO_SHOT_K

    settings = dict(settings)
    texts, rel = contexts(row, settings.pop("k", ZERO_SHOT_K))
    if not texts:
        return row["dont_know"], 0.0, ""
    zs = ZeroShot(**settings)
    sp = select_span(row["question"], texts, emb, query_vec=np.asarray(row["query_vec"], np.float32),
                     priors=rel, config=zs)
    if sp is None or not sp.text.strip():
        return row["dont_know"], 0.0, ""
    if sp.score < threshold:
        return row["dont_know"], float(sp.score), sp.text
    return f"{sp.text.strip()} [1]", float(sp.score), sp.text


def score_app(name: str, rows: list[dict], emb, variants: dict[str, dict], threshold: float,
              against: str = "baseline") -> dict[str, Any]:
    from hybrid.eval.metrics import token_f1
    from hybrid.eval.stats import bootstrap_ci, paired_bootstrap
    from hybrid.reader.span import SPLITTERS

    f1: dict[str, list[float]] = {}
    out: dict[str, Any] = {"questions": len(rows), "variants": {}}
    strategy_f1 = [token_f1(r["strategy_answer"], r["answers"]) for r in rows]
    for v, settings in variants.items():
        t = time.perf_counter()
        scores, confs, same, sent_f1 = [], [], 0, []
        for r in rows:
            text, conf, sent = answer(r, emb, settings, threshold)
            scores.append(token_f1(text, r["answers"]))
            sent_f1.append(token_f1(sent, r["answers"]) if sent else 0.0)
            confs.append(conf)
            same += text == r["strategy_answer"]
        f1[v] = scores
        lo, hi = bootstrap_ci(scores)
        res = {"settings": settings, "f1": round(float(np.mean(scores)), 4), "ci": [round(lo, 4), round(hi, 4)],
               "chosen_sentence_f1_no_abstain": round(float(np.mean(sent_f1)), 4),
               "abstained": int(sum(c < threshold for c in confs)),
               "confidence_median": round(float(np.median(confs)), 4), "seconds": round(time.perf_counter() - t, 1)}
        res["same_answer_as_strategy"] = same
        if v != against:
            d, (dlo, dhi), p = paired_bootstrap(scores, f1[against])
            res["vs_baseline"] = {"diff": round(d, 4), "ci": [round(dlo, 4), round(dhi, 4)], "p": round(p, 4),
                                  "against": against}
        out["variants"][v] = res
        print(f"{name:8s} {v:28s} F1 {res['f1']:.3f} [{lo:.3f}, {hi:.3f}]"
              + (f"  vs {against} {res['vs_baseline']['diff']:+.3f} [{res['vs_baseline']['ci'][0]:+.3f}, "
                 f"{res['vs_baseline']['ci'][1]:+.3f}]" if "vs_baseline" in res else "")
              + f"  same answer as the collected strategy: {same}/{len(rows)}", flush=True)
    print(f"{name:8s} the strategy's own answers when collected: F1 {np.mean(strategy_f1):.3f}", flush=True)
    # best candidate per question among the plain splitter's sentences of what extract reads: the
    # ceiling of selection
    from hybrid.strategies.extract import ZERO_SHOT_K

    oracle = [max((token_f1(c[s:e], r["answers"]) for c in contexts(r, ZERO_SHOT_K)[0]
                   for s, e in SPLITTERS["plain"](c)), default=0.0) for r in rows]
    out["strategy_f1"] = round(float(np.mean(strategy_f1)), 4)
    out["oracle_sentence_f1"] = round(float(np.mean(oracle)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--app", action="append", required=True, help="NAME=DIR (repeatable)")
    ap.add_argument("--questions", action="append", default=[],
                    help="NAME=FILE (default: DIR/questions/dev.jsonl); never a test part")
    ap.add_argument("-n", "--limit", type=int, default=None, help="seeded sample of N questions per app")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed (as hybrid eval's --seed)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--against", default="baseline", help="the variant every other is compared with (paired)")
    ap.add_argument("--depth", type=int, default=16, help="hits cached per question (the deepest k a variant reads)")
    ap.add_argument("--combine", action="append", default=[],
                    help="an extra variant NAME=JSON settings, e.g. 'both={\"neighbour\": 0.3, \"rank_prior\": 0.1}'")
    ap.add_argument("--work", default="/tmp/extract-ablation", help="cache directory (contexts, embeddings)")
    ap.add_argument("--out", required=True, help="JSON results")
    ap.add_argument("--note", default="", help="free text kept in the JSON")
    args = ap.parse_args(argv)

    from hybrid.strategies.extract import ZERO_SHOT_THRESHOLD

    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names + [args.against] if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    variants = {args.against: VARIANTS[args.against], **{v: VARIANTS[v] for v in names}}
    for c in args.combine:
        k, _, js = c.partition("=")
        variants[k] = json.loads(js)
    qfiles = dict(q.split("=", 1) for q in args.questions)
    info = machine_info()
    result: dict[str, Any] = {"machine": info, "load_before": list(__import__("os").getloadavg()),
                              "note": args.note,
                              "command": " ".join(["benchmarks/extract_ablation.py", *(argv or sys.argv[1:])]),
                              "threshold": ZERO_SHOT_THRESHOLD, "depth": args.depth, "against": args.against, "limit": args.limit, "seed": args.seed, "apps": {}}
    for spec in args.app:
        name, _, app_dir = spec.partition("=")
        qfile = qfiles.get(name, str(Path(app_dir) / "questions" / "dev.jsonl"))
        if "test" in Path(qfile).name:
            raise SystemExit(f"{qfile}: choose settings on dev questions, not the test part")
        work = Path(args.work) / name
        rows, inner = collect(app_dir, qfile, args.limit, args.seed,
                              work / f"hits-n{args.limit}-s{args.seed}-d{args.depth}.json", args.depth)
        emb = CachedEmbedder(inner, work / "sentences")
        res = score_app(name, rows, emb, variants, ZERO_SHOT_THRESHOLD, args.against)
        emb.save()
        res.update({"app": app_dir, "questions_file": qfile})
        result["apps"][name] = res
    result["load_after"] = list(__import__("os").getloadavg())
    write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
