"""The comparison of ``benchmarks/retrieval.py``: ratios against LangChain, the issue's targets marked
met or not, and the Markdown table of the results."""

from __future__ import annotations

from typing import Any

OURS = ("hybrid-dense", "hybrid-bm25", "hybrid-hybrid")
MILVUS_MODES = ("dense", "hybrid")  # BM25 on the Milvus backend is the same SQLite FTS5 as hybrid-bm25
LANGCHAIN = ("langchain-faiss", "langchain-bm25", "langchain-ensemble")
# ours vs the LangChain system it replaces
PAIRS = {"hybrid-dense": "langchain-faiss", "hybrid-bm25": "langchain-bm25", "hybrid-hybrid": "langchain-ensemble"}


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """Ratios against LangChain and the issue's targets, each marked met or not."""
    S = result["systems"]
    lc_names = [n for n in S if n.startswith("langchain")]
    best_lc = max(lc_names, key=lambda n: S[n]["all"]["ndcg@10"])
    best_lc_test = max(lc_names, key=lambda n: S[n]["test_split"]["ndcg@10"])
    out: dict[str, Any] = {"best_langchain_ndcg@10": {"system": best_lc, "all": S[best_lc]["all"]["ndcg@10"],
                                                     "test_split_system": best_lc_test,
                                                     "test_split": S[best_lc_test]["test_split"]["ndcg@10"]},
                           "ratios": {}}
    for ours, theirs in PAIRS.items():
        a, b = S[ours], S[theirs]
        r: dict[str, Any] = {"vs": theirs,
                             "ndcg@10_diff": round(a["all"]["ndcg@10"] - b["all"]["ndcg@10"], 4),
                             "build_s_ratio": round(a["build_s"] / b["build_s"], 3) if b["build_s"] else None}
        if "latency" in a and isinstance(b.get("latency"), dict):
            for kind in ("single", "batched"):
                for p in ("p50_ms", "p95_ms"):
                    r[f"{kind}_{p}_ratio"] = round(a["latency"][kind][p] / b["latency"][kind][p], 3)
        if a.get("peak_rss_growth_mib") and b.get("peak_rss_growth_mib"):
            r["peak_rss_growth_ratio"] = round(a["peak_rss_growth_mib"] / b["peak_rss_growth_mib"], 3)
        out["ratios"][ours] = r
    hy = S["hybrid-hybrid"]
    fs = result.get("fusion_study", {}).get("best", {})
    best_fused_test = max((v["test"]["ndcg@10"] for v in fs.values()), default=None)
    hyb_r = out["ratios"]["hybrid-hybrid"]
    targets = {
        "hybrid_ndcg@10_minus_best_langchain >= 0.02 (all queries, built-in RRF)": {
            "value": round(hy["all"]["ndcg@10"] - S[best_lc]["all"]["ndcg@10"], 4)},
        "hybrid_ndcg@10_minus_best_langchain >= 0.02 (test split, built-in RRF)": {
            "value": round(hy["test_split"]["ndcg@10"] - S[best_lc_test]["test_split"]["ndcg@10"], 4)},
        "build_s ratio hybrid / langchain-ensemble <= 0.4": {"value": hyb_r["build_s_ratio"]},
        "batched p50 latency ratio hybrid / langchain-ensemble <= 0.5": {"value": hyb_r.get("batched_p50_ms_ratio")},
    }
    if best_fused_test is not None:
        targets["best dev-tuned fusion ndcg@10 minus best langchain >= 0.02 (test split)"] = {
            "value": round(best_fused_test - S[best_lc_test]["test_split"]["ndcg@10"], 4)}
    for name, t in targets.items():
        v = t["value"]
        if v is None:
            t["met"] = None
        elif ">=" in name:
            t["met"] = v >= 0.02
        else:
            t["met"] = v <= float(name.rsplit("<=", 1)[1])
    out["targets"] = targets
    for mode in MILVUS_MODES if f"milvus-{MILVUS_MODES[0]}" in S else ():
        a, b = S[f"milvus-{mode}"], S[f"hybrid-{mode}"]
        r = {"vs": f"hybrid-{mode}", "ndcg@10_diff": round(a["all"]["ndcg@10"] - b["all"]["ndcg@10"], 4),
             "build_s_ratio": round(a["build_s"] / b["build_s"], 3) if b["build_s"] else None}
        if isinstance(a.get("latency"), dict) and isinstance(b.get("latency"), dict):
            for kind in ("single", "batched"):
                for p in ("p50_ms", "p95_ms"):
                    r[f"{kind}_{p}_ratio"] = round(a["latency"][kind][p] / b["latency"][kind][p], 3)
        out.setdefault("milvus_vs_faiss_backend", {})[f"milvus-{mode}"] = r
    return out


def markdown(result: dict[str, Any]) -> str:
    S = result["systems"]
    lines = [f"Dataset {result['dataset']}: {result['docs']:,} docs, {result['queries']} queries; "
             f"embedder {result['embedder']}; {result['machine']['note']}.", "",
             "| system | nDCG@10 | recall@100 | nDCG@10 (test split) | build s | single p50 / p95 ms "
             "| batched p50 / p95 ms per query | peak RSS growth MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in S.items():
        lat = s.get("latency")
        if isinstance(lat, dict):
            single = f"{lat['single']['p50_ms']:.1f} / {lat['single']['p95_ms']:.1f}"
            batched = f"{lat['batched']['p50_ms']:.2f} / {lat['batched']['p95_ms']:.2f}"
        else:
            single = batched = "(as above)"
        rss = s.get("peak_rss_growth_mib")
        lines.append(f"| {name} | {s['all']['ndcg@10']:.4f} | {s['all']['recall@100']:.4f} | "
                     f"{s['test_split']['ndcg@10']:.4f} | {s['build_s']:.2f} | {single} | {batched} | "
                     f"{rss if isinstance(rss, (int, float)) else '-'} |")
    lines.append("")
    for name, t in (result["comparison"] or {"targets": {}})["targets"].items():
        lines.append(f"- {name}: {t['value']} -> {'met' if t['met'] else 'NOT met' if t['met'] is False else 'n/a'}")
    return "\n".join(lines)
