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
from hybrid.types import Document  # noqa: E402


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
