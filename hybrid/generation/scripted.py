"""``ScriptedGenerator``: the deterministic fake generator, for fast unit tests of everything above the
model (strategies, router, pipeline, API), never a replacement for the real thing.

It implements ``core.protocols.Generator`` like ``HFGenerator``, renders prompts with the same
``hybrid.chat.render_chat`` (the plain fallback format, as there is no tokenizer), counts whitespace
words as tokens and records every call in ``calls``. Its prompts get the same neutralization as a real
model's: a line of untrusted text that starts with a role name (``system:``) is the plain format's
control string, and gets a zero-width joiner before it, so it cannot open a turn. Registered as ``"scripted"`` in
``hybrid.generation.GENERATORS``.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

from hybrid.chat import SystemPrompt, apply_system_prompt, render_chat, validate_messages
from core.errors import InputError, ModelError
from hybrid.generation import GENERATORS
from hybrid.generation.params import check_params, cut_at_stop
from hybrid.generation.stream import _StopScanner
from core.protocols import Generation, GenerationParams, Message

__all__ = ["ScriptedGenerator", "ScriptedCall", "canonical"]


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


@GENERATORS.register("scripted")
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
