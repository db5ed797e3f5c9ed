"""Tuning: turn chat / Alpaca / plain-text data into a LoRA (or prompt, prefix, IA3, full) fine-tune.

Entry points (heavy libraries load only when these are called)::

    from hybrid.tuning import TuneConfig, train
    cfg = load_config(TuneConfig, "configs/lora.yaml", ["train.max_steps=50"])
    result = train(cfg, data=["train.jsonl"], out="adapters/shop")

The card every adapter carries is described in ``hybrid.tuning.card``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TuneConfig", "train", "merge_adapter", "AdapterCard", "read_card"]


def __getattr__(name: str) -> Any:
    # Lazy re-exports keep `import hybrid.tuning` free of torch/peft imports.
    if name == "TuneConfig":
        from hybrid.tuning.config import TuneConfig

        return TuneConfig
    if name == "train":
        from hybrid.tuning.trainer import train

        return train
    if name == "merge_adapter":
        from hybrid.tuning.save import merge_adapter

        return merge_adapter
    if name in ("AdapterCard", "read_card"):
        from hybrid.tuning import card

        return getattr(card, name)
    raise AttributeError(name)
