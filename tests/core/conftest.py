"""Fixtures for the core tests: a small app on disk with fakes (hash embedder, scripted generator,
in-memory retriever). Real-model tests live in test_real.py (marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid.app import load_app
from hybrid.generation import ScriptedGenerator
from hybrid.pipeline import Assistant
from indexes.embed import HashEmbedder

from tests.core.fakes import MemoryRetriever

APP_YAML = """\
name: testapp
title: Test Helper
system_prompt: "You are {app_name}. Today is {date}. Answer briefly."
knowledge_base:
  embedder: hash:256
examples:
  path: examples.jsonl
  max_k: 3
adapter:
  path: adapter
  tune_data: tune.jsonl
rag:
  k: 4
  min_score: 0.2
generation:
  model: scripted
  max_new_tokens: 32
"""

DOCS = [
    ("The lease notice period is 60 days for residential tenants.", {"source": "lease.md", "page": 1}),
    ("Security deposits must be returned within 14 days after the tenancy ends.", {"source": "deposit.md"}),
    ("Warranty claims on appliances are handled within 30 days.", {"source": "warranty.md", "page": 3}),
]
EXAMPLES = [
    {"question": "Draft a one-line reminder about rent due", "answer": "Reminder: rent is due on the 1st."},
    {"question": "Rewrite this clause in plain English: the lessee shall remit", "answer": "The tenant pays."},
    {"question": "Summarize the pet policy in one sentence", "answer": "Pets need written consent.",
     "reasoning": "The policy requires consent."},
    {"question": "Write a polite reply declining a refund", "answer": "We are sorry, no refund applies."},
]
TUNE = [{"messages": [{"role": "user", "content": f"What does our house style say about topic {i}?"},
                      {"role": "assistant", "content": "Short and plain."}]} for i in range(5)]


def write_app(root: Path, *, adapter: bool = True, examples=EXAMPLES, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.yaml").write_text(APP_YAML + extra)
    (root / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    (root / "tune.jsonl").write_text("".join(json.dumps(e) + "\n" for e in TUNE))
    if adapter:
        (root / "adapter").mkdir(exist_ok=True)
        (root / "adapter" / "adapter_card.json").write_text(json.dumps({
            "base_model_id": "scripted", "base_model_sha": "scripted", "method": "lora"}))
    return root


@pytest.fixture
def embedder():
    return HashEmbedder(256)


@pytest.fixture
def app_dir(tmp_path):
    return write_app(tmp_path / "testapp")


def make_assistant(app_dir: Path, embedder, *, docs=DOCS, replies=None, context_window=4096, date="2026-01-02"):
    gen = ScriptedGenerator(replies, context_window=context_window)
    kb = MemoryRetriever(list(docs), embedder)
    return Assistant(load_app(app_dir), generator=gen, embedder=embedder, knowledge_base=kb, date=date)


@pytest.fixture
def bot(app_dir, embedder):
    return make_assistant(app_dir, embedder)
