"""Exact resume from a checkpoint, and a clear error for a damaged one."""

from __future__ import annotations

import pytest

from core.errors import InputError
from hybrid.tuning.trainer import run_dir_for, train
from tests.tuning.conftest import make_tiny_model, tiny_cfg


class Interrupted(Exception):
    pass


def _stop_at(step):
    def cb(s, row):
        if s == step:
            raise Interrupted()

    return cb


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tokenizer, catalogue_file):
    # dropout on, so the restored RNG state matters too
    cfg = tiny_cfg("train.max_steps=6", "train.save_every=3", "lora.dropout=0.1", "train.eval_every=3")
    full = train(cfg, [catalogue_file], tmp_path / "a", model=make_tiny_model(tokenizer), tokenizer=tokenizer)
    with pytest.raises(Interrupted):
        train(cfg, [catalogue_file], tmp_path / "b", model=make_tiny_model(tokenizer), tokenizer=tokenizer,
              on_step=_stop_at(4))
    assert (run_dir_for(tmp_path / "b") / "checkpoints" / "step-0000003").is_dir()
    # a fresh process would reload the same base model; the adapter, optimizer, RNG and data position
    # must all come from the checkpoint
    resumed = train(cfg, [catalogue_file], tmp_path / "b", model=make_tiny_model(tokenizer),
                    tokenizer=tokenizer, resume=True)
    assert resumed.steps == 6
    assert resumed.step_losses == full.step_losses  # bit-exact, including steps 4-6
    assert resumed.eval_history == full.eval_history
    assert resumed.tokens_seen == full.tokens_seen


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tokenizer, tiny_model, catalogue_file):
    with pytest.raises(InputError, match="nothing to resume: no checkpoint"):
        train(tiny_cfg(), [catalogue_file], tmp_path / "x", model=tiny_model, tokenizer=tokenizer, resume=True)


@pytest.mark.parametrize("damage", ["truncate_weights", "garble_state", "delete_optimizer"])
def test_resume_from_a_corrupt_checkpoint(tmp_path, tokenizer, catalogue_file, damage):
    cfg = tiny_cfg("train.max_steps=4", "train.save_every=2")
    with pytest.raises(Interrupted):
        train(cfg, [catalogue_file], tmp_path / "c", model=make_tiny_model(tokenizer), tokenizer=tokenizer,
              on_step=_stop_at(3))
    ckpt = run_dir_for(tmp_path / "c") / "checkpoints" / "step-0000002"
    if damage == "truncate_weights":
        w = ckpt / "trainable.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "garble_state":
        (ckpt / "state.json").write_text("{not json")
    else:
        (ckpt / "optimizer.safetensors").unlink()
    with pytest.raises(InputError, match=r"checkpoint .*step-0000002 is unusable \(.+\); delete it"):
        train(cfg, [catalogue_file], tmp_path / "c", model=make_tiny_model(tokenizer), tokenizer=tokenizer,
              resume=True)


def test_resume_with_other_settings_is_refused(tmp_path, tokenizer, catalogue_file):
    cfg = tiny_cfg("train.max_steps=4", "train.save_every=2")
    with pytest.raises(Interrupted):
        train(cfg, [catalogue_file], tmp_path / "d", model=make_tiny_model(tokenizer), tokenizer=tokenizer,
              on_step=_stop_at(3))
    with pytest.raises(InputError, match="different settings"):
        train(tiny_cfg("train.max_steps=4", "train.save_every=2", "train.lr=0.5"), [catalogue_file],
              tmp_path / "d", model=make_tiny_model(tokenizer), tokenizer=tokenizer, resume=True)
