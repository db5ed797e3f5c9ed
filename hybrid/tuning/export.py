"""``hybrid tune export``: an adapter made ready for a serving engine, with the command that serves it.

    result = export_adapter("adapters/legal", "vllm", name="legal")
    result.out        # adapters/legal-vllm: adapter_config.json + adapter_model.safetensors + card
    result.commands   # ["vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora ... legal=..."]

- ``vllm``: vLLM loads PEFT LoRA directories as they are. The export copies the weights and the card
  into a new directory (written beside it, then renamed into place) and points the config's
  ``base_model_name_or_path`` at the base model's hub id, since the path this machine trained from
  means nothing on the GPU server.
- ``llamacpp``: llama.cpp needs a GGUF LoRA, made by ``convert_lora_to_gguf.py`` from a llama.cpp
  checkout. That script is not a package this project can depend on and is not installed here, so
  nothing is written: the export checks the adapter and prints the conversion and server commands.

Both engines serve LoRA only (not prompt/prefix tuning or IA3); other adapters are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError

__all__ = ["export_adapter", "ExportResult", "TARGETS"]

TARGETS = ("vllm", "llamacpp")
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class ExportResult:
    target: str
    name: str
    base_model: str
    out: Path | None  # None: nothing written (llamacpp)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_adapter(adapter: Path) -> tuple[dict, object | None]:
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise InputError(f"{adapter} is not a peft adapter directory (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{cfg_path}: unreadable adapter config ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path}: adapter config must be a JSON object")
    if cfg.get("peft_type") != "LORA":
        raise InputError(f"{adapter} is a {cfg.get('peft_type')} adapter; vLLM and llama.cpp serve LoRA adapters only "
                         "(train with method: lora, or merge it with `hybrid tune merge` and serve the merged model)")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise InputError(f"{adapter} has no adapter_model.safetensors (only safetensors adapters are exported)")
    card = None
    if (adapter / "adapter_card.json").is_file():
        from hybrid.tuning.card import read_card

        card = read_card(adapter)
    return cfg, card


def _base_model(cfg: dict, card) -> str:
    """The base model's name as a server would know it: the hub id for the embedded SmolLM2."""
    from hybrid.models import _DEFAULT_ALIASES

    base = getattr(card, "base_model_id", "") or str(cfg.get("base_model_name_or_path") or "")
    if base in _DEFAULT_ALIASES or Path(base).name == "SmolLM2-135M-Instruct":
        return EMBEDDED_HUB_ID
    return base or "BASE_MODEL"


def _lora_rank_for_vllm(r: int) -> int:
    """vLLM's --max-lora-rank takes one of a few sizes (8, 16, 32, 64, ...): the smallest that fits."""
    size = 8
    while size < r:
        size *= 2
    return size


def export_adapter(adapter: str | os.PathLike[str], target: str, *, out: str | os.PathLike[str] | None = None,
                   name: str | None = None, force: bool = False) -> ExportResult:
    """Check ``adapter`` and write (vllm) or describe (llamacpp) what ``target`` serves."""
    if target not in TARGETS:
        raise InputError(f"unknown export target {target!r}; known: {', '.join(TARGETS)}")
    src = Path(adapter).expanduser().resolve()
    if not src.is_dir():
        raise InputError(f"adapter directory {src} not found")
    cfg, card = _read_adapter(src)
    name = name or src.name
    base = _base_model(cfg, card)
    rank = int(cfg.get("r") or 8)
    result = ExportResult(target, name, base, None)
    if card is None:
        result.notes.append(f"{src} has no adapter_card.json: its base model is read from adapter_config.json "
                            f"({base}), and the app cannot check its system prompt")
    if target == "llamacpp":
        return _llamacpp(src, name, base, out, result)
    dest = Path(out).expanduser().resolve() if out else src.with_name(f"{src.name}-vllm")
    if dest == src:
        raise InputError("--out must differ from the adapter directory")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise InputError(f"{dest} already exists; pass --force to replace it")
    if cfg.get("modules_to_save"):
        result.notes.append(f"modules_to_save {cfg['modules_to_save']} are not LoRA weights; vLLM ignores or "
                            "refuses them, so answers may differ from this machine's")
    new_cfg = {**cfg, "base_model_name_or_path": base}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copy2(src / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        (tmp / "adapter_config.json").write_text(json.dumps(new_cfg, indent=2, sort_keys=True) + "\n")
        for extra in ("adapter_card.json", "README.md"):
            if (src / extra).is_file():
                shutil.copy2(src / extra, tmp / extra)
        from core.io import fsync_tree

        fsync_tree(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result.out = dest
    result.commands = [f"vllm serve {base} --enable-lora --max-lora-rank {_lora_rank_for_vllm(rank)} "
                       f"--lora-modules {name}={dest}"]
    result.notes.append(f"copy {dest} to the GPU server and use its path there in --lora-modules; requests with "
                        f"model: {name} then use the adapter (app.yaml: generation.openai.adapter_model: {name})")
    return result


def _llamacpp(src: Path, name: str, base: str, out, result: ExportResult) -> ExportResult:
    gguf = Path(out).expanduser() / f"{name}-lora-f16.gguf" if out else src.with_name(f"{name}-lora-f16.gguf")
    local_base, base_gguf = "BASE_MODEL_DIR", "BASE_MODEL.gguf"
    if base == EMBEDDED_HUB_ID:  # the embedded model: its HF directory (once converted) and its own GGUF
        from core.errors import ModelError
        from hybrid.models import converted_dir, embedded_gguf_path

        if (converted_dir() / "config.json").is_file():
            local_base = str(converted_dir())
        try:
            base_gguf = str(embedded_gguf_path())
        except ModelError:
            pass
    result.commands = [
        f"python llama.cpp/convert_lora_to_gguf.py --base {local_base} --outtype f16 --outfile {gguf} {src}",
        f"llama-server -m {base_gguf} --lora {gguf} --alias {name} --port 8080",
    ]
    result.notes += [
        "nothing was written: llama.cpp's converter (convert_lora_to_gguf.py, in a llama.cpp checkout) is not "
        "installed here; run the first command where it is",
        f"--base is the base model's Hugging Face directory ({base}); -m is that model in GGUF",
        f"llama-server applies the adapter to every request and names the result {name!r} (--alias): run it as a "
        "second server for an app whose generation.model is that name, next to a plain server of the base model",
    ]
    return result
