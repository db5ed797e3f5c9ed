"""Atomic adapter output, the base-model check on load, and merging an adapter into its base.

An adapter directory is built complete in a temp directory next to the target, then swapped in with
renames, so a crash or a full disk while saving leaves the previous adapter as it was::

    save_adapter(model, "adapters/shop", card=card, tokenizer=tok)   # adapter_model.safetensors, adapter_config.json,
                                                                     # adapter_card.json, README.md
    model = load_adapter(base_model, "adapters/shop")                # refuses another base model
    merge_adapter("adapters/shop", "models/shop-merged")             # plain HF model dir
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.errors import HybridError, InputError, ModelError
from core.io import fsync_dir, fsync_tree
from hybrid.tuning.card import AdapterCard, check_base_model, read_card, write_card

log = logging.getLogger(__name__)

WEIGHTS_FILE = "adapter_model.safetensors"


def safetensors_save(tensors: dict[str, Any], path: str, metadata: dict[str, str] | None = None) -> None:
    """The one place adapter weights hit the disk (tests simulate a full disk here)."""
    from safetensors.torch import save_file

    save_file(tensors, path, metadata=metadata)


def _write_contents(model: Any, tmp: Path, card: AdapterCard, tokenizer: Any | None) -> None:
    from hybrid.tuning.methods import is_peft

    if is_peft(model):
        from peft import get_peft_model_state_dict

        state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        safetensors_save(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        # peft's own config writer keeps adapter_config.json loadable by PeftModel.from_pretrained.
        model.peft_config["default"].save_pretrained(str(tmp))
    else:
        # Full fine-tuning: the output is a complete model directory (usable as a base model path).
        # save_pretrained knows which weights are tied and writes safetensors shards.
        model.save_pretrained(str(tmp), safe_serialization=True)
    if tokenizer is not None and not is_peft(model):
        tokenizer.save_pretrained(str(tmp))
    write_card(card, tmp)


def save_adapter(model: Any, out: str | os.PathLike[str], *, card: AdapterCard, tokenizer: Any = None,
                 extra_files: dict[str, str] | None = None) -> Path:
    """Write the adapter (or full model) to ``out`` atomically; ``extra_files`` maps name -> text."""
    from core.io import atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        _write_contents(model, tmp, card, tokenizer)
        for name, text in (extra_files or {}).items():
            atomic_write_text(tmp / name, text)
        os.chmod(tmp, 0o755)
        fsync_tree(tmp)
        if out.exists():
            # Two renames; between them `out` is briefly absent but both versions exist on disk.
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.rename(out, old)
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.rename(old, out)
        if e.errno == errno.ENOSPC:
            raise HybridError(f"disk full while saving the adapter to {out}; "
                              f"{'the previous adapter is intact' if out.exists() else 'nothing was written'}"
                              ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def load_adapter(model: Any, adapter_dir: str | os.PathLike[str], *, name: str = "default",
                 is_trainable: bool = False) -> Any:
    """Attach a saved adapter to ``model`` after checking it was trained on this very base model.

    ``model.hybrid_resolved`` (set by ``hybrid.models.load_base_model``) supplies the base model's id and
    hash; an adapter from another base is refused with ``ModelError``.
    """
    from peft import PeftModel

    card = read_card(adapter_dir)
    resolved = getattr(model, "hybrid_resolved", None)
    if resolved is None:
        raise ModelError("cannot verify the adapter's base model: load the base with hybrid.models.load_base_model")
    check_base_model(card, model_id=resolved.model_id, sha=resolved.sha, where=f"adapter {adapter_dir}")
    if card.method == "full":
        raise InputError(f"{adapter_dir} holds a fully fine-tuned model, not an adapter; use it as the base model")
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name, is_trainable=is_trainable)


def merge_adapter(adapter_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  base_model: str | None = None) -> Path:
    """Fold a LoRA/IA3 adapter into its base weights and save a standalone model directory."""
    from hybrid.models import load_base_model

    card = read_card(adapter_dir)
    if card.method in ("prompt_tuning", "prefix_tuning"):
        raise InputError(f"{card.method} adapters add virtual tokens and cannot be merged into weights; "
                         "load them as adapters instead")
    if card.method == "full":
        raise InputError(f"{adapter_dir} is already a full model; nothing to merge")
    base, tokenizer = load_base_model(base_model or card.extra.get("base_model_arg") or card.base_model_id)
    peft_model = load_adapter(base, adapter_dir)
    merged = peft_model.merge_and_unload()
    merged_card = AdapterCard.from_dict({**card.to_dict(), "method": "full",
                                         "extra": {**card.extra, "merged_from": str(adapter_dir),
                                                   "merged_method": card.method}})
    merged.hybrid_resolved = getattr(base, "hybrid_resolved", None)
    return save_adapter(merged, out, card=merged_card, tokenizer=tokenizer)


def read_adapter_card(adapter_dir: str | os.PathLike[str]) -> AdapterCard:
    return read_card(adapter_dir)
