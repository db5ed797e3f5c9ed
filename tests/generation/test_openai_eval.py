"""``hybrid eval`` on the openai backend: a batch becomes concurrent requests, and the whole
evaluation runs through a (scripted loopback) server."""

from __future__ import annotations

import threading

from hybrid.generation import OpenAIGenerator
from tests.generation.openai_stub import Reply, StubServer, completion


def test_a_batch_is_sent_as_concurrent_requests():
    barrier = threading.Barrier(3, timeout=60)  # every request waits for the other two: only a concurrent batch passes

    def script(req):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return Reply(500, {"error": {"message": "requests arrived one at a time"}})
        return Reply(body=completion(req.body["messages"][-1]["content"] + "!"))

    with StubServer() as stub:
        stub.script = script
        gen = OpenAIGenerator("base", base_url=stub.url, tokenizer="estimate", retries=0, max_connections=3)
        outs = gen.generate_batch([[{"role": "user", "content": q}] for q in ("a", "b", "c")])
    assert [o.text for o in outs] == ["a!", "b!", "c!"]


def test_eval_runs_every_strategy_through_the_server(tmp_path):
    from core.protocols import Generator
    from hybrid.eval.runner import EvalConfig, run_eval
    from hybrid.pipeline import Assistant
    from indexes.embed import HashEmbedder
    from tests.core.conftest import DOCS, MemoryRetriever, load_app, write_app
    from tests.eval.test_runner import QUESTIONS, qfile

    def script(req):
        user = req.body["messages"][-1]["content"]
        text = "The notice period is 60 days [1]." if "60 days" in user and "notice period" in user else "I don't know."
        return Reply(body=completion(text, model=req.body["model"]))

    with StubServer(models=["base", "app"]) as stub:
        stub.script = script
        app = load_app(write_app(tmp_path / "app"))
        gen = OpenAIGenerator("base", base_url=stub.url, tokenizer="estimate", max_connections=4)
        assert isinstance(gen, Generator)
        emb = HashEmbedder(256)
        bot = Assistant(app, generator=gen, embedder=emb, knowledge_base=MemoryRetriever(list(DOCS), emb))
        cfg = EvalConfig(strategies=["few_shot", "rag", "auto"], batch_size=4)
        res = run_eval(None, qfile(tmp_path), tmp_path / "out", cfg, assistant=bot, progress=False)
    assert res.computed == len(QUESTIONS) * 3
    by = {(r["question_id"], r["strategy"]): r for r in res.rows}
    assert by[("r1", "rag")]["scores"]["f1"] > 0.5  # the server's answer, scored
    generated = [r for r in res.rows if r.get("completion_tokens")]  # direct "don't know" answers call no model
    # auto reuses the answer of the strategy it routed to, so there are fewer requests than answers
    assert generated and 0 < len(stub.chat_requests()) <= len(generated)
    assert {r["completion_tokens"] for r in generated} == {3}  # the server's usage (a local count would be 4 or 9)
