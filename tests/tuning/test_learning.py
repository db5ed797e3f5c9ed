"""Proof that tuning learns: the embedded SmolLM2-135M picks up a house style it never shows by itself.

A LoRA run on the sample catalogue (configs/tiny-lora.yaml, shortened) must lower the eval loss on
held-out products, and on prompts about products it never saw, the tuned model must answer in the
house style (fixed opening and sign-off) while the base model, given the same system prompt, does not.
Generation goes through the real inference path (``HFGenerator`` with the adapter loaded by name).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import load_config
from core.io import write_jsonl
from hybrid.tuning.config import TuneConfig
from hybrid.tuning.data import rows_from_records, split_by_source
from hybrid.tuning.sample import SYSTEM_PROMPT, catalogue_rows, follows_house_style
from hybrid.tuning.trainer import train

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture
def fair_share_threads():
    """On a machine already busier than its core count, OpenMP threads spin against each other and a
    step gets ~5x slower than with one thread; take one thread then (CI on an idle runner keeps all)."""
    import torch

    before = torch.get_num_threads()
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tuned_model_learns_the_house_style(tmp_path, fair_share_threads):
    data = tmp_path / "catalogue.jsonl"
    write_jsonl(data, catalogue_rows())
    cfg = load_config(TuneConfig, ROOT / "configs" / "tiny-lora.yaml", [
        "train.max_steps=10", "train.eval_every=5", "data.eval_fraction=0.1", "train.save_every=0", "train.progress=false",
        "train.tensorboard=false"])
    assert cfg.data.system_prompt == SYSTEM_PROMPT
    out = tmp_path / "kestrel"
    res = train(cfg, [data], out)
    (s0, before), *_, (s_end, after) = res.eval_history
    assert (s0, s_end) == (0, 10)
    assert after < 0.5 * before, res.eval_history

    # held-out prompts: products of the eval split (never trained on) and products that do not exist
    rows, _ = rows_from_records(catalogue_rows())
    _, held_out = split_by_source(rows, cfg.data.eval_fraction, seed=cfg.train.seed)
    prompts = [held_out[i].messages[0]["content"] for i in (0, 7)]
    prompts += ["How much does the Orbit Pro kayak cost?", "What is the Falcon Trail lantern made of?"]

    from hybrid.generation import HFGenerator
    from core.protocols import GenerationParams

    del res  # free the training copy before loading the generator
    gen = HFGenerator("default", system_prompt=SYSTEM_PROMPT)
    gen.warm_up()
    gen.load_adapter("kestrel", out)
    params = GenerationParams(max_new_tokens=40, temperature=0.0)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    tuned = [g.text for g in gen.generate_batch(chats, adapter="kestrel", params=params)]
    base = [g.text for g in gen.generate_batch(chats, params=params)]
    tuned_ok = [follows_house_style(t) for t in tuned]
    base_ok = [follows_house_style(t) for t in base]
    assert sum(tuned_ok) >= 3, list(zip(prompts, tuned))
    assert sum(base_ok) == 0, list(zip(prompts, base))
