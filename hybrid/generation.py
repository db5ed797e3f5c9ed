"""Generators: ``HFGenerator`` (transformers + peft multi-adapter) and the ``ScriptedGenerator`` fake.

    gen = HFGenerator(system_prompt="You are ShopBot.")     # embedded SmolLM2, loads on warm_up()
    gen.load_adapter("shop", "adapters/shop")              # several adapters, one base model
    gen.generate([{"role": "user", "content": "Price of the X1?"}], adapter="shop").text
    for piece in gen.stream(messages, params=GenerationParams(max_new_tokens=64)):
        print(piece, end="", flush=True)                   # break / .close() stops generating
    gen.generate_batch([messages_a, messages_b])           # left-padded, real batching for eval

Both implement ``hybrid.protocols.Generator``; the fake is for fast unit tests of everything above the
model (strategies, router, pipeline, API), never a replacement for the real thing.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

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
from hybrid.errors import InputError, ModelError
from hybrid.protocols import Generation, GenerationParams, Message

log = logging.getLogger(__name__)

__all__ = ["ScriptedGenerator", "check_params", "make_params", "cut_at_stop"]


def check_params(params: GenerationParams | None) -> GenerationParams:
    """Defaults for ``None``; re-checks values because a dataclass can be mutated after creation."""
    if params is None:
        return GenerationParams()
    if not isinstance(params, GenerationParams):
        raise InputError(f"params must be GenerationParams, got {type(params).__name__}")
    if not isinstance(params.max_new_tokens, int) or params.max_new_tokens <= 0:
        raise InputError(f"max_new_tokens must be a positive integer, got {params.max_new_tokens!r}")
    if not math.isfinite(params.temperature) or params.temperature < 0:
        raise InputError(f"temperature must be a finite number >= 0, got {params.temperature!r}")
    if not math.isfinite(params.top_p) or not (0 < params.top_p <= 1):
        raise InputError(f"top_p must be in (0, 1], got {params.top_p!r}")
    if not math.isfinite(params.repetition_penalty) or params.repetition_penalty <= 0:
        raise InputError(f"repetition_penalty must be > 0, got {params.repetition_penalty!r}")
    if any(not isinstance(s, str) or not s for s in params.stop):
        raise InputError(f"stop strings must be non-empty strings, got {params.stop!r}")
    return params


def make_params(**kwargs: Any) -> GenerationParams:
    """``GenerationParams(**kwargs)`` with its ValueErrors turned into one-line ``InputError``s."""
    try:
        return check_params(GenerationParams(**kwargs))
    except (ValueError, TypeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(str(e)) from None


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _StopScanner:
    """Streams text while holding back any tail that could be the start of a stop string."""

    def __init__(self, stop: Sequence[str]):
        self.stop = list(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buf += piece
        text, hit = cut_at_stop(self.buf, self.stop)
        if hit:
            self.stopped = True
            self.buf = ""
            return text
        if not self.stop:
            out, self.buf = self.buf, ""
            return out
        # only hold back a tail that is really a prefix of some stop string
        keep = 0
        for k in range(min(self.hold, len(self.buf)), 0, -1):
            tail = self.buf[-k:]
            if any(s.startswith(tail) for s in self.stop):
                keep = k
                break
        out = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep:]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


# ---------------------------------------------------------------------------------------------
# the fake


def canonical(text: str) -> str:
    """Lower-case, whitespace collapsed: what the scripted fake echoes."""
    return " ".join(text.lower().split())


@dataclass
class ScriptedCall:
    """One request the fake received: exactly what a real model would have been given."""

    messages: list[Message]
    prompt: str
    adapter: str | None
    params: GenerationParams
    kind: str  # "generate" | "stream" | "batch"


class ScriptedGenerator:
    """Deterministic stand-in for a real model, for fast tests of strategies, routing and the API.

        gen = ScriptedGenerator({"price of the x1": "The X1 costs 10 EUR."}, system_prompt="Be brief.")
        gen.generate([{"role": "user", "content": "Price of the X1?"}]).text  # "The X1 costs 10 EUR."
        gen.generate([{"role": "user", "content": "Hello  THERE"}]).text      # "hello there" (echo)
        gen.calls[-1].prompt                   # the rendered prompt, system prompt included

    ``replies`` may be a dict (matched on the canonical last user message: exact, then substring),
    a list (returned in order; running out is an error), or ``callable(messages, adapter) -> str``.
    Without a match the reply echoes the canonical last user message, prefixed by ``[adapter] ``
    when an adapter is chosen, so tests can see which adapter answered. Tokens are whitespace words.
    """

    def __init__(self, replies: Mapping[str, str] | Sequence[str] | Callable[..., str] | None = None, *,
                 system_prompt: str | SystemPrompt | None = None, model_id: str = "scripted",
                 context_window: int = 2048, adapters: Sequence[str] = ()):
        self.replies = replies
        self.system_prompt = system_prompt
        self.model_id = model_id
        self.sha = "scripted"
        self.context_window = context_window
        self._adapters: dict[str, str | None] = {a: None for a in adapters}
        self._script_pos = 0
        self.calls: list[ScriptedCall] = []
        self.warmed_up = False
        self._lock = threading.Lock()

    # -- protocol
    def warm_up(self) -> None:
        self.warmed_up = True

    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    def load_adapter(self, name: str, path: str | os.PathLike[str] | None = None) -> None:
        if not name:
            raise InputError("adapter name must be non-empty")
        self._adapters[name] = None if path is None else str(path)

    def unload_adapter(self, name: str) -> None:
        self._adapters.pop(name, None)

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.calls]

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._render(messages).split())

    def generate(self, messages: list[Message], *, adapter: str | None = None,
                 params: GenerationParams | None = None) -> Generation:
        params = check_params(params)
        msgs, prompt = self._record(messages, adapter, params, "generate")
        return self._finish(self._reply(msgs, adapter), prompt, params)

    def stream(self, messages: list[Message], *, adapter: str | None = None,
               params: GenerationParams | None = None, cancel: threading.Event | None = None) -> Iterator[str]:
        params = check_params(params)
        msgs, prompt = self._record(messages, adapter, params, "stream")
        reply = self._reply(msgs, adapter)
        return self._stream(reply, params, cancel)

    def generate_batch(self, batch: list[list[Message]], *, adapter: str | None = None,
                       params: GenerationParams | None = None) -> list[Generation]:
        params = check_params(params)
        out = []
        for messages in batch:
            msgs, prompt = self._record(messages, adapter, params, "batch")
            out.append(self._finish(self._reply(msgs, adapter), prompt, params))
        return out

    # -- internals
    def _render(self, messages: list[Message]) -> str:
        msgs = validate_messages(messages)
        sp = None if any(m["role"] == "system" for m in msgs) else self.system_prompt
        return render_chat(None, msgs, sp)

    def _record(self, messages: list[Message], adapter: str | None, params: GenerationParams,
                kind: str) -> tuple[list[Message], str]:
        if adapter is not None and adapter not in self._adapters:
            raise ModelError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.adapters()) or 'none'})")
        msgs = validate_messages(messages)
        sp = None if any(m["role"] == "system" for m in msgs) else self.system_prompt
        full = apply_system_prompt(msgs, sp)
        prompt = render_chat(None, full)
        if len(prompt.split()) + params.max_new_tokens > self.context_window:
            raise InputError(f"prompt is {len(prompt.split())} tokens; with max_new_tokens="
                             f"{params.max_new_tokens} it exceeds the context window of {self.context_window}")
        with self._lock:
            self.calls.append(ScriptedCall(full, prompt, adapter, params, kind))
        return full, prompt

    def _reply(self, msgs: list[Message], adapter: str | None) -> str:
        last_user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
        key = canonical(last_user)
        r = self.replies
        if callable(r):
            return str(r(msgs, adapter))
        if isinstance(r, Mapping):
            if key in r:
                return r[key]
            for k, v in r.items():
                if canonical(k) in key:
                    return v
        elif isinstance(r, Sequence) and not isinstance(r, str):
            with self._lock:
                if self._script_pos >= len(r):
                    raise ModelError(f"scripted generator ran out of replies after {len(r)}")
                self._script_pos += 1
                return r[self._script_pos - 1]
        return f"[{adapter}] {key}" if adapter else key

    @staticmethod
    def _pieces(reply: str) -> list[str]:
        return re.findall(r"\S+\s*", reply)

    def _finish(self, reply: str, prompt: str, params: GenerationParams) -> Generation:
        pieces = self._pieces(reply)
        text = "".join(pieces[: params.max_new_tokens])
        reason = "length" if len(pieces) > params.max_new_tokens else "stop"
        text, hit = cut_at_stop(text, params.stop)
        if hit:
            reason = "stop"
        return Generation(text.strip(), prompt_tokens=len(prompt.split()),
                          completion_tokens=min(len(pieces), params.max_new_tokens), finish_reason=reason)

    def _stream(self, reply: str, params: GenerationParams, cancel: threading.Event | None) -> Iterator[str]:
        scanner = _StopScanner(params.stop)
        for piece in self._pieces(reply)[: params.max_new_tokens]:
            if cancel is not None and cancel.is_set():
                return
            out = scanner.feed(piece)
            if out:
                yield out
            if scanner.stopped:
                return
        tail = scanner.flush()
        if tail:
            yield tail
