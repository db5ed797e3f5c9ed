"""Turn per-question results into the evaluation summary, verdict, plots and reports.

Input rows (``results.jsonl``, one per question and strategy)::

    {"question_id": "q1", "type": "retrieval", "strategy": "rag", "routed_to": null,
     "scores": {"f1": 0.8, "em": 0, "rouge_l": .., "bleu": .., "groundedness": .., "primary": 0.8},
     "latency_s": 1.2, "prompt_tokens": 300, "completion_tokens": 40, "contaminated": false,
     "unanswerable": false, "error": null, "flags": []}

``strategy == "auto"`` rows carry the router's choice in ``routed_to``.

    summary = summarize(rows, costs={"few_shot": 1.0, "rag": 1.5, ...})
    write_report(summary, out_dir)   # report.md, report.html, *.png, summary.json

The two steps live in their own modules and are re-exported here, where the runner, the CLI and the
tests import them: ``hybrid.eval.summary`` (rows -> the numbers and the verdict) and
``hybrid.eval.render`` (summary -> plots, Markdown, HTML and JSON files).
"""

from __future__ import annotations

# the public names of both steps, importable from here as before the split (``_quantile``: tests)
from hybrid.eval.render import cost_line, render_markdown, retrieval_line, write_report  # noqa: F401
from hybrid.eval.summary import (  # noqa: F401
    METRICS, ROUTED, ROUTER_NAMES, _quantile, fixed_rows_by_question, fixed_strategies, oracle_labels, summarize,
    verdict)
