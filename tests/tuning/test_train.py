"""The loop on a tiny random Llama: every method trains, the card is complete, bad configs fail clearly."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigError
from hybrid.tuning.card import read_card
from hybrid.tuning.trainer import lr_at, train
from tests.tuning.conftest import make_tiny_model, tiny_cfg


def test_lora_run_writes_adapter_card_and_metrics(tmp_path, tokenizer, tiny_model, catalogue_file):
    out = tmp_path / "adapters" / "shop"
    res = train(tiny_cfg("train.max_steps=6", "train.log_every=2"), [catalogue_file], out,
                model=tiny_model, tokenizer=tokenizer)
    files = sorted(p.name for p in out.iterdir())
    assert {"adapter_model.safetensors", "adapter_config.json", "adapter_card.json", "README.md",
            "metrics.jsonl", "tune_config.json"} <= set(files)
    card = read_card(out)
    raw = json.loads((out / "adapter_card.json").read_text())
    for key in ("base_model_id", "base_model_sha", "template_hash", "system_prompt", "system_prompt_hash",
                "method", "data", "hyperparameters", "train_loss", "eval_loss", "wall_time_s", "tokens_seen",
                "created"):
        assert key in raw, key
    assert card.base_model_id == "tiny-llama" and card.base_model_sha == "tiny-sha-0"
    assert card.system_prompt == "You are a test shop assistant."
    from hybrid.chat import system_prompt_hash, template_hash

    assert card.system_prompt_hash == system_prompt_hash("You are a test shop assistant.")
    assert card.template_hash == template_hash(tokenizer)
    assert card.data[0].rows == 60 and len(card.data[0].sha256) == 64
    assert card.hyperparameters["config"]["lora"]["r"] == 16
    assert card.tokens_seen == res.tokens_seen > 0 and card.steps == 6
    assert card.eval_loss == res.eval_history[-1][1]
    assert [s for s, _ in res.eval_history] == [0, 2, 4, 6]  # 0 = before training
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6]
    assert all(r["tokens_per_s"] > 0 for r in lines if "loss" in r)
    assert "tiny-llama" in (out / "README.md").read_text()


def test_loss_falls_on_the_tiny_model(tokenizer, tiny_model, catalogue_file):
    # full fine-tuning: a 32-wide random model has too little for a rank-16 update to bite in 12 steps
    res = train(tiny_cfg("method=full", "train.max_steps=12", "train.eval_every=4", "train.lr=0.01"),
                [catalogue_file], None, model=tiny_model, tokenizer=tokenizer)
    assert res.eval_history[-1][1] < res.eval_history[0][1] - 1.0
    assert sum(res.step_losses[-3:]) < sum(res.step_losses[:3])


@pytest.mark.parametrize("method,extra", [
    ("lora", ["lora.use_rslora=true", "lora.use_dora=true", "lora.r=4", "lora.dropout=0.1"]),
    ("prompt_tuning", ["prompt_tuning.num_virtual_tokens=4"]),
    ("prefix_tuning", ["prefix_tuning.num_virtual_tokens=4"]),
    ("ia3", []),
    ("full", ["train.lr=0.001"]),
])
def test_every_method_trains_and_saves(tmp_path, tokenizer, tiny_model, catalogue_file, method, extra):
    out = tmp_path / method
    res = train(tiny_cfg(f"method={method}", "train.max_steps=2", *extra), [catalogue_file], out,
                model=tiny_model, tokenizer=tokenizer)
    assert res.steps == 2 and res.eval_loss is not None
    assert read_card(out).method == method
    weights = out / ("model.safetensors" if method == "full" else "adapter_model.safetensors")
    assert weights.is_file() and weights.stat().st_size > 0
    if method != "full":
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["peft_type"] == {"lora": "LORA", "prompt_tuning": "PROMPT_TUNING",
                                    "prefix_tuning": "PREFIX_TUNING", "ia3": "IA3"}[method]
        if method == "lora":
            assert cfg["use_dora"] and cfg["use_rslora"] and cfg["r"] == 4


def test_rank_zero_is_refused():
    with pytest.raises(ConfigError, match=r"lora.r \(rank\) must be > 0, got 0"):
        tiny_cfg("lora.r=0")


def test_unknown_target_module_lists_the_models_modules(tokenizer, tiny_model, catalogue_file):
    with pytest.raises(ConfigError) as e:
        train(tiny_cfg("lora.target_modules=[q_proj, qkv_proj]"), [catalogue_file], None,
              model=tiny_model, tokenizer=tokenizer)
    msg = str(e.value)
    assert "['qkv_proj'] not found" in msg
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert name in msg


def test_grad_accumulation_matches_one_big_batch(tokenizer, catalogue_file):
    """Two micro-batches accumulated == the same tokens in one micro-batch (token-weighted loss)."""
    a = train(tiny_cfg("train.max_steps=3", "train.batch_tokens=192", "train.grad_accum=2", "data.max_length=96",
                       "train.pack_length=96", "train.eval_every=3"),
              [catalogue_file], None, model=make_tiny_model(tokenizer), tokenizer=tokenizer)
    b = train(tiny_cfg("train.max_steps=3", "train.batch_tokens=384", "train.grad_accum=1", "data.max_length=96",
                       "train.pack_length=96", "train.eval_every=3"),
              [catalogue_file], None, model=make_tiny_model(tokenizer), tokenizer=tokenizer)
    # same rows per step (2 x 2 rows vs 1 x 4 rows, same packing order) -> same losses up to float noise
    assert a.tokens_seen == b.tokens_seen
    assert a.step_losses == pytest.approx(b.step_losses, rel=2e-3)


def test_early_stopping_keeps_the_best_weights(tokenizer, tiny_model, catalogue_file):
    # a demanded improvement no eval can meet: patience runs out after two more evals
    res = train(tiny_cfg("train.max_steps=20", "train.eval_every=1", "train.early_stopping_patience=2",
                         "train.early_stopping_delta=100.0"), [catalogue_file], None,
                model=tiny_model, tokenizer=tokenizer)
    assert res.stopped_early and res.steps == 3
    assert res.eval_loss == res.eval_history[1][1]  # the step-1 eval ([0] is before training)


def test_lr_schedule_warms_up_then_decays():
    cfg = tiny_cfg("train.warmup_steps=4", "train.lr=0.1", "train.min_lr_ratio=0.1").train
    lrs = [lr_at(s, 20, cfg) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(x >= y for x, y in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.01, abs=2e-3)


def test_bf16_falls_back_to_fp32_without_native_support(monkeypatch):
    import torch

    from hybrid.tuning.trainer import use_bf16

    monkeypatch.setenv("HYBRID_BF16", "0")
    assert use_bf16("auto", torch.device("cpu")) is False
    monkeypatch.setenv("HYBRID_BF16", "1")
    assert use_bf16("auto", torch.device("cpu")) is True
    assert use_bf16("fp32", torch.device("cpu")) is False
