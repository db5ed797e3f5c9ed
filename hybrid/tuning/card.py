"""The adapter card: what an adapter was trained on, with what, and how well.

Every adapter directory holds ``adapter_card.json`` (read by the generator before it loads the adapter)
and a ``README.md`` rendered from the same data. The generator refuses an adapter whose
``base_model_sha`` differs from the loaded base model, and warns when the chat template or the system
prompt at inference hashes differently from ``template_hash`` / ``system_prompt_hash``::

    card = AdapterCard(base_model_id="SmolLM2-135M-Instruct", base_model_sha="ab12...", method="lora")
    write_card(card, "adapters/shop")
    card = read_card("adapters/shop")
    check_base_model(card, model_id="SmolLM2-135M-Instruct", sha="ab12...")  # raises ModelError on mismatch
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import InputError, ModelError

CARD_FILE = "adapter_card.json"
README_FILE = "README.md"
CARD_VERSION = 1


@dataclass
class DataFile:
    """One training or eval file: its path as given, content hash and kept row count."""

    path: str
    sha256: str
    rows: int
    split: str = "train"  # "train" | "eval"
    skipped: int = 0  # rows dropped at reading AND at tokenization (e.g. too_long), as the printed report
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # reason -> count, summing to ``skipped``


@dataclass
class AdapterCard:
    """Provenance of one adapter (JSON-serialisable; unknown keys in a newer card are kept in ``extra``)."""

    base_model_id: str
    base_model_sha: str
    method: str  # "lora" | "prompt_tuning" | "prefix_tuning" | "ia3" | "full"
    template_hash: str = ""
    system_prompt: str = ""
    system_prompt_hash: str = ""
    data: list[DataFile] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    train_loss: float | None = None
    eval_loss: float | None = None
    wall_time_s: float = 0.0
    tokens_seen: int = 0
    steps: int = 0
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    card_version: int = CARD_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "AdapterCard":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("base_model_id", "base_model_sha", "method") if k not in raw]
        if missing:
            raise InputError(f"adapter card lacks {', '.join(missing)}")
        known = {k: v for k, v in raw.items() if k in names}
        extra = dict(known.pop("extra", {}) or {})
        extra.update({k: v for k, v in raw.items() if k not in names})
        known["data"] = [DataFile(**d) if isinstance(d, dict) else d for d in known.get("data", [])]
        return cls(**known, extra=extra)


def card_markdown(card: AdapterCard) -> str:
    """The human-readable twin of ``adapter_card.json``."""

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    lines = [
        f"# Adapter ({card.method})",
        "",
        f"- base model: `{card.base_model_id}` (sha256 `{card.base_model_sha[:16]}`)",
        f"- chat template hash: `{card.template_hash[:16]}`",
        f"- system prompt hash: `{card.system_prompt_hash[:16]}`",
        f"- train loss ({card.extra.get('train_loss_basis', 'mean of the last steps')}): "
        f"{fmt(card.train_loss)}, eval loss: {fmt(card.eval_loss)}",
        f"- steps: {card.steps}, tokens seen: {card.tokens_seen}, wall time: {card.wall_time_s:.1f} s",
        f"- created: {card.created}",
        "",
        "## System prompt",
        "",
        "```text",
        card.system_prompt or "(none)",
        "```",
        "",
        "## Data",
        "",
        "| split | file | rows | skipped | sha256 |",
        "|---|---|---:|---:|---|",
    ]
    for d in card.data:
        why = " (" + ", ".join(f"{k}: {v}" for k, v in sorted(d.skipped_reasons.items())) + ")" \
            if d.skipped_reasons else ""
        lines.append(f"| {d.split} | `{d.path}` | {d.rows} | {d.skipped}{why} | `{d.sha256[:16]}` |")
    lines += ["", "## Hyperparameters", "", "```json",
              json.dumps(card.hyperparameters, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def write_card(card: AdapterCard, directory: str | os.PathLike[str]) -> None:
    """Write ``adapter_card.json`` and ``README.md`` into ``directory`` (each file atomically)."""
    from core.io import atomic_write_text

    d = Path(directory)
    atomic_write_text(d / CARD_FILE, json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
    atomic_write_text(d / README_FILE, card_markdown(card))


def read_card(directory: str | os.PathLike[str]) -> AdapterCard:
    """Read an adapter's card; a missing or unreadable card is a one-line ``InputError``."""
    p = Path(directory) / CARD_FILE
    if not p.is_file():
        raise InputError(f"{directory} is not an adapter trained here: {CARD_FILE} not found")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: unreadable adapter card ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: adapter card must be a JSON object")
    return AdapterCard.from_dict(raw)


def check_base_model(card: AdapterCard, *, model_id: str, sha: str, where: str = "adapter") -> None:
    """Refuse an adapter trained on another base model: LoRA deltas are meaningless on other weights."""
    if card.base_model_sha and sha and card.base_model_sha != sha:
        raise ModelError(
            f"{where} was trained on base model {card.base_model_id!r} (sha {card.base_model_sha[:12]}), "
            f"but the loaded base model is {model_id!r} (sha {sha[:12]}); retrain it or load that base model"
        )
