"""Turn a base model into a trainable one, by method: LoRA, prompt tuning, prefix tuning, IA3 or full.

Each method maps one config section onto the matching ``peft`` config, so switching methods is a one-word
config change::

    model = prepare_model(base_model, cfg)   # cfg: TuneConfig
    print(trainable_summary(model))          # "lora: 4.9M of 139.4M parameters trainable (3.5%)"
"""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError
from core.registry import Registry

methods: Registry = Registry("tuning method")


def linear_module_names(model: Any) -> list[str]:
    """Distinct last-name components of the model's linear layers (what ``target_modules`` matches)."""
    import torch

    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and full:
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def _check_targets(model: Any, targets: list[str], section: str) -> None:
    if targets == ["all-linear"]:
        return
    all_suffixes = {full.rsplit(".", 1)[-1] for full, _ in model.named_modules() if full}
    full_names = {full for full, _ in model.named_modules() if full}
    missing = [t for t in targets if t not in all_suffixes and t not in full_names]
    if missing:
        raise ConfigError(
            f"{section}.target_modules {missing} not found in the model; its linear modules are: "
            f"{', '.join(linear_module_names(model))}"
        )


@methods.register("lora")
def _lora(model: Any, cfg: Any) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    s = cfg.lora
    targets = "all-linear" if s.target_modules == ["all-linear"] else list(s.target_modules)
    _check_targets(model, list(s.target_modules), "lora")
    pc = LoraConfig(task_type=TaskType.CAUSAL_LM, r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                    target_modules=targets, use_rslora=s.use_rslora, use_dora=s.use_dora, bias=s.bias)
    return get_peft_model(model, pc)


@methods.register("ia3")
def _ia3(model: Any, cfg: Any) -> Any:
    from peft import IA3Config, TaskType, get_peft_model

    s = cfg.ia3
    _check_targets(model, list(s.target_modules), "ia3")
    pc = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=list(s.target_modules),
                   feedforward_modules=list(s.feedforward_modules))
    return get_peft_model(model, pc)


@methods.register("prompt_tuning")
def _prompt(model: Any, cfg: Any) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    s = cfg.prompt_tuning
    kw: dict[str, Any] = {}
    if s.init_text:
        tok = getattr(model, "hybrid_tokenizer_path", None) or getattr(model.config, "_name_or_path", None)
        kw = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": s.init_text,
              "tokenizer_name_or_path": str(tok)}
    pc = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=s.num_virtual_tokens, **kw)
    return get_peft_model(model, pc)


@methods.register("prefix_tuning")
def _prefix(model: Any, cfg: Any) -> Any:
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    s = cfg.prefix_tuning
    pc = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=s.num_virtual_tokens,
                            prefix_projection=s.prefix_projection)
    return get_peft_model(model, pc)


@methods.register("full")
def _full(model: Any, cfg: Any) -> Any:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def prepare_model(model: Any, cfg: Any) -> Any:
    """Wrap ``model`` for ``cfg.method`` and put it in training mode (dropout on)."""
    try:
        out = methods.get(cfg.method)(model, cfg)
    except ValueError as e:  # peft's own checks (e.g. an incompatible module type)
        raise ConfigError(f"{cfg.method}: {e}") from None
    out.train()
    return out


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def uses_virtual_tokens(method: str) -> bool:
    """Prompt and prefix tuning prepend per-row virtual tokens: they need the padded (unpacked) path."""
    return method in ("prompt_tuning", "prefix_tuning")


def trainable_summary(model: Any, method: str = "") -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (f"{method + ': ' if method else ''}{trainable / 1e6:.2f}M of {total / 1e6:.1f}M parameters "
            f"trainable ({100 * trainable / max(total, 1):.2f}%)")
