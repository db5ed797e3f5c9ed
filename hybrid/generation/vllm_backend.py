"""``VLLMGenerator``: the ``vllm`` backend, vLLM's offline engine in this process, for GPU machines.

    gen = VLLMGenerator("Qwen/Qwen2.5-7B-Instruct", engine_args={"tensor_parallel_size": 2})
    gen.load_adapter("legal", "adapters/legal")        # a LoRARequest, sent with each request
    gen.generate_batch(conversations, adapter="legal")  # one batched llm.chat call (hybrid eval)

vLLM is an optional install (``pip install vllm``, needs a CUDA GPU) and is imported only when this
backend is used; without it the first use is a one-line ``ModelError`` saying how to install it.

What was verified on this project's machines (CPU only, vLLM not installable): the import error,
and how requests map onto vLLM's API (``SamplingParams``, ``LoRARequest``, ``LLM(enable_lora=...)``,
``llm.chat``) against a stand-in module (tests/generation/test_vllm_backend.py). Real generation
with vLLM was not run here. Notes:

- vLLM's offline engine does not stream: ``stream`` yields the whole answer as one piece.
- ``repetition_penalty`` is not passed: vLLM's penalizes the prompt's tokens too, which this project
  measured to hurt grounded answers (see ``hybrid.generation.controls.generated_repetition_penalty``).
- LoRA must be enabled when the engine starts, so the engine is built on first generation, after
  the app's adapters are registered; ``max_lora_rank`` is raised to the largest adapter's ``r``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from core.errors import InputError, ModelError
from core.protocols import Generation, GenerationParams, Message
from hybrid.chat import SystemPrompt, apply_system_prompt, neutralize_messages, validate_messages
from hybrid.generation import GENERATORS
from hybrid.generation.params import check_params, cut_at_stop

log = logging.getLogger(__name__)

__all__ = ["VLLMGenerator", "import_vllm", "app_kwargs"]

INSTALL_HINT = ("the vllm backend needs vLLM, which is not installed: pip install vllm (a CUDA GPU machine; "
                "see docs/backends.md), or use generation.backend transformers or openai")


def import_vllm() -> tuple[Any, Any, Any]:
    """(LLM, SamplingParams, LoRARequest) from vLLM, or a one-line ``ModelError`` saying how to get it."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise ModelError(INSTALL_HINT) from None
    return vllm.LLM, vllm.SamplingParams, LoRARequest


def app_kwargs(app: Any) -> tuple[tuple, dict]:
    """How an app's settings become ``VLLMGenerator``'s arguments (``hybrid.assemble`` calls this)."""
    g = app.generation
    model = g.model
    if model not in ("embedded", "default") and app.resolve(model).exists():
        model = str(app.resolve(model))
    sp = SystemPrompt(app.system_prompt, defaults={"app_name": app.title or app.name})
    return (model,), {"engine_args": dict(g.vllm.engine_args), "system_prompt": sp}


def _lora_rank(path: Path) -> int:
    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError):
        raise ModelError(f"{path} is not a peft adapter directory (no readable adapter_config.json)") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{path} is a {cfg.get('peft_type')} adapter; vLLM serves LoRA adapters only")
    return int(cfg.get("r") or 8)


@GENERATORS.register("vllm")
class VLLMGenerator:
    """A ``core.protocols.Generator`` over ``vllm.LLM``; each adapter is a ``LoRARequest``."""

    def __init__(self, model: str = "default", *, engine_args: dict[str, Any] | None = None,
                 system_prompt: str | SystemPrompt | None = None):
        if model in ("embedded", "default"):
            from hybrid.models import resolve_model

            model = str(resolve_model("default").path)  # the embedded model, as a local HF directory
        self.model_id = self.name = str(model)
        self.sha = ""
        self.engine_args = dict(engine_args or {})
        self.system_prompt = system_prompt
        self.llm: Any = None
        self._lora: dict[str, Any] = {}  # adapter name -> LoRARequest
        self._ranks: dict[str, int] = {}
        self._lock = threading.RLock()

    def warm_up(self) -> None:
        """Check that vLLM imports; the engine itself starts on first use (see the module notes)."""
        import_vllm()

    def _engine(self) -> Any:
        with self._lock:
            if self.llm is None:
                LLM, _, _ = import_vllm()
                args = dict(self.engine_args)
                if self._ranks or args.get("enable_lora"):
                    args["enable_lora"] = True
                    args["max_lora_rank"] = max([args.get("max_lora_rank", 16), *self._ranks.values()])
                    args.setdefault("max_loras", max(1, len(self._ranks)))
                self.llm = LLM(model=self.model_id, **args)
            return self.llm

    @property
    def context_window(self) -> int:
        llm = self._engine()
        try:
            return int(llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            return int(getattr(llm.get_tokenizer(), "model_max_length", 4096))

    # -- adapters
    def has_adapter(self, name: str) -> bool:
        return name in self._lora

    def adapters(self) -> list[str]:
        return sorted(self._lora)

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        if not name or not isinstance(name, str):
            raise InputError(f"adapter name must be a non-empty string, got {name!r}")
        p = Path(path).expanduser().resolve()
        if not (p / "adapter_model.safetensors").is_file():
            raise ModelError(f"{p} has no adapter_model.safetensors (vLLM loads safetensors LoRA adapters)")
        rank = _lora_rank(p)
        _, _, LoRARequest = import_vllm()
        with self._lock:
            if self.llm is not None and rank > int(self.engine_args.get("max_lora_rank", 16)) \
                    and rank > max(self._ranks.values(), default=0):
                raise ModelError(f"adapter {name!r} has rank {rank}, above the running engine's max_lora_rank; "
                                 "set generation.vllm.engine_args.max_lora_rank and restart")
            lora_id = self._lora[name].lora_int_id if name in self._lora else len(self._lora) + 1
            self._lora[name] = LoRARequest(name, lora_id, str(p))
            self._ranks[name] = rank

    # -- requests
    @property
    def tokenizer(self) -> Any:
        """The engine's tokenizer: vLLM renders the chat template with it (and the guard counts with it)."""
        return self._engine().get_tokenizer()

    def _messages(self, messages: list[Message]) -> list[Message]:
        msgs = validate_messages(messages)
        if not any(m["role"] == "system" for m in msgs):
            msgs = apply_system_prompt(msgs, self.system_prompt)
        # llm.chat renders with vLLM's own template code, not render_chat: neutralize here
        return neutralize_messages(self.tokenizer, msgs)[0]

    def count_tokens(self, messages: list[Message]) -> int:
        tok = self._engine().get_tokenizer()
        return len(tok.apply_chat_template(self._messages(messages), tokenize=True, add_generation_prompt=True))

    def sampling_params(self, params: GenerationParams) -> Any:
        _, SamplingParams, _ = import_vllm()
        kw: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": params.temperature,
                              "top_p": params.top_p if params.temperature > 0 else 1.0, "seed": params.seed}
        if params.stop:
            kw["stop"] = list(params.stop)
        return SamplingParams(**kw)

    def _lora_request(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        if adapter not in self._lora:
            raise ModelError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.adapters()) or 'none'})")
        return self._lora[adapter]

    def generate_batch(self, batch: list[list[Message]], *, adapter: str | None = None,
                       params: GenerationParams | None = None,
                       on_row: Callable[[int], None] | None = None) -> list[Generation]:
        """One ``llm.chat`` call for the whole batch: vLLM schedules it with continuous batching.
        ``on_row(i)`` follows for each row once the call returns (vLLM's offline call reports no earlier)."""
        params = check_params(params)
        if not batch:
            return []
        lora = self._lora_request(adapter)
        conversations = [self._messages(m) for m in batch]
        llm = self._engine()
        outs = llm.chat(conversations, self.sampling_params(params), lora_request=lora, use_tqdm=False)
        result = []
        for out in outs:
            best = out.outputs[0]
            text, cut = cut_at_stop(best.text, params.stop)
            finish = "length" if best.finish_reason == "length" and not cut else "stop"
            result.append(Generation(text, len(out.prompt_token_ids or []), len(best.token_ids or []), finish))
        for i in range(len(result)):
            if on_row is not None:
                on_row(i)
        return result

    def generate(self, messages: list[Message], *, adapter: str | None = None,
                 params: GenerationParams | None = None) -> Generation:
        return self.generate_batch([messages], adapter=adapter, params=params)[0]

    def stream(self, messages: list[Message], *, adapter: str | None = None,
               params: GenerationParams | None = None) -> Iterator[str]:
        """The whole answer as one piece (vLLM's offline engine does not stream)."""
        gen = self.generate(messages, adapter=adapter, params=params)
        return iter([gen.text] if gen.text else [])
