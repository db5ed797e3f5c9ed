"""``hybrid eval``: every strategy (and the router) answers every question, batched and cached.

::

    from hybrid.eval.runner import EvalConfig, run_eval
    result = run_eval("apps/legal", "apps/legal/questions.jsonl", "reports/legal", EvalConfig())
    result.summary["verdict"]

Prompts are built per question by the same code the pipeline uses (``Assistant.prepare``), then
generated in batches per adapter (``Generator.generate_batch``), so the answers are the ones
``hybrid ask`` would give, only faster. Every answer is stored in ``cache.sqlite`` as soon as its
batch finishes: a re-run computes only what changed, an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import HybridError
from hybrid.eval.batched import Prepared, generate_groups
from hybrid.eval.cache import AnswerCache
from hybrid.eval.data import Question, QuestionSet, load_questions
from hybrid.eval.metrics import answer_scores, groundedness, is_refusal
from hybrid.eval.track import track_eval
from hybrid.eval.report import fixed_rows_by_question, summarize, write_report
from hybrid.generation.cpu import use_threads
from core.io import write_jsonl
from hybrid.routing.learned import features

log = logging.getLogger(__name__)



def eval_strategies() -> tuple[str, ...]:
    """What a run may compare: every registered strategy (``hybrid.strategies.strategy_names``), then
    ``auto`` (the app's router). Also the default, in this order."""
    from hybrid.strategies import strategy_names

    return (*strategy_names(), "auto")


@dataclass
class EvalConfig:
    """Settings of one evaluation run."""

    strategies: list[str] = field(default_factory=lambda: list(eval_strategies()), metadata={
        "help": "strategies to compare (default: every registered one, then auto); 'auto' is the app's router"})
    batch_size: int = field(default=16, metadata={"help": "questions generated together per batch"})
    limit: int | None = field(default=None, metadata={
        "help": "evaluate a seeded random sample of this many questions (None = all)"})
    seed: int = field(default=0, metadata={"help": "sampling and bootstrap seed"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "override the app's max_new_tokens"})
    router: str | None = field(default=None, metadata={"help": "router for 'auto' (default: the app's)"})
    learned_cv: bool = field(default=True, metadata={
        "help": "also score the learned router trained on this run's labels, out-of-fold by question"})
    cv_folds: int = field(default=5, metadata={"help": "folds of that cross-validation"})
    threads: int | None = field(default=None, metadata={
        "help": "torch threads for generation and embedding (None = torch's default); on a busy 2-core "
                "machine 1 thread was far faster than 2"})
    track: bool | str = field(default="auto", metadata={
        "help": "record the run in MLflow (auto: when mlflow is installed; see hybrid.eval.track)"})
    date: str = field(default="2026-01-01", metadata={
        "help": "fixed {date} for the system prompt, so cached answers stay valid across days"})

    def __post_init__(self) -> None:
        known = eval_strategies()
        bad = [s for s in self.strategies if s not in known and s != "langchain"]
        if bad:
            raise ValueError(f"unknown strategy {bad[0]!r}; choose from {', '.join(known)}")
        if not self.strategies:
            raise ValueError("strategies must not be empty")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2, got {self.cv_folds}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: dict[str, Path]
    computed: int  # answers generated in this run (the rest came from the cache)
    cached: int


def _file_hash(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def training_sources(bot) -> set[str]:
    """Source names of the documents the app's adapter was trained on (for contamination flags)."""
    from core.io import read_jsonl

    if not bot.has_adapter_files():
        return set()
    path = bot.app.resolve(bot.app.adapter.tune_data)
    out: set[str] = set()
    if path.is_file():
        for _, row in read_jsonl(path):
            if isinstance(row, dict) and row.get("source") and row["source"] != "style":
                out.add(Path(str(row["source"])).name)
    return out


def _score(q: Question, text: str, context: list[str] | None) -> tuple[dict[str, float | None], list[str]]:
    flags: list[str] = []
    refs = q.answers or [""]
    s: dict[str, float | None] = dict(answer_scores(text, refs))
    if q.unanswerable:
        s["primary"] = 1.0 if is_refusal(text) else 0.0
    else:
        s["primary"] = s["f1"]
    if context is None:
        s["groundedness"] = None  # this strategy saw no context: groundedness does not apply
    else:
        g, flag = groundedness(text, context)
        s["groundedness"] = g
        if flag:
            flags.append(flag)
    return s, flags


def _cache_traits(strategy: str):
    """The traits that key ``strategy``'s cached answers (``uses_adapter``: the adapter version,
    ``uses_kb``: the KB version, ``uses_reader``: the reader version). ``auto`` may answer with any
    registered strategy, so it is keyed by every version any of them is."""
    from hybrid.strategies import names_with, strategy_traits
    from hybrid.strategies.base import Traits

    if strategy != "auto":
        return strategy_traits(strategy)
    return Traits(**{k: bool(names_with(k)) for k in ("uses_kb", "uses_adapter", "uses_reader")})


def _base_row(q: Question, strategy: str) -> dict[str, Any]:
    return {"question_id": q.id, "question": q.question, "type": q.type, "tags": q.tags,
            "references": q.answers, "unanswerable": q.unanswerable, "strategy": strategy, "flags": list(q.flags)}


def learned_cv_rows(bot, rows: list[dict[str, Any]], cfg: EvalConfig, *,
                    progress: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of strategy ``learned_cv``: the learned router, trained on this run's own labels with
    cross-validation by question, routes each question it never saw; the answer is the chosen fixed
    strategy's answer from this run (same prompt, same greedy settings), so no generation is needed.

    Returns (rows, None), or ([], why) when there is too little to learn from.
    """
    from hybrid.routing.learned import cross_validated_decisions

    by_q = fixed_rows_by_question(r for r in rows if "no_reference" not in r.get("flags", []))
    if len({s for rs in by_q.values() for s in rs}) < 2:
        return [], "needs at least two fixed strategies in the run"
    qids = [q for q, rs in by_q.items() if len(rs) >= 2]
    if len(qids) < 2 * cfg.cv_folds:
        return [], f"needs at least {2 * cfg.cv_folds} questions answered by two or more strategies, got {len(qids)}"
    queries = [next(iter(by_q[q].values()))["question"] for q in qids]
    labels = [{s: float(r["scores"]["primary"]) for s, r in by_q[q].items()} for q in qids]
    t = time.perf_counter()
    contexts = bot.route_contexts(queries, progress=progress and len(queries) > 50)
    X = np.stack([features(c) for c in contexts])
    decisions = cross_validated_decisions(X, labels, queries, contexts, app_name=bot.app.name,
                                          embedder=bot.embedder, cfg=bot.router_config(), folds=cfg.cv_folds,
                                          seed=cfg.seed)
    route_s = (time.perf_counter() - t) / len(qids)
    out = []
    for q, d in zip(qids, decisions):
        src = by_q[q].get(d.strategy)
        if src is None:  # routed to a strategy that did not answer this question
            continue
        row = {**src, "strategy": "learned_cv", "routed_to": d.strategy,
               "decision": {"strategy": d.strategy, "confidence": d.confidence, "reason": d.reason,
                            "scores": d.scores},
               "latency_s": float(src.get("latency_s", 0.0)) + route_s,
               "flags": list(src.get("flags", [])) + ["answer_of_" + d.strategy]}
        out.append(row)
    return out, None


def retrieval_hits(bot, questions: Sequence[Question]) -> dict[str, Any]:
    """Did retrieval find each question's known source? Searches the app's KB as ``rag`` does (the
    question, ``rag.k``, its mode and the question's filter) for every question whose row names its
    source (``relevant_docs`` / ``relevant_doc_ids``); the answer of each strategy does not matter here.

    Returns ``{"n", "k", "hit@1", "hit@k", "per_question": {id: {"rank", "hit@1", "hit@k", "k"}}}``.
    """
    from hybrid.eval.retrieval import hit_rates, source_rank

    kb = bot.knowledge_base
    known = [q for q in questions if q.relevant_docs or q.relevant_doc_ids]
    k = bot.retrieval_k()
    if kb is None or not known:
        return {**hit_rates([], k), "per_question": {}}
    mode = bot.app.rag.mode
    per: dict[str, dict[str, Any]] = {}
    for q in known:
        try:
            extra = {"filters": q.filter} if q.filter else {}
            hits = list(kb.search(q.question, k, mode=mode, **extra))
        except HybridError as e:  # recorded, the run goes on
            log.warning("retrieval for %s failed: %s", q.id, e)
            continue
        rank = source_rank(hits, q.relevant_docs, q.relevant_doc_ids)
        per[q.id] = {"rank": rank, "hit@1": rank == 1, "hit@k": rank is not None and rank <= k, "k": k}
    return {**hit_rates([p["rank"] for p in per.values()], k), "per_question": per}


def shared_texts(questions) -> set[str]:
    """Ids of questions whose text and filter another question also has (PolicyQA asks "Do you share
    my e-mail?" several times about one policy, each with its own gold span). A cached answer is keyed
    by text and filter, so these also key by id: otherwise the second would be served the first's row,
    with the first's id, references and scores."""
    seen: dict[tuple[str, str], list[str]] = {}
    for q in questions:
        seen.setdefault((q.question, json.dumps(q.filter or {}, sort_keys=True)), []).append(q.id)
    return {i for ids in seen.values() if len(ids) > 1 for i in ids}


def _assistant(app: Any, qs: QuestionSet, out: Path, cfg: EvalConfig, progress: bool):
    """The app's ``Assistant`` for this run (``cfg.max_new_tokens`` applied). SQuAD-style input
    brings its own contexts: they become a knowledge base under ``out``, keyed by their ids."""
    from hybrid.app import AppConfig, load_app
    from hybrid.pipeline import Assistant, kb_config

    appcfg = app if isinstance(app, AppConfig) else load_app(app)
    if cfg.max_new_tokens:
        appcfg = dataclasses.replace(appcfg, generation=dataclasses.replace(
            appcfg.generation, max_new_tokens=cfg.max_new_tokens))
    if not qs.documents:
        return Assistant(appcfg, date=cfg.date)
    from indexes.kb import KnowledgeBase

    digest = hashlib.sha256("".join(sorted(d.id for d in qs.documents)).encode()).hexdigest()[:12]
    bot0 = Assistant(appcfg)
    kb = KnowledgeBase.create(out / f"kb-{digest}", kb_config(appcfg), embedder=bot0.embedder, exist_ok=True)
    kb.sync(qs.documents, progress=progress)
    return Assistant(appcfg, embedder=bot0.embedder, knowledge_base=kb, date=cfg.date)


def run_eval(app: Any, questions: str | Path | QuestionSet, out_dir: str | Path, cfg: EvalConfig | None = None, *,
             assistant=None, progress: bool = True, baseline: Callable[..., list[dict]] | None = None,
             echo: Callable[[str], None] = lambda s: None) -> EvalResult:
    """Evaluate ``app`` (a directory or AppConfig) on ``questions``; write the report into ``out_dir``."""
    from tqdm import tqdm

    from hybrid.pipeline import kb_size
    from hybrid.strategies import method_versions
    from hybrid.strategies.base import run_prompt, traits

    cfg = cfg or EvalConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qs = questions if isinstance(questions, QuestionSet) else load_questions(questions)
    qlist = list(qs.questions)
    if cfg.limit is not None and cfg.limit < len(qlist):
        qlist = sorted(random.Random(cfg.seed).sample(qlist, cfg.limit), key=lambda q: q.id)
    for qid, flag in qs.flagged:
        log.warning("question %s flagged: %s", qid, flag)

    bot = assistant if assistant is not None else _assistant(app, qs, out, cfg, progress)
    gen = bot.generator
    if cfg.threads:
        use_threads(gen, cfg.threads)
    row_progress = "on_row" in inspect.signature(gen.generate_batch).parameters
    kb = bot.knowledge_base
    kb_version = None
    if kb is not None:
        st = kb.stats() if hasattr(kb, "stats") else {}
        kb_version = f"{st.get('path', '')}@{st.get('generation', '')}:{kb_size(kb)}"
    adapter_version = _file_hash(bot.app.adapter_path / "adapter_model.safetensors") if bot.has_adapter_files() else None
    excluded = bot.excluded()
    trained_on = training_sources(bot)
    params = bot.app.generation.params()
    cache = AnswerCache(out / "cache.sqlite")
    model_key = f"{getattr(gen, 'model_id', '?')}@{getattr(gen, 'sha', '')}"

    # a learned router decides `auto`: its model file is part of auto's cache key, and the questions
    # it was trained on are marked in-sample
    router_kind = cfg.router or getattr(bot, "_router_kind", "rules")
    learned = bot.router(router_kind) if router_kind == "learned" and "auto" in cfg.strategies else None
    router_version = _file_hash(bot.app.router_model_path) if learned is not None else None
    reader_version = _file_hash(bot.app.reader_path / "reader_card.json")  # a retrained reader re-answers

    # every app setting that shapes a prompt (rag.k, framing, budgets, examples, voice ...) is part of
    # each answer's identity: a changed setting must never be served an answer of the old one
    # (the router's settings shape only `auto`'s answers: they key auto, not the fixed strategies)
    def _digest(obj: Any) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]

    app_key = _digest({k: v for k, v in dataclasses.asdict(bot.app).items() if k != "router"})
    router_key = _digest([dataclasses.asdict(bot.app.router), dataclasses.asdict(bot.router_config())])
    shared = shared_texts(qlist)
    rows: list[dict[str, Any]] = []
    generated: dict[str, tuple[Any, float]] = {}  # request key -> (generation, its seconds), this run only
    computed = cached = 0
    skipped: dict[str, str] = {}
    strategies = [s for s in cfg.strategies if s != "langchain"]
    for strategy in strategies:
        if strategy in excluded:
            skipped[strategy] = excluded[strategy]
            echo(f"skipping {strategy}: {excluded[strategy]}")
            continue
        t = _cache_traits(strategy)
        methods = method_versions(strategy)  # a strategy whose method changed never reuses old answers
        pending = []
        for q in qlist:
            key = AnswerCache.key(question=q.question, strategy=strategy, model=model_key,
                                  adapter=adapter_version if t.uses_adapter else None,
                                  kb_version=kb_version if t.uses_kb else None,
                                  params={**dataclasses.asdict(params), "router": cfg.router, "date": cfg.date,
                                          "app": app_key, **({"router_settings": router_key} if strategy == "auto" else {}),
                                          **({"router_model": router_version}
                                             if strategy == "auto" and router_version else {}),
                                          **({"reader": reader_version}
                                             if t.uses_reader and reader_version else {}),
                                          **({"method": methods} if methods else {}),
                                          **({"filter": q.filter} if q.filter else {}),
                                          **({"question_id": q.id} if q.id in shared else {})})
            hit = cache.get(key)
            if hit is not None:
                rows.append(hit)
                cached += 1
            else:
                pending.append((q, key))
        # per question (a batch's rows report as each finishes), and the rate averaged over the whole
        # run (smoothing=0): a burst of rows must not swing the estimate by hours
        bar = tqdm(total=len(pending), desc=f"eval {strategy}", unit="q", smoothing=0,
                   disable=not progress or not pending)
        counted: set[tuple[int, int]] = set()
        for start in range(0, len(pending), cfg.batch_size):
            group = pending[start:start + cfg.batch_size]
            prepared: list[Prepared] = []
            for q, key in group:
                row = _base_row(q, strategy)
                t = time.perf_counter()
                try:
                    ready = bot.prepare(q.question, None, strategy, cfg.router, filters=q.filter)
                    prepared.append(Prepared(q, key, row, ready, time.perf_counter() - t))
                except HybridError as e:  # one bad question is recorded, the run goes on
                    row.update(error=f"{type(e).__name__}: {e}", answer="", latency_s=time.perf_counter() - t)
                    row["scores"], _ = _score(q, "", None)
                    rows.append(row)
                    cache.put(key, row, question_id=q.id, strategy=strategy)
                    computed += 1
                    bar.update(1)
            # one batch per (adapter, sampling settings): a strategy may set per-prompt params
            groups: dict[tuple[str | None, str], list[int]] = {}
            for i, p in enumerate(prepared):
                if p.ready.prompt.direct is None:
                    groups.setdefault((p.ready.prompt.adapter, json.dumps(dataclasses.asdict(p.params), sort_keys=True)),
                                      []).append(i)

            def tick(i: int, start: int = start) -> None:  # row i of this group has its generation
                counted.add((start, i))
                bar.update(1)

            texts, gen_time = generate_groups(gen, prepared, groups, generated, tick if row_progress else None)
            for i, p in enumerate(prepared):
                q, key, row, prep_s = p.q, p.key, p.row, p.seconds
                strat, prompt, sctx, decision = p.ready.strategy, p.ready.prompt, p.ready.ctx, p.ready.decision
                g = texts.get(i)
                try:
                    if isinstance(g, Exception):
                        raise g
                    usage = {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens} if g else None
                    ans = run_prompt(strat.name, prompt, sctx, text=g.text if g else None, usage=usage)
                    read = prompt.hits if prompt.hits is not None else (sctx.hits or [])  # extract reads deeper
                    context = [h.chunk.text for h in read] if traits(strat).grounded else None
                    scores, flags = _score(q, ans.text, context)
                    row.update(answer=ans.text, error=None, routed_to=decision.strategy if strategy == "auto" else None,
                               decision={"strategy": decision.strategy, "confidence": decision.confidence,
                                         "reason": decision.reason, "scores": decision.scores},
                               citations=[dataclasses.asdict(c) for c in ans.citations],
                               latency_s=prep_s + gen_time.get(i, 0.0),
                               prompt_tokens=ans.usage.get("prompt_tokens", 0),
                               completion_tokens=ans.usage.get("completion_tokens", 0), scores=scores,
                               flags=row["flags"] + flags, notices=p.ready.notices + ans.notices,
                               # extract's calibrated confidence: `hybrid router fit-rules` fits its threshold
                               confidence=ans.confidence)
                except Exception as e:  # noqa: BLE001 - recorded on its row, the run goes on
                    row.update(error=f"{type(e).__name__}: {e}", answer="", latency_s=prep_s)
                    row["scores"], _ = _score(q, "", None)
                rows.append(row)
                cache.put(key, row, question_id=q.id, strategy=strategy)
                computed += 1
                if (start, i) not in counted:
                    bar.update(1)
        bar.close()

    if cfg.learned_cv:
        cv_rows, why = learned_cv_rows(bot, rows, cfg, progress=progress)
        if why:
            skipped["learned_cv"] = why
            echo(f"skipping learned_cv: {why}")
        rows.extend(cv_rows)

    if baseline is not None and "langchain" in cfg.strategies:
        rows.extend(baseline(qlist, bot=bot, cache=cache, out=out, progress=progress))

    by_q = {q.id: q for q in qlist}
    retrieval = retrieval_hits(bot, qlist)
    for r in rows:
        if r["question_id"] in retrieval.get("per_question", {}):
            r["retrieval_hit"] = retrieval["per_question"][r["question_id"]]
        q = by_q.get(r["question_id"])
        r["contaminated"] = bool(q and trained_on and set(Path(d).name for d in q.relevant_docs) & trained_on)
        if r["strategy"] == "auto" and learned is not None:
            r["router_in_sample"] = bool(learned.trained_on(r["question"]))
    rows.sort(key=lambda r: (r["question_id"], r["strategy"]))
    write_jsonl(out / "results.jsonl", rows)
    scored = [r for r in rows if "no_reference" not in r.get("flags", [])]
    summary = summarize(scored, costs=dict(bot.router_config().costs), seed=cfg.seed)
    summary["skipped_strategies"] = skipped
    summary["retrieval"] = {k: v for k, v in retrieval.items() if k != "per_question"}
    summary["flagged_questions"] = [list(x) for x in qs.flagged]
    summary["run"] = {"app": bot.app.name, "questions": str(qs.source), "n_evaluated": len(qlist),
                      "n_total": len(qs.questions), "model": model_key, "adapter": adapter_version,
                      "kb_version": kb_version, "computed": computed, "cached": cached,
                      "contaminated_questions": sum(1 for q in qlist if trained_on and
                                                    set(Path(d).name for d in q.relevant_docs) & trained_on)}
    files = write_report(summary, out, title=f"Evaluation: {bot.app.title or bot.app.name} on {Path(str(qs.source)).name}")
    cache.close()
    summary["run"]["mlflow_run_id"] = track_eval(summary, out, cfg, adapter=bot.app.adapter_path, enabled=cfg.track)
    return EvalResult(rows=rows, summary=summary, files=files, computed=computed, cached=cached)
