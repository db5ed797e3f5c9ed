"""``Seq2SeqGenerator``: the ``transformers`` backend for encoder-decoder models (T5, FLAN-T5, BART).

    gen = Seq2SeqGenerator("/models/flan-t5-base", system_prompt="Summarize the sources.")
    gen.load_adapter("legal", "adapters/legal")      # a LoRA trained by hybrid.tuning.seq2seq
    gen.generate([{"role": "user", "content": "..."}], adapter="legal").text
    for piece in gen.stream(messages): ...           # TextIteratorStreamer works for seq2seq too

Everything above the model is ``HFGenerator``'s: rendering (``hybrid.chat.render_chat``; T5 ships no
chat template, so the prompt is our plain ``role: text`` format), token counting, adapters by name,
card checks, stop strings, cancellation, streaming and batched evaluation. What differs is how a
prompt reaches the model, so only loading, the context window and ``_run`` are replaced here:

- the rendered prompt is the *encoder's* input; the decoder starts from the model's
  ``decoder_start_token_id`` and its output holds only the answer (no prompt to cut off);
- the encoder attends both ways, so batch rows are right-padded (no need to end every row at the
  right edge, as a causal model continuing its prompt does);
- stop strings and the generated-tokens-only repetition penalty look at the decoder's ids, whose
  first position is the start token.

``pick_transformers_class(model)`` tells which class serves a model name or directory: this one when
the model's config says ``is_encoder_decoder``, ``HFGenerator`` otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.protocols import GenerationParams
from hybrid.generation.controls import generated_repetition_penalty, stop_criteria
from hybrid.generation.hf import HFGenerator

log = logging.getLogger(__name__)

__all__ = ["Seq2SeqGenerator", "is_encoder_decoder_model", "load_seq2seq_model", "pick_transformers_class"]

# T5 was trained on 512-token inputs; its relative position buckets accept longer ones, but quality
# past the trained length is not something to promise. Used when neither config nor tokenizer says.
_T5_TRAINED_LENGTH = 512


def is_encoder_decoder_model(name_or_path: str | os.PathLike[str]) -> bool:
    """Does ``name_or_path`` (a local model directory) hold an encoder-decoder model?

    Reads ``config.json`` only (no torch, no weights), so picking a backend stays cheap. A config that
    leaves ``is_encoder_decoder`` to its class default is asked through ``AutoConfig``. Anything that
    is not a local model directory (``default``, a hub id, a missing path) answers False: those load
    through ``HFGenerator``, which reports its own clear error when they are not there.
    """
    p = Path(str(name_or_path)).expanduser()
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        return False
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if isinstance(raw, dict) and "is_encoder_decoder" in raw:
        return bool(raw["is_encoder_decoder"])
    try:
        from transformers import AutoConfig

        return bool(getattr(AutoConfig.from_pretrained(p, local_files_only=True), "is_encoder_decoder", False))
    except (OSError, ValueError, KeyError):
        return False  # an unknown model type: HFGenerator's loader reports it


def pick_transformers_class(name_or_path: str | os.PathLike[str]) -> type:
    """The in-process generator class for a model: ``Seq2SeqGenerator`` or ``HFGenerator``."""
    return Seq2SeqGenerator if is_encoder_decoder_model(name_or_path) else HFGenerator


def load_seq2seq_model(name_or_path: str | os.PathLike[str], *, dtype: Any = None,
                       trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of an encoder-decoder model, offline, in eval mode on CPU, float32 by default.

    Like ``hybrid.models.load_base_model`` (same resolution, hashing and remote-code rule), but through
    ``AutoModelForSeq2SeqLM``. The model gets ``hybrid_resolved`` for adapter cards.
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from hybrid.models import _needs_remote_code, resolve_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    resolved = resolve_model(name_or_path)
    if _needs_remote_code(resolved.path) and not trust_remote_code:
        raise ModelError(f"model {resolved.model_id!r} ships its own Python code (config.json has auto_map); "
                         "it only loads with trust_remote_code=True (--trust-remote-code), which runs that code")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModelForSeq2SeqLM.from_pretrained(resolved.path, dtype=dtype or torch.float32,
                                                      local_files_only=True, trust_remote_code=trust_remote_code)
    except ValueError as e:
        first = str(e).splitlines()[0][:200]
        raise ModelError(f"{resolved.path} is not an encoder-decoder model that AutoModelForSeq2SeqLM can load "
                         f"({first}); causal models load through HFGenerator") from None
    except OSError as e:
        raise ModelError(f"could not load model from {resolved.path}: {str(e).splitlines()[0][:300]}") from None
    if getattr(model.config, "decoder_start_token_id", None) is None and \
            getattr(model.generation_config, "decoder_start_token_id", None) is None:
        raise ModelError(f"{resolved.path}: the model config has no decoder_start_token_id, so the decoder "
                         "cannot start (T5 uses its pad token id)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model.hybrid_resolved = resolved
    return model, tokenizer


def _feeding(streamer: Any, inner: Any) -> Any:
    """Stopping criteria that also put each new token of a one-row generation into ``streamer``.

    peft's seq2seq ``generate`` deep-copies its keyword arguments for prompt-tuning adapters, and a
    streamer (a queue with locks) cannot be copied; this criteria object holds the streamer in a
    closure, which a deep copy shares instead of copying. transformers calls stopping criteria once
    per step, after the step's token joined ``input_ids``, as it would call the streamer.
    """
    from transformers import StoppingCriteria

    class _Feed(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            streamer.put(input_ids[0, -1:].cpu())
            return inner(input_ids, scores, **kwargs)

    return _Feed()


class Seq2SeqGenerator(HFGenerator):
    """An encoder-decoder model with any number of peft adapters, chosen per request by name.

        gen = Seq2SeqGenerator("/models/flan-t5-small", bf16=False)
        gen.generate([{"role": "user", "content": "Summarize: ..."}]).text

    Same constructor, protocol and behaviour as ``HFGenerator`` (see there); ``from_loaded`` wraps an
    ``AutoModelForSeq2SeqLM`` built in memory.
    """

    def _load(self) -> tuple[Any, Any]:
        return load_seq2seq_model(self.name, dtype=self.dtype, trust_remote_code=self.trust_remote_code)

    def _install(self, model: Any, tokenizer: Any) -> None:
        if not getattr(model.config, "is_encoder_decoder", False):
            raise ModelError(f"{type(model).__name__} is not an encoder-decoder model; use HFGenerator")
        super()._install(model, tokenizer)

    @property
    def context_window(self) -> int:
        """Tokens the encoder takes: the config's ``n_positions`` / ``max_position_embeddings`` when it
        has them (BART), else the tokenizer's ``model_max_length`` (FLAN-T5: 512), else 512.

        The answer is the decoder's and does not share this window; ``_prepare`` still counts prompt
        plus ``max_new_tokens`` against it, as for a causal model, which errs on the safe side and
        keeps the strategies' prompt budgets (window minus answer) meaningful.
        """
        self.warm_up()
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if not n:
            tok_max = getattr(self.tokenizer, "model_max_length", None)
            n = tok_max if isinstance(tok_max, int) and 0 < tok_max < 10**6 else _T5_TRAINED_LENGTH
        return int(n)

    def _decoder_start(self) -> int:
        gc = getattr(self.model, "generation_config", None)
        sid = getattr(gc, "decoder_start_token_id", None) if gc is not None else None
        return int(sid if sid is not None else self.model.config.decoder_start_token_id)

    def _run(self, rows: list[list[int]], adapter: str | None, params: GenerationParams,
             cancel: threading.Event, counter: list[int], streamer: Any = None,
             criteria: Any = None) -> list[list[int]]:
        """Encode ``rows`` (right-padded), decode from the start token, return each row's new token ids.

        The adapter switch, thread count, seeding and bf16 rule follow ``HFGenerator._run``; the
        prompt/answer layout is the encoder-decoder one described in the module docstring.
        """
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        start = 1  # the decoder's ids begin with decoder_start_token_id; generated tokens follow it
        criteria = criteria if criteria is not None else \
            stop_criteria(self.tokenizer, start, params.stop, cancel, counter)
        if streamer is not None:  # fed from the criteria, never handed to generate (see _feeding)
            streamer.put(torch.tensor([self._decoder_start()]))  # the streamer skips this "prompt"
            criteria = _feeding(streamer, criteria)
        criteria = StoppingCriteriaList([criteria])
        processors = LogitsProcessorList(
            [generated_repetition_penalty(params.repetition_penalty, start)] if params.repetition_penalty != 1.0 else [])
        with self._lock:
            ctx = self._enter_run(adapter, params)
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.use_bf16(len(rows)) else contextlib.nullcontext()
            with ctx, amp, torch.inference_mode():
                try:
                    out = self.model.generate(input_ids=input_ids, attention_mask=mask, stopping_criteria=criteria,
                                              logits_processor=processors, **self._generation_kwargs(params))
                finally:
                    if streamer is not None:
                        streamer.end()
        return [list(map(int, row[start:])) for row in out]
