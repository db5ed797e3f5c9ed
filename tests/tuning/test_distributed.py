"""The multi-GPU launch path, on CPU: `torchrun --nproc-per-node 2 -m hybrid tune ...` with gloo.

Two ranks with one micro-batch each per step must match one process accumulating the same two
micro-batches: same steps, same tokens, same losses up to float-reduction noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _tune(args, tmp_path, nproc=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "hybrid", "tune", *args]
    else:
        cmd = [sys.executable, "-m", "hybrid", "tune", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_two_process_gloo_run_matches_single_process_accumulation(tmp_path, tiny_model_dir, catalogue_file):
    common = ["--data", str(catalogue_file), "--quiet", "--set", f"base_model={tiny_model_dir}",
              "--set", "train.max_steps=4", "--set", "data.max_length=96", "--set", "train.batch_tokens=192",
              "--set", "train.eval_every=2", "--set", "train.tensorboard=false", "--set", "train.lr=0.01",
              "--set", "data.system_prompt=You are a test shop assistant."]
    _tune(common + ["--out", str(tmp_path / "ddp")], tmp_path, nproc=2)
    _tune(common + ["--out", str(tmp_path / "single"), "--set", "train.grad_accum=2"], tmp_path)
    ddp = json.loads((tmp_path / "ddp" / "adapter_card.json").read_text())
    one = json.loads((tmp_path / "single" / "adapter_card.json").read_text())
    assert ddp["hyperparameters"]["world_size"] == 2 and one["hyperparameters"]["world_size"] == 1
    assert ddp["steps"] == one["steps"] == 4
    assert ddp["tokens_seen"] == one["tokens_seen"]
    hist_ddp = [v for _, v in ddp["extra"]["eval_history"]]
    hist_one = [v for _, v in one["extra"]["eval_history"]]
    assert hist_ddp == pytest.approx(hist_one, rel=1e-3)
    assert hist_ddp[-1] < hist_ddp[0]  # and it trained
