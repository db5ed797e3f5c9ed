"""The LangChain anchor runs as a user's ten-line chain would, never with the app's sampling settings."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

pytest.importorskip("langchain_community")

from hybrid.app import AppConfig, GenerationSection  # noqa: E402
from hybrid.eval.baseline import langchain_rag_baseline  # noqa: E402
from hybrid.eval.cache import AnswerCache  # noqa: E402
from hybrid.eval.data import Question  # noqa: E402
from hybrid.generation import ScriptedGenerator  # noqa: E402
from core.types import Document  # noqa: E402


def test_anchor_uses_plain_greedy_defaults_and_the_runs_length_cap(tmp_path):
    docs = [Document(id="d1", text="Returns are accepted within thirty days with a receipt.",
                     metadata={"source": "returns.md"})]
    app = AppConfig(name="shop", system_prompt="You are a shop assistant.",
                    generation=GenerationSection(max_new_tokens=77, repetition_penalty=1.3, temperature=0.7))
    gen = ScriptedGenerator()
    bot = SimpleNamespace(app=app, generator=gen, knowledge_base=SimpleNamespace(documents=lambda: docs))
    q = Question(id="q1", question="How long do I have to return an item?", answers=["thirty days"])
    rows = langchain_rag_baseline([q], bot=bot, cache=AnswerCache(tmp_path / "c.sqlite"), out=tmp_path,
                                  progress=False)
    assert [r["strategy"] for r in rows] == ["langchain"]
    (call,) = gen.calls
    assert dataclasses.astuple(call.params)[:1] == (77,)
    assert call.params.repetition_penalty == 1.0 and call.params.temperature == 0.0
    assert "thirty days" in call.prompt  # the retrieved context reached the prompt


def test_anchor_searches_only_the_document_a_question_is_scoped_to(tmp_path):
    docs = [Document(id="a", text="Acme keeps your e-mail address for ninety days.", metadata={"source": "acme.txt"}),
            Document(id="b", text="Zenith keeps your e-mail address for two years.", metadata={"source": "zenith.txt"})]
    app = AppConfig(name="policy", system_prompt="You answer questions about privacy policies.")
    gen = ScriptedGenerator()
    bot = SimpleNamespace(app=app, generator=gen, knowledge_base=SimpleNamespace(documents=lambda: docs))
    qs = [Question(id=f"q{i}", question="How long is my e-mail address kept?", answers=[a], filter={"source": s})
          for i, (s, a) in enumerate([("acme.txt", "ninety days"), ("zenith.txt", "two years")])]
    langchain_rag_baseline(qs, bot=bot, cache=AnswerCache(tmp_path / "c.sqlite"), out=tmp_path, progress=False)
    prompts = {c.prompt.count("Acme"): c.prompt.count("Zenith") for c in gen.calls}
    assert len(gen.calls) == 2 and prompts == {1: 0, 0: 1}  # each prompt saw only its own policy
