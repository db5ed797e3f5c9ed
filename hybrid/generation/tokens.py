"""Token counting for prompt budgets when the model runs elsewhere (the ``openai`` backend).

    counter = TokenCounter("auto", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    counter.count(messages)   # rendered with the model's own chat template, then tokenized
    counter.how               # "the SmolLM2-135M-Instruct tokenizer (local)" or the estimate's note

A budget counted with the served model's own tokenizer is exact. When that tokenizer is not on this
machine the count is an estimate: ``ceil(characters / 4)`` per message plus 4 tokens of chat framing
per message and 2 for the reply's header. Four characters per token is the usual figure for English
with BPE tokenizers; code, numbers and other languages take more tokens per character, so keep
``generation.max_prompt_tokens`` well under the server's context window when the estimate is in use.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.protocols import Message

log = logging.getLogger(__name__)

__all__ = ["TokenCounter", "estimate_tokens", "CHARS_PER_TOKEN"]

CHARS_PER_TOKEN = 4
PER_MESSAGE = 4  # role markers and separators a chat template adds around each message
REPLY_HEADER = 2  # the assistant header that opens the reply


def estimate_tokens(messages: list[Message]) -> int:
    """The documented estimate: characters / 4, rounded up, plus the chat framing."""
    return sum(math.ceil(len(m.get("content", "")) / CHARS_PER_TOKEN) + PER_MESSAGE for m in messages) + REPLY_HEADER


class TokenCounter:
    """Counts with a local tokenizer when one is configured or found, else estimates.

    ``spec``: ``auto`` (``model``'s tokenizer when it is the embedded model, a local directory or a
    cached hub id; else the estimate), ``embedded``, a tokenizer directory, or ``estimate``.
    An explicit tokenizer that cannot be loaded is a ``ModelError``; ``auto`` falls back with a log line.
    """

    def __init__(self, spec: str = "auto", *, model: str = ""):
        self.spec, self.model = spec or "auto", model
        self.tokenizer: Any = None
        self.source: Path | None = None  # the directory the tokenizer was loaded from
        self.how = ""
        self._loaded = False

    def _source(self) -> Path | None:
        from hybrid.models import _DEFAULT_ALIASES, _offline_snapshot, resolve_model

        spec = self.spec
        if spec == "estimate":
            return None
        if spec == "embedded":
            return resolve_model("default").path
        if spec != "auto":
            p = Path(spec).expanduser()
            if not (p / "tokenizer_config.json").is_file() and not (p / "tokenizer.json").is_file():
                raise ModelError(f"generation.openai.tokenizer: {p} is not a tokenizer directory "
                                 "(no tokenizer.json / tokenizer_config.json)")
            return p
        name = self.model
        if name in _DEFAULT_ALIASES or name == "embedded":
            return resolve_model("default").path
        p = Path(name).expanduser()
        if name and p.is_dir():
            return p
        return _offline_snapshot(name) if name else None

    def load(self) -> "TokenCounter":
        if self._loaded:
            return self
        self._loaded = True
        try:
            src = self._source()
        except ModelError:
            if self.spec != "auto":
                raise
            src = None
        if src is not None:
            from transformers import AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
                self.source = Path(src)
            except (OSError, ValueError) as e:
                if self.spec != "auto":
                    raise ModelError(f"could not load the tokenizer at {src}: {str(e).splitlines()[0][:200]}") from None
                log.warning("tokenizer at %s did not load (%s); prompt budgets use the estimate", src, e)
        if self.tokenizer is not None:
            self.how = f"the tokenizer at {src} (local)"
        else:
            self.how = (f"an estimate of {CHARS_PER_TOKEN} characters per token (no local tokenizer for "
                        f"{self.model!r}; set generation.openai.tokenizer to count exactly)")
            log.info("token budgets for %s use %s", self.model, self.how)
        return self

    @property
    def exact(self) -> bool:
        return self.load().tokenizer is not None

    def count(self, messages: list[Message]) -> int:
        self.load()
        if self.tokenizer is None:
            return estimate_tokens(messages)
        from hybrid.chat import encode_rendered, render_chat

        return len(encode_rendered(self.tokenizer, render_chat(self.tokenizer, messages)))

    def count_text(self, text: str) -> int:
        """Tokens in a piece of generated text (for servers that report no usage)."""
        self.load()
        if self.tokenizer is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context_window(self) -> int | None:
        """The local model config's ``max_position_embeddings`` next to the tokenizer, else the
        tokenizer's ``model_max_length`` when it is a real limit (tokenizers without one say 1e30)."""
        self.load()
        if self.source is not None:
            try:
                n = json.loads((self.source / "config.json").read_text()).get("max_position_embeddings")
                if isinstance(n, int) and n > 0:
                    return n
            except (OSError, ValueError, AttributeError):
                pass
        n = getattr(self.tokenizer, "model_max_length", None)
        return int(n) if isinstance(n, int) and 0 < n < 10**7 else None
