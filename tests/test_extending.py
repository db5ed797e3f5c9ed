"""A strategy added the way docs/extending.md describes (one class, one registration) shows up wherever
strategy names are read: ``hybrid ask --strategy``, ``/v1/ask`` and its OpenAPI schema, the eval
report, the routers' cost table and the learned router's labels. Registered for one test at a time
with ``STRATEGIES.registered`` and gone afterwards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybrid.strategies import STRATEGIES, costs, strategy_names
from hybrid.strategies.base import Prompt, StrategyContext, base_messages, run_prompt
from core.types import Answer

BUILTINS = ("few_shot", "rag", "tuned", "tuned_rag", "extract")
QUESTION = "What is the lease notice period?"


class Toy:
    """The system prompt and the question, nothing else (a zero-shot baseline)."""

    name = "toy"
    cost = 0.3

    def build(self, query: str, ctx: StrategyContext) -> Prompt:
        return Prompt(messages=[*base_messages(ctx), {"role": "user", "content": query}])

    def answer(self, query: str, ctx: StrategyContext) -> Answer:
        return run_prompt(self.name, self.build(query, ctx), ctx)


class KbToy(Toy):
    """Toy that declares it reads the knowledge base (``uses_kb``): its prompt quotes the sources."""

    name = "kb_toy"
    uses_kb = True

    def build(self, query: str, ctx: StrategyContext) -> Prompt:
        sources = "\n".join(h.chunk.text for h in ctx.retrieve())
        return Prompt(messages=[*base_messages(ctx), {"role": "user", "content": f"{sources}\n\n{query}"}])


@pytest.fixture
def toy():
    with STRATEGIES.registered("toy", Toy):
        yield "toy"
    assert "toy" not in strategy_names()


def bot(tmp_path, reply="Toy answer."):
    from indexes.embed import HashEmbedder
    from tests.core.conftest import make_assistant, write_app

    return make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=lambda msgs, adapter: reply)


def test_registry_order_costs_and_rules_scores(toy):
    from hybrid.routing.config import RouterConfig, load_router_config
    from hybrid.routing.rules import score
    from hybrid.routing.signals import Signals

    assert strategy_names() == (*BUILTINS, "toy")  # built-ins first, then what was registered after
    assert costs()["toy"] == 0.3
    assert load_router_config().costs["toy"] == 0.3  # the class attribute is the default ...
    assert load_router_config(overrides={"costs": {"toy": 2.0}}).costs["toy"] == 2.0  # ... a config overrides
    sig = Signals(top=0.9, margin=0.3, example_sim=0.9, adapter_sim=0.9, qtype="lookup")
    assert score(sig, RouterConfig().rules)["toy"] == 0.0  # no signal ramp for it
    cfg = load_router_config(overrides={"rules": {"extra_scores": {"toy": 0.7}}})
    assert score(sig, cfg.rules)["toy"] == 0.7


def test_unregistered_names_are_refused_everywhere():
    from hybrid.eval.runner import EvalConfig
    from hybrid.routing.config import load_router_config

    assert "toy" not in strategy_names()
    with pytest.raises(ValueError, match="unknown strategy 'toy'"):
        load_router_config(overrides={"costs": {"toy": 1.0}})
    with pytest.raises(ValueError, match="unknown strategy 'toy'"):
        EvalConfig(strategies=["toy"])


def test_hybrid_ask_offers_and_runs_it(toy, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hybrid.cli import cli
    from tests.api.conftest import LEGAL_DOCS, LEGAL_EX, write_app

    monkeypatch.setenv("HYBRID_CACHE", str(tmp_path / "cache"))
    app = write_app(tmp_path, "legal", LEGAL_DOCS, LEGAL_EX)
    runner = CliRunner()
    assert "toy" in runner.invoke(cli, ["ask", "--help"]).output
    r = runner.invoke(cli, ["ask", "How much notice must a landlord give?", "--app", str(app),
                            "--strategy", "toy", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["strategy"] == "toy" and out["decision"]["strategy"] == "toy"
    bad = runner.invoke(cli, ["ask", "q", "--app", str(app), "--strategy", "nope"])
    assert bad.exit_code == 2 and "toy" in bad.output  # click lists the registered choices


def test_v1_ask_accepts_it_and_the_schema_lists_it(toy, tmp_path):
    import time

    from fastapi.testclient import TestClient

    from apps.api.backend import RealBackend
    from apps.api.server import create_app
    from tests.api.conftest import AUTH, make_settings

    backend = RealBackend([], assistants={"legal": bot(tmp_path)})
    with TestClient(create_app(make_settings(upload_dir=str(tmp_path / "up")), backend)) as c:
        for _ in range(500):
            if backend.ready():
                break
            time.sleep(0.01)
        enum = c.get("/openapi.json", headers=AUTH).json()["components"]["schemas"]["AskIn"]["properties"]["strategy"]["enum"]
        assert enum == ["auto", *BUILTINS, "toy"]
        r = c.post("/v1/ask", json={"app": "legal", "question": QUESTION, "strategy": "toy"}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["strategy"] == "toy" and r.json()["answer"] == "Toy answer."
        r = c.post("/v1/ask", json={"app": "legal", "question": QUESTION, "strategy": "nope"}, headers=AUTH)
        assert r.status_code == 422 and "toy" in r.json()["error"]["message"]


def test_eval_report_compares_it(toy, tmp_path):
    from hybrid.eval.runner import EvalConfig, run_eval

    assert EvalConfig().strategies == [*BUILTINS, "toy", "auto"]  # the default compares it too
    q = tmp_path / "questions.jsonl"
    q.write_text(json.dumps({"id": "r1", "question": QUESTION, "answer": "Toy answer.", "type": "retrieval"}) + "\n")
    cfg = EvalConfig(strategies=["few_shot", "toy", "auto"], batch_size=2, learned_cv=False)
    res = run_eval(None, q, tmp_path / "out", cfg, assistant=bot(tmp_path), progress=False)
    assert res.summary["strategies"]["toy"]["primary"]["mean"] == 1.0
    assert "toy" in (tmp_path / "out" / "report.md").read_text()


def test_learned_router_labels_include_it(toy):
    from hybrid.routing.learned import train_learned
    from indexes.embed import HashEmbedder

    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 4))
    scores = [{"rag": float(i % 2), "toy": float(1 - i % 2)} for i in range(8)]
    router, report = train_learned(X, scores, app_name="t", embedder=HashEmbedder(8), cfg=None, seed=0)
    assert "toy" in router.strategies and "toy" in report["strategies"]


def test_traits_decide_exclusion_cache_keys_and_groundedness(tmp_path):
    """A strategy declaring ``uses_kb = True`` is excluded like rag for an app with an empty KB, and gets
    a groundedness score in the evaluation rows; an undeclared one (Toy) is never excluded and gets none."""
    from hybrid.eval.runner import EvalConfig, run_eval
    from hybrid.strategies import strategy_traits
    from indexes.embed import HashEmbedder
    from tests.core.conftest import make_assistant, write_app

    with STRATEGIES.registered("kb_toy", KbToy), STRATEGIES.registered("toy", Toy):
        assert strategy_traits("kb_toy").uses_kb and strategy_traits("kb_toy").grounded
        assert not strategy_traits("toy").uses_kb and not strategy_traits("toy").grounded
        empty = make_assistant(write_app(tmp_path / "empty"), HashEmbedder(256), docs=[])
        excluded = empty.excluded()
        assert excluded["kb_toy"] == excluded["rag"] and "is empty" in excluded["rag"]
        assert "toy" not in excluded

        q = tmp_path / "questions.jsonl"
        q.write_text(json.dumps({"id": "r1", "question": QUESTION, "answer": "Toy answer.", "type": "retrieval"})
                     + "\n")
        cfg = EvalConfig(strategies=["kb_toy", "toy"], batch_size=2, learned_cv=False)
        res = run_eval(None, q, tmp_path / "out", cfg, assistant=bot(tmp_path), progress=False)
        rows = {r["strategy"]: r for r in res.rows}
        assert rows["kb_toy"]["scores"]["groundedness"] is not None
        assert rows["toy"]["scores"]["groundedness"] is None
        # the empty-KB app skips it with the same reason as rag
        res = run_eval(None, q, tmp_path / "out2", EvalConfig(strategies=["kb_toy", "toy"], learned_cv=False),
                       assistant=empty, progress=False)
        assert {r["strategy"] for r in res.rows} == {"toy"}


def test_a_strategy_declaring_uses_reader_gets_the_reader_and_embedder(tmp_path):
    seen = {}

    class ReaderToy(Toy):
        name = "reader_toy"
        uses_reader = True

        def build(self, query, ctx):
            seen.update(embedder=ctx.embedder, reader_threshold=ctx.reader_threshold)
            return super().build(query, ctx)

    with STRATEGIES.registered("reader_toy", ReaderToy), STRATEGIES.registered("toy", Toy):
        b = bot(tmp_path)
        b.ask(QUESTION, strategy="toy")
        assert seen == {}
        b.ask(QUESTION, strategy="reader_toy")
        # the app's embedder, behind the cache of sentence vectors zero-shot extract keeps
        assert seen["embedder"] is b.sentence_embedder and seen["embedder"].inner is b.embedder
        assert seen["embedder"].dim == b.embedder.dim


def test_builtin_traits_reproduce_the_name_keyed_rules():
    """The built-ins' traits give exactly what was keyed by name before: exclusions, cache keys, groundedness."""
    from hybrid.eval.runner import _cache_traits
    from hybrid.strategies import names_with

    assert names_with("uses_kb") == ("rag", "tuned_rag", "extract")
    assert names_with("uses_adapter") == ("tuned", "tuned_rag")
    assert names_with("uses_examples") == ("few_shot",)
    assert names_with("grounded") == ("rag", "tuned_rag", "extract")
    assert names_with("generates") == ("few_shot", "rag", "tuned", "tuned_rag")
    keyed = {s: (t.uses_adapter, t.uses_kb, t.uses_reader) for s in (*BUILTINS, "auto") for t in [_cache_traits(s)]}
    assert keyed == {"few_shot": (False, False, False), "rag": (False, True, False), "tuned": (True, False, False),
                     "tuned_rag": (True, True, False), "extract": (False, True, True), "auto": (True, True, True)}
