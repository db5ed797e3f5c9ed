"""``HFGenerator``: a transformers causal LM with any number of peft adapters, one base model.

    gen = HFGenerator(system_prompt="You are ShopBot.")     # embedded SmolLM2, loads on warm_up()
    gen.load_adapter("shop", "adapters/shop")              # several adapters, one base model
    gen.generate([{"role": "user", "content": "Price of the X1?"}], adapter="shop").text
    for piece in gen.stream(messages, params=GenerationParams(max_new_tokens=64)):
        print(piece, end="", flush=True)                   # break / .close() stops generating
    gen.generate_batch([messages_a, messages_b])           # left-padded, real batching for eval

The stopping criteria and the generated-tokens-only repetition penalty are in
``hybrid.generation.controls``, the streaming thread plumbing in ``hybrid.generation.stream``.
Registered as ``"hf"`` in ``hybrid.generation.GENERATORS``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

from hybrid.chat import (
    SystemPrompt,
    apply_system_prompt,
    encode_rendered,
    render_chat,
    system_prompt_hash,
    template_hash,
    validate_messages,
    warn_card_mismatch,
)
from core.errors import InputError, ModelError
from hybrid.generation import GENERATORS
from hybrid.generation.attention import use_blocked_attention
from hybrid.generation.controls import generated_repetition_penalty, stop_criteria
from hybrid.generation.cpu import bf16_prefill, check_threads, env_threads
from hybrid.generation.params import check_params, cut_at_stop
from hybrid.generation.prefill import row_prefill, supported
from hybrid.generation.stream import GenerationStream, start_stream
from core.protocols import Generation, GenerationParams, Message

log = logging.getLogger(__name__)

__all__ = ["HFGenerator"]


@GENERATORS.register("hf")
class HFGenerator:
    """A transformers causal LM with any number of peft adapters, chosen per request by name.

        gen = HFGenerator("default", system_prompt="You are ShopBot. Answer in one sentence.")
        gen.load_adapter("shop", "adapters/shop")      # refused if trained on another base model
        gen.generate([{"role": "user", "content": "Hi"}], adapter="shop",
                     params=GenerationParams(max_new_tokens=32, stop=["\\n\\n"]))

    The system prompt is applied when the messages carry none (a caller's system message wins), with
    the model's own chat template: the same ``hybrid.chat.render_chat`` the tuner trains with.
    Requests are serialized by a lock: adapters switch per request without reloading the base
    model, and one CPU model cannot run two generations faster than one after the other anyway.
    ``bf16=None`` autocasts batches to bfloat16 on CPUs with native bf16 matmuls (see ``use_bf16``).
    ``threads`` (or ``HYBRID_TORCH_THREADS``) sets torch's thread count in whichever thread generates:
    torch's OpenMP setting is per thread, and generation runs on stream and batch threads. On a busy
    2-core machine 1 thread was far faster than 2 (tests/generation/conftest.py: 4 vs 48 ms/token),
    because a team of 2 spins at barriers when a core is taken by someone else.
    """

    def __init__(self, model: str | os.PathLike[str] = "default", *, system_prompt: str | SystemPrompt | None = None,
                 dtype: Any = None, bf16: bool | None = None, batch_size: int = 8,
                 trust_remote_code: bool = False, threads: int | None = None):
        from hybrid.models import _DEFAULT_ALIASES, DEFAULT_MODEL_ID

        if batch_size <= 0:
            raise InputError(f"batch_size must be > 0, got {batch_size}")
        self.name = str(model)
        self.model_id = DEFAULT_MODEL_ID if self.name in _DEFAULT_ALIASES else self.name
        self.sha = ""
        self.system_prompt = system_prompt
        self.dtype = dtype
        self._bf16 = bf16
        self.batch_size = batch_size
        self.threads = check_threads(threads) if threads is not None else env_threads()
        self.trust_remote_code = trust_remote_code
        self.model: Any = None  # a PeftModel once an adapter is loaded, else the base model
        self.tokenizer: Any = None
        self._cards: dict[str, Any] = {}
        self._paths: dict[str, str] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._lock = threading.RLock()
        self._bf16_copy: Any = None  # see _bf16_model
        self.bf16_weights = True  # batches without adapters: a bf16 weight copy (False: bf16 prefill only)
        self.row_prefill = True  # batches prefill each prompt alone (hybrid.generation.prefill); False: padded

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, model_id: str, sha: str = "", **kwargs: Any) -> "HFGenerator":
        """Wrap an already loaded base model (tests build tiny random ones; the tuner reuses its own).

        The tokenizer is not modified (batches are left-padded by hand), so a trainer can share it.
        """
        gen = cls(model_id, **kwargs)
        gen.model_id, gen.sha = model_id, sha
        gen._install(model, tokenizer)
        return gen

    # -- loading
    def _install(self, model: Any, tokenizer: Any) -> None:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        self.tokenizer = tokenizer
        self._bf16_copy = None  # a copy of another model's weights is never used for this one
        self.model = model  # last: warm_up's lock-free check reads a set model as "fully installed"

    def _load(self) -> tuple[Any, Any]:
        """The model and tokenizer for ``self.name`` (a causal LM here; ``Seq2SeqGenerator`` overrides it)."""
        from hybrid.models import load_base_model

        return load_base_model(self.name, dtype=self.dtype, trust_remote_code=self.trust_remote_code)

    def warm_up(self) -> None:
        if self.model is not None:  # loaded: never wait on the lock a running generation holds
            return
        with self._lock:
            if self.model is not None:
                return
            model, tokenizer = self._load()
            r = model.hybrid_resolved
            self.model_id, self.sha = r.model_id, r.sha
            self._install(model, tokenizer)

    def warm_up_batches(self, rows: int) -> None:
        """Load the model and make now what batches of ``rows`` will use (the bf16 weight copy on
        CPUs with native bf16), so the first batch a server runs does not stop to copy the weights."""
        self.warm_up()
        if self._batch_weights(rows):
            with self._lock:
                self._bf16_model()

    def _batch_weights(self, rows: int) -> bool:
        """Do batches of ``rows`` run on the bf16 weight copy (no adapter loaded, a decoder model)?"""
        return (self.use_bf16(rows) and self.bf16_weights and not self._paths
                and not getattr(self.model.config, "is_encoder_decoder", False))

    def use_bf16(self, rows: int) -> bool:
        """Autocast to bf16? Forced by ``bf16=``; else only for batches on CPUs with native bf16.

        Measured on this AMX CPU (SmolLM2-135M, 1 thread): batches of 8 run ~1.3x faster under bf16
        autocast, but one-sequence decoding runs slower (~0.6x), because per-op casts cost more than
        the tiny matmuls save.
        """
        if self._bf16 is not None:
            return self._bf16
        from core.hardware import bf16_fast

        return rows > 1 and bf16_fast()

    @property
    def context_window(self) -> int:
        self.warm_up()
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", 2048)
        return int(min(n, 10**7))

    # -- adapters
    def has_adapter(self, name: str) -> bool:
        return name in self._paths

    def adapters(self) -> list[str]:
        return sorted(self._paths)

    def adapter_card(self, name: str) -> Any:
        return self._cards.get(name)

    def load_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load a peft adapter under ``name`` next to those already loaded (base model stays put).

        Refuses adapters whose card names a different base model hash, and pickle-only weights.
        """
        if not name or not isinstance(name, str):
            raise InputError(f"adapter name must be a non-empty string, got {name!r}")
        p = Path(path).expanduser()
        if not (p / "adapter_config.json").is_file():
            raise ModelError(f"{p} is not a peft adapter directory (no adapter_config.json)")
        if not (p / "adapter_model.safetensors").is_file():
            raise ModelError(f"{p} has no adapter_model.safetensors; only safetensors adapters are loaded "
                             "(pickle files are never read)")
        self.warm_up()
        card = None
        if (p / "adapter_card.json").is_file():
            from hybrid.tuning.card import check_base_model, read_card

            card = read_card(p)
            check_base_model(card, model_id=self.model_id, sha=self.sha, where=f"adapter {name!r} ({p})")
        else:
            log.warning("adapter %r at %s has no adapter_card.json: its base model cannot be verified", name, p)
        from peft import PeftModel

        import warnings

        with self._lock, warnings.catch_warnings():
            # peft calls a transformers API deprecated in 5.x; the FutureWarning is not the user's concern
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
            try:
                if name in self._paths:
                    self.model.delete_adapter(name)
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(p), adapter_name=name, is_trainable=False)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(p), adapter_name=name, is_trainable=False)
            except (ValueError, RuntimeError, KeyError, OSError) as e:
                raise ModelError(f"could not load adapter {name!r} from {p}: {str(e).splitlines()[0][:300]}") from None
            self.model.eval()
            self._paths[name] = str(p)
            self._cards[name] = card

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name in self._paths:
                self.model.delete_adapter(name)
                del self._paths[name]
                self._cards.pop(name, None)

    # -- rendering
    def _messages(self, messages: list[Message]) -> tuple[list[Message], str | SystemPrompt | None]:
        msgs = validate_messages(messages)
        own = next((m["content"] for m in msgs if m["role"] == "system"), None)
        sp: str | SystemPrompt | None = own if own is not None else self.system_prompt
        if own is not None and isinstance(self.system_prompt, SystemPrompt) and self.system_prompt.matches(own):
            sp = self.system_prompt  # the caller rendered our template (e.g. with a date): same prompt
        return apply_system_prompt(msgs, None if own is not None else self.system_prompt), sp

    def render(self, messages: list[Message]) -> str:
        """The exact prompt string the model receives for ``messages``."""
        self.warm_up()
        msgs, _ = self._messages(messages)
        return render_chat(self.tokenizer, msgs)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(encode_rendered(self.tokenizer, self.render(messages)))

    def _prepare(self, messages: list[Message], adapter: str | None, params: GenerationParams) -> list[int]:
        if adapter is not None and adapter not in self._paths:
            raise ModelError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.adapters()) or 'none'})")
        msgs, sp = self._messages(messages)
        ids = encode_rendered(self.tokenizer, render_chat(self.tokenizer, msgs))
        window = self.context_window
        if len(ids) + params.max_new_tokens > window:
            raise InputError(f"prompt is {len(ids)} tokens; with max_new_tokens={params.max_new_tokens} it exceeds "
                             f"the context window of {window}")
        card = self._cards.get(adapter) if adapter else None
        if card is not None:
            key = (adapter or "", template_hash(self.tokenizer), system_prompt_hash(sp))
            if key not in self._warned:
                self._warned.add(key)
                warn_card_mismatch(card, tokenizer=self.tokenizer, system_prompt=sp, name=f"adapter {adapter!r}")
        return ids

    # -- generation
    def _generation_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        gc = getattr(self.model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None) if gc is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        kw: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": eos,
        }
        if params.temperature > 0:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:  # greedy: clear sampling knobs the model's generation_config may carry (avoids warnings)
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _eos_ids(self) -> set[int]:
        kw = self._generation_kwargs(GenerationParams())
        eos = kw["eos_token_id"]
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        ids.add(self.tokenizer.pad_token_id)
        return {i for i in ids if i is not None}

    def _enter_run(self, adapter: str | None, params: GenerationParams) -> Any:
        """Under ``self._lock``: select ``adapter`` (or switch adapters off), apply the thread setting and
        the sampling seed; returns the context to generate in (``disable_adapter`` for the bare base)."""
        import contextlib

        import torch

        ctx: Any = contextlib.nullcontext()
        if self._paths:  # the model is a PeftModel once any adapter is loaded (peft imports slowly)
            if adapter is None:
                ctx = self.model.disable_adapter()
            else:
                self.model.set_adapter(adapter)
        if self.threads:
            torch.set_num_threads(self.threads)
        if params.temperature > 0:
            torch.manual_seed(params.seed)
        return ctx

    def _run(self, rows: list[list[int]], adapter: str | None, params: GenerationParams,
             cancel: threading.Event, counter: list[int], streamer: Any = None,
             criteria: Any = None) -> list[list[int]]:
        """Left-pad ``rows`` by hand (decoder-only models continue from the right edge), generate, and
        return each row's new token ids (padding/EOS trimmed later).

        ``criteria`` replaces the shared stop-string/cancel criteria (``cancel``, ``counter`` and
        ``params.stop`` are then unused): ``hybrid.generation.batching`` stops each row on its own."""
        import contextlib

        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        criteria = StoppingCriteriaList([criteria if criteria is not None else
                                         stop_criteria(self.tokenizer, width, params.stop, cancel, counter)])
        processors = LogitsProcessorList(
            [generated_repetition_penalty(params.repetition_penalty, width)] if params.repetition_penalty != 1.0 else [])
        with self._lock:
            ctx = self._enter_run(adapter, params)
            bf16 = self.use_bf16(len(rows))
            decoder = not getattr(self.model.config, "is_encoder_decoder", False)
            # extra: generate's cache arguments; prefill: builds the cache generate continues from
            model, extra = self.model, {}
            prefill: Any = None
            if self._batch_weights(len(rows)):
                model, extra = self._bf16_model(), {"cache_implementation": "static"}
            elif bf16 and decoder and width > 1:
                prefill = functools.partial(bf16_prefill, self.model, input_ids, mask, params.max_new_tokens)
            if self.row_prefill and supported(model, rows):  # batches: each prompt prefilled alone, unpadded
                extra = {}
                prefill = functools.partial(row_prefill, model, rows, params.max_new_tokens,
                                            bf16_autocast=bf16 and model is self.model)
            whole = bf16 and not extra and prefill is None  # autocast the whole generation
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if whole else contextlib.nullcontext()
            with ctx, amp, torch.inference_mode():
                if prefill is not None:
                    extra["cache"] = prefill()
                out = model.generate(input_ids=input_ids, attention_mask=mask, stopping_criteria=criteria,
                                     logits_processor=processors, streamer=streamer,
                                     **self._generation_kwargs(params), **extra)
        return [list(map(int, row[width:])) for row in out]

    def _bf16_model(self) -> Any:
        """A bf16 copy of the base model for batches (no adapter loaded), made once: the same bf16
        matmuls whole-batch autocast ran, without re-casting every weight at every step. It attends
        through ``hybrid.generation.attention`` (1.3x faster batches of 8 legal prompts)."""
        if self._bf16_copy is None:
            import copy

            import torch

            self._bf16_copy = use_blocked_attention(copy.deepcopy(self.model).to(torch.bfloat16).eval())
        return self._bf16_copy

    def _finish(self, new_ids: list[int], prompt_tokens: int, params: GenerationParams, cancelled: bool) -> Generation:
        eos = self._eos_ids()
        n = next((i for i, t in enumerate(new_ids) if t in eos), None)
        ids = new_ids if n is None else new_ids[:n]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, hit = cut_at_stop(text, params.stop)
        if hit or n is not None:
            reason = "stop"
        elif cancelled:
            reason = "cancelled"
        else:
            reason = "length" if len(new_ids) >= params.max_new_tokens else "stop"
        return Generation(text.strip(), prompt_tokens=prompt_tokens,
                          completion_tokens=len(ids) + (0 if n is None else 1), finish_reason=reason)

    def generate(self, messages: list[Message], *, adapter: str | None = None,
                 params: GenerationParams | None = None, cancel: threading.Event | None = None) -> Generation:
        params = check_params(params)
        self.warm_up()
        ids = self._prepare(messages, adapter, params)
        cancel = cancel or threading.Event()
        new = self._run([ids], adapter, params, cancel, [0])[0]
        return self._finish(new, len(ids), params, cancel.is_set())

    def generate_batch(self, batch: list[list[Message]], *, adapter: str | None = None,
                       params: GenerationParams | None = None,
                       on_row: Callable[[int], None] | None = None) -> list[Generation]:
        """Batched generation for evaluation: rows sorted by length, ``batch_size`` at a time.

        ``on_row(i)`` is called as soon as row ``i`` of ``batch`` is finished (its EOS, stop string or
        max_new_tokens), while the other rows of its batch may still be generating: the eval progress
        bar advances per question with it.
        """
        from hybrid.generation.batching import row_criteria, rows_for

        params = check_params(params)
        if not batch:
            return []
        self.warm_up()
        encoded = [self._prepare(m, adapter, params) for m in batch]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
        results: list[Generation | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = rows_for([encoded[i] for i in idx], adapter, params,
                            [(lambda i=i: on_row(i)) for i in idx] if on_row else None)
            self._run([r.ids for r in rows], adapter, params, threading.Event(), [0],
                      criteria=row_criteria(rows, self.tokenizer, self._eos_ids()))
            for i, r in zip(idx, rows):
                r.finish()  # a row still running when generate returned: no more steps for it
                results[i] = self._finish(r.tokens, len(encoded[i]), params, False)
        return [r for r in results if r is not None]

    def stream(self, messages: list[Message], *, adapter: str | None = None,
               params: GenerationParams | None = None, cancel: threading.Event | None = None) -> GenerationStream:
        """Text pieces as they are generated, from a background thread; see ``GenerationStream``."""
        from transformers import TextIteratorStreamer

        params = check_params(params)
        self.warm_up()
        ids = self._prepare(messages, adapter, params)
        cancel = cancel or threading.Event()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run(counter: list[int]) -> list[int]:
            return self._run([ids], adapter, params, cancel, counter, streamer=streamer)[0]

        def finish_reason(new: list[int]) -> str:
            return self._finish(new, len(ids), params, cancel.is_set()).finish_reason

        return start_stream(streamer, cancel, params.stop, len(ids), run, finish_reason)
