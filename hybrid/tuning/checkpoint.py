"""Checkpoints for exact resume, without pickle: tensors in safetensors, everything else in JSON.

A checkpoint directory holds the trainable weights, the AdamW state (moments and step counts), the RNG
states (torch CPU/CUDA, Python's ``random``) and the loop position. Resuming from it reproduces the
uninterrupted run's losses (``tests/tuning/test_resume.py``)::

    save_checkpoint(run_dir / "checkpoints", step=50, model=m, optimizer=opt, state={...})
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    state = load_checkpoint(ckpt, model=m, optimizer=opt)   # -> the JSON state dict
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.io import atomic_write_text, fsync_dir, fsync_tree

FORMAT = 1


def trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer: Any, names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flatten AdamW's state into name-keyed tensors plus a JSON description of the param groups."""
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"{names[idx]}::{k}"] = t.detach().clone().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def set_rng_state(tensors: dict[str, Any], js: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = js["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(root: str | os.PathLike[str], *, step: int, model: Any, optimizer: Any,
                    state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``root/step-XXXXXX`` through a temp dir and one rename; prune to the newest ``keep``."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".step-", suffix=".tmp", dir=root))
    try:
        params = [n for n, p in model.named_parameters() if p.requires_grad]
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        opt_t, opt_js = _optimizer_tensors(optimizer, params)
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
        rng_t, rng_js = rng_state()
        save_file(rng_t, str(tmp / "rng.safetensors"))
        meta = {"format": FORMAT, "step": step, "param_names": params, "optimizer": opt_js,
                "rng": rng_js, "state": state}
        atomic_write_text(tmp / "state.json", json.dumps(meta, indent=1))
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    root = Path(root)
    found = sorted(root.glob("step-*")) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike[str], *, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restore weights, optimizer and RNG from ``path``; a damaged checkpoint is one clear ``InputError``."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)

    def corrupt(why: str) -> InputError:
        return InputError(f"checkpoint {path} is unusable ({why}); delete it to start over, "
                          "or train without --resume")

    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        weights = load_file(str(path / "trainable.safetensors"))
        opt_t = load_file(str(path / "optimizer.safetensors"))
        rng_t = load_file(str(path / "rng.safetensors"))
    except FileNotFoundError as e:
        raise corrupt(f"missing {Path(e.filename).name if e.filename else e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise corrupt(f"state.json: {e}") from None
    except Exception as e:  # safetensors raises its own SafetensorError on truncated/garbled files
        raise corrupt(f"{type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise corrupt(f"unknown format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if meta.get("param_names") != names or set(weights) != set(names):
        raise corrupt("its trainable parameters differ from this model's: was it written with another "
                      "method or config?")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            if weights[n].shape != params[n].shape:
                raise corrupt(f"{n} has shape {tuple(weights[n].shape)}, expected {tuple(params[n].shape)}")
            params[n].copy_(weights[n])
    state: dict[int, dict[str, Any]] = {}
    for key, t in opt_t.items():
        name, _, field = key.rpartition("::")
        if name not in names:
            raise corrupt(f"optimizer state for unknown parameter {name}")
        state.setdefault(names.index(name), {})[field] = t
    groups = meta["optimizer"]["param_groups"]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise corrupt(f"optimizer state: {e}") from None
    set_rng_state(rng_t, meta["rng"])
    return meta["state"]
