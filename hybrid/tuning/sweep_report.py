"""A sweep's report: ``sweep.md`` (every trial, the best, the preset it started from) and ``sweep.png`` (the
objective against each searched parameter), both written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return "" if v is None else str(v)


def plot(result: Any, path: Path, objective_name: str) -> Path | None:
    """One panel per searched parameter: completed trials as dots, the best as a star, the baseline ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.io import atomic_write_bytes

    done = [t for t in result.trials if t["state"] == "COMPLETE" and t["value"] is not None]
    # a pruned trial's value is its last reported eval loss: drawn as a grey cross at that value
    pruned = [t for t in result.trials if t["state"] == "PRUNED" and t["value"] is not None]
    names = sorted({k for t in result.trials for k in t["params"]})
    if not done or not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        pts = [(t["params"][name], t["value"], t) for t in done if name in t["params"]]
        cut = [(t["params"][name], t["value"]) for t in pruned if name in t["params"]]
        allx = [x for x, _, _ in pts] + [x for x, _ in cut]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in allx)
        cats = sorted({str(x) for x in allx})
        xs = [x if numeric else cats.index(str(x)) for x, _, _ in pts]
        if cut:
            ax.scatter([x if numeric else cats.index(str(x)) for x, _ in cut], [v for _, v in cut], marker="x",
                       s=28, color="#999999")
        ax.scatter(xs, [v for _, v, _ in pts], s=24, color="#4472c4")
        for x, (_, v, t) in zip(xs, pts):
            if t["number"] == result.best_number:
                ax.scatter([x], [v], marker="*", s=160, color="#c00000", zorder=3)
            if t["baseline"]:
                ax.scatter([x], [v], s=120, facecolors="none", edgecolors="black", zorder=3)
        if numeric and name in ("lr", "weight_decay") and min(allx) > 0:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            # a sweep's range is often within one decade, where log axes label nothing or overlap: 3 own ticks
            lo, hi = min(allx), max(allx)
            ticks = [lo * (hi / lo) ** (i / 2) for i in range(3)] if hi > lo else [lo]
            ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
        if not numeric:
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(name)
        ax.set_ylabel(objective_name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"sweep {result.study_name}: {objective_name} by parameter (star: best, ring: preset, x: pruned)",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def markdown(result: Any, objective_name: str, plot_name: str | None) -> str:
    names = sorted({k for t in result.trials for k in t["params"]})
    lines = [f"# Sweep `{result.study_name}`", "",
             f"- storage: `{result.storage}`",
             f"- trials: {len(result.trials)} "
             f"({', '.join(f'{s.lower()} {n}' for s, n in _counts(result.trials).items())}); "
             f"this run: {result.ran}",
             f"- objective: {objective_name} ({'higher' if result.direction == 'maximize' else 'lower'} is better)"]
    base = next((t for t in result.trials if t["baseline"] and t["state"] == "COMPLETE"), None)
    if result.best_number is not None:
        lines.append(f"- best: trial {result.best_number}, {objective_name} {result.best_value:.4f}, "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(result.best_params.items())))
        if base is not None:
            if base["number"] == result.best_number:
                lines.append("- the preset itself (trial "
                             f"{base['number']}) is the best: no trial beat it")
            else:
                d = abs(base["value"] - result.best_value)
                lines.append(f"- preset (trial {base['number']}): {base['value']:.4f}; the best is "
                             f"{d:.4f} better ({100 * d / abs(base['value'] or 1):.1f}%)")
    if result.best_adapter is not None:
        lines.append(f"- best adapter: `{result.best_adapter}`")
    lines += ["", "| trial | state | " + objective_name + " | steps | " + " | ".join(names) + " |",
              "|---:|---|---:|---:|" + "---:|" * len(names)]
    for t in result.trials:
        mark = " (preset)" if t["baseline"] else ""
        val = "" if t["value"] is None or not math.isfinite(t["value"]) else f"{t['value']:.4f}"
        lines.append(f"| {t['number']}{mark} | {t['state'].lower()} | {val} | {_fmt(t['steps'])} | "
                     + " | ".join(_fmt(t["params"].get(k)) for k in names) + " |")
    if plot_name:
        lines += ["", f"![{objective_name} by parameter]({plot_name})"]
    return "\n".join(lines) + "\n"


def _counts(trials: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t["state"]] = out.get(t["state"], 0) + 1
    return out


def write_report(result: Any, out_dir: Path, objective_name: str) -> tuple[Path, Path | None]:
    from core.io import atomic_write_text

    png = plot(result, out_dir / "sweep.png", objective_name)
    md = out_dir / "sweep.md"
    atomic_write_text(md, markdown(result, objective_name, png.name if png else None))
    return md, png
