"""The evaluation report as files: plots (PNG), ``report.md``, a self-contained ``report.html`` and
``summary.json``, all from the summary ``hybrid.eval.summary.summarize`` made.

The last step of ``hybrid.eval.report``: summary -> ``write_report`` (``_plots`` -> ``render_markdown`` ->
``_md_to_html``), each file written atomically.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from core.io import atomic_write_text
from hybrid.eval.summary import fmt_ci


# ---------------------------------------------------------------- sentences and cells


def cost_line(c: dict[str, Any]) -> str:
    """The report's "Cost at equal quality" sentence."""
    others = [s for s in c["statistically_tied"] if s != c["best"]]
    toks = c.get("tokens_per_answer") or {}
    if not others:
        return (f"Cost at equal quality: the paired tests separate {c['best']} from every other strategy, so "
                f"no strategy matches it at a lower cost.")
    cost = ", ".join(f"{s} {toks[s]:.0f}" for s in sorted(toks, key=lambda s: toks[s])) if toks else ""
    return (f"Cost at equal quality: the paired test cannot separate {', '.join(others)} from {c['best']} "
            f"(95% CI of the difference contains 0); the cheapest of them by tokens per answer is "
            f"{c['cheapest_tied']}" + (f" ({cost})." if cost else "."))


def retrieval_line(r: dict[str, Any]) -> str | None:
    """The report's retrieval sentence, or None when no question named its source."""
    if not r or not r.get("n"):
        return None
    return (f"Retrieval hit@1 {r['hit@1']:.2f} / hit@{r['k']} {r['hit@k']:.2f} over {r['n']} questions with "
            f"known sources (a hit: a retrieved chunk comes from the question's source document).")


def _opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


# ---------------------------------------------------------------- plots and files


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["strategies"]
    names = list(per)
    files: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    means = [per[s]["primary"]["mean"] for s in names]
    errs = [[m - per[s]["primary"]["ci95"][0] for s, m in zip(names, means)],
            [per[s]["primary"]["ci95"][1] - m for s, m in zip(names, means)]]
    ax.bar(names, means, yerr=errs, capsize=4, color="#4c78a8")
    if "oracle" in summary:
        ax.axhline(summary["oracle"]["primary"], ls="--", color="#e45756", label="oracle")
        ax.legend()
    ax.set_ylabel("primary score (F1 / refusal)")
    ax.set_title("Score by strategy (95% CI)")
    files.append(_save(fig, out / "score_by_strategy.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for s in names:
        ax.scatter(per[s]["latency_s"]["mean"], per[s]["primary"]["mean"], s=60)
        ax.annotate(s, (per[s]["latency_s"]["mean"], per[s]["primary"]["mean"]), textcoords="offset points",
                    xytext=(5, 5))
    ax.set_xlabel("mean latency per answer (s)")
    ax.set_ylabel("primary score")
    ax.set_title("Quality versus latency")
    files.append(_save(fig, out / "quality_vs_latency.png"))

    routers = summary.get("routers", {})
    if routers:
        labels = sorted({o for r in routers.values() for o in r["confusion"]} |
                        {c for r in routers.values() for v in r["confusion"].values() for c in v})
        fig, axes = plt.subplots(1, len(routers), figsize=(4.5 * len(routers), 4), squeeze=False)
        for ax, (name, r) in zip(axes[0], routers.items()):
            mat = [[r["confusion"].get(o, {}).get(c, 0) for c in labels] for o in labels]
            ax.imshow(mat, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=30)
            ax.set_yticks(range(len(labels)), labels)
            top = max((v for row in mat for v in row), default=0)
            for i, row in enumerate(mat):
                for j, v in enumerate(row):  # white text on dark cells so every count stays readable
                    ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
            ax.set_xlabel(f"{name} chose")
            ax.set_ylabel("oracle best")
            ax.set_title(f"{name}: {r['accuracy_vs_oracle']:.0%} best picks")
        files.append(_save(fig, out / "router_confusion.png"))

    types = sorted({t for s in names for t in per[s]["by_type"]})
    if types:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.8 / max(len(names), 1)
        for i, s in enumerate(names):
            vals = [per[s]["by_type"].get(t, {}).get("mean", 0.0) for t in types]
            ax.bar([x + i * width for x in range(len(types))], vals, width=width, label=s)
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(types))], types)
        ax.set_ylabel("primary score")
        ax.set_title("By question type")
        ax.legend(fontsize=7)
        files.append(_save(fig, out / "by_type.png"))
    return files


def render_markdown(summary: dict[str, Any], title: str, images: list[Path]) -> str:
    per = summary["strategies"]
    out = [f"# {title}", "", f"{summary['n_questions']} questions.", "", "## Verdict", ""]
    out += [f"- {v}" for v in summary["verdict"]]
    rline = retrieval_line(summary.get("retrieval") or {})
    if rline:
        out += ["", rline]
    out += ["", "## Scores by strategy (mean [95% CI])", "",
            "| strategy | primary | F1 | EM | ROUGE-L | BLEU | grounded | refusal acc. | latency s | tokens in/out | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, e in per.items():
        ref = "-" if e["refusal_accuracy"] is None else f"{e['refusal_accuracy']:.2f}"
        out.append(f"| {s} | {fmt_ci(e['primary'])} | {fmt_ci(e['f1'])} | {e['em']['mean']:.3f} | "
                   f"{e['rouge_l']['mean']:.3f} | {e['bleu']['mean']:.3f} | {_opt(e['groundedness']['mean'])} | {ref} | "
                   f"{e['latency_s']['mean']:.2f} | {e['tokens']['prompt']:.0f}/{e['tokens']['completion']:.0f} | {e['errors']} |")
    if "oracle" in summary:
        o = summary["oracle"]
        out += ["", f"Oracle (best fixed strategy per question): {o['primary']:.3f} "
                    f"[{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}]; best-strategy counts: {o['label_counts']}."]
    if summary.get("routers"):
        out += ["", "## Routers", "",
                "`auto` is the app's router; `learned_cv` is the learned router trained on this run's labels and "
                "scored out-of-fold (every question routed by a model that never saw it), reusing the chosen "
                "strategy's answer.", "",
                "| router | score [95% CI] | best picks [95% CI] | below oracle [95% CI] | vs best fixed [95% CI] | routes |",
                "|---|---|---|---|---|---|"]
        for name, r in summary["routers"].items():
            g, b = r["gap_to_oracle"], r.get("vs_best_fixed")
            vs = (f"{b['diff']:+.3f} vs {b['strategy']} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]" if b else "-")
            routes = ", ".join(f"{k} {v}" for k, v in r["route_counts"].items())
            out.append(f"| {name} | {r['primary']:.3f} [{r['primary_ci95'][0]:.3f}, {r['primary_ci95'][1]:.3f}] | "
                       f"{r['accuracy_vs_oracle']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                       f"{g['diff']:.3f} [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | {vs} | {routes} |")
    c = summary.get("cost_at_equal_quality") or {}
    if c:
        out += ["", cost_line(c)]
    out += ["", "## Paired comparisons (primary score)", "", "| a | b | n | a - b | 95% CI | p |", "|---|---|---|---|---|---|"]
    for p in summary["pairs"]:
        out.append(f"| {p['a']} | {p['b']} | {p['n']} | {p['diff']:+.3f} | [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] | {p['p']:.3f} |")
    out += ["", "## By question type", "", "| strategy | " + " | ".join(sorted({t for e in per.values() for t in e['by_type']})) + " |"]
    types = sorted({t for e in per.values() for t in e["by_type"]})
    out.append("|---|" + "---|" * len(types))
    for s, e in per.items():
        cells = [f"{e['by_type'][t]['mean']:.3f} (n={e['by_type'][t]['n']})" if t in e["by_type"] else "-" for t in types]
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    out += ["", "## Contamination", "", "Questions whose source documents were in the adapter's training data are "
            "reported apart.", "", "| strategy | clean n | clean score | contaminated n | contaminated score |",
            "|---|---|---|---|---|"]
    for s, e in per.items():
        out.append(f"| {s} | {e['clean']['n']} | {e['clean']['primary']:.3f} | {e['contaminated']['n']} | "
                   f"{e['contaminated']['primary']:.3f} |")
    if images:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(out) + "\n"


def _md_to_html(md: str, out: Path) -> str:
    """report.md as a self-contained HTML page: Python-Markdown with its tables extension, the plots
    inlined as data URIs, and raw HTML in the text escaped rather than passed through."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class InlineImages(Treeprocessor):
        def run(self, root):
            for img in root.iter("img"):
                path = out / img.get("src", "")
                if path.is_file():
                    img.set("src", "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())

    conv = markdown.Markdown(extensions=["tables"], output_format="html")
    conv.preprocessors.deregister("html_block")  # our text is never markup: escape it
    conv.inlinePatterns.deregister("html")
    conv.treeprocessors.register(InlineImages(conv), "inline_images", 0)
    body = conv.convert(md)
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em}"
             "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>report</title><style>{style}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_report(summary: dict[str, Any], out_dir: str | Path, *, title: str = "Evaluation report") -> dict[str, Path]:
    """Write summary.json, report.md, report.html (self-contained) and the PNG plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(summary, out)
    md = render_markdown(summary, title, images)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", _md_to_html(md, out))
    return {"summary": out / "summary.json", "markdown": out / "report.md", "html": out / "report.html",
            **{p.stem: p for p in images}}
