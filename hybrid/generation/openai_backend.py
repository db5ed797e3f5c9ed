"""``OpenAIGenerator``: the ``openai`` backend. Answers come from any OpenAI-compatible server
(vLLM, llama.cpp's server, Ollama, TGI, a hosted API, another ``hybrid serve``) over HTTP.

    gen = OpenAIGenerator("Qwen/Qwen2.5-7B-Instruct", base_url="http://gpu-box:8000/v1",
                          api_key_env="VLLM_API_KEY", adapter_models={"legal": "legal"})
    gen.load_adapter("legal", "adapters/legal")   # checks that the server serves model "legal"
    gen.generate(messages, adapter="legal")       # POST /v1/chat/completions with model "legal"

An app selects it with ``generation.backend: openai``; ``generation.model`` is the server's name for
the base model and ``generation.openai`` holds the rest (``hybrid.app.OpenAISection``, docs/backends.md).

Adapters are served by name, vLLM's convention (``--lora-modules legal=adapters/legal``): loading one
here checks ``GET /v1/models`` for its name, so a server without it is a ``ModelError`` that the
app turns into "tuned and tuned_rag excluded: ...". The adapter card's hashes are compared with what
the server reports about the model; servers report neither chat template nor system prompt today,
so a warning says so, and the system prompt (sent from here) is checked against the card locally.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator

from core.errors import InputError, ModelError
from core.protocols import Generation, GenerationParams, Message
from hybrid.chat import (SystemPrompt, apply_system_prompt, neutralize_messages, system_prompt_hash,
                         validate_messages)
from hybrid.generation import GENERATORS
from hybrid.generation.params import check_params, cut_at_stop
from hybrid.generation.remote import BackendError, BackendHTTPError, OpenAIClient
from hybrid.generation.stream import _StopScanner
from hybrid.generation.tokens import TokenCounter

log = logging.getLogger(__name__)

__all__ = ["OpenAIGenerator", "RemoteStream", "app_kwargs", "BackendError"]

DEFAULT_CONTEXT = 4096  # when neither the config, the server nor a local tokenizer says


def app_kwargs(app: Any) -> tuple[tuple, dict]:
    """How an app's settings become ``OpenAIGenerator``'s arguments (``hybrid.assemble`` calls this)."""
    g, o = app.generation, app.generation.openai
    if g.model in ("embedded", "default"):
        raise InputError(f"{app.name}: generation.model must name the server's model when generation.backend "
                         f"is openai (e.g. Qwen/Qwen2.5-7B-Instruct); {g.model!r} is the in-process model")
    sp = SystemPrompt(app.system_prompt, defaults={"app_name": app.title or app.name})
    return (g.model,), {"base_url": o.base_url, "api_key_env": o.api_key_env, "timeout": o.timeout,
                        "connect_timeout": o.connect_timeout, "retries": o.retries, "backoff": o.backoff,
                        "max_connections": o.max_connections, "tokenizer": o.tokenizer,
                        "context_window": o.context_window, "extra_body": dict(o.extra_body),
                        "adapter_models": {app.name: o.adapter_model or app.name}, "system_prompt": sp}


@GENERATORS.register("openai")
class OpenAIGenerator:
    """A ``core.protocols.Generator`` whose model runs on an OpenAI-compatible server."""

    def __init__(self, model: str, *, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str = "",
                 timeout: float = 120.0, connect_timeout: float = 5.0, retries: int = 2, backoff: float = 0.5,
                 max_connections: int = 8, tokenizer: str = "auto", context_window: int = 0,
                 extra_body: dict[str, Any] | None = None, adapter_models: dict[str, str] | None = None,
                 system_prompt: str | SystemPrompt | None = None):
        if not model or not isinstance(model, str):
            raise InputError(f"the openai backend needs the server's model name, got {model!r}")
        self.model_id = self.name = model
        self.sha = ""  # the weights are on the server; answer caches key on the model name
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self.adapter_models = dict(adapter_models or {})
        self.tokens = TokenCounter(tokenizer, model=model)
        self._settings = dict(timeout=timeout, connect_timeout=connect_timeout, retries=retries, backoff=backoff,
                              max_connections=max_connections)
        self.max_connections = max_connections
        self._context = int(context_window)
        self._client: OpenAIClient | None = None
        self._served: dict[str, dict] | None = None
        self._no_list = False  # the server has no GET /models
        self._adapters: dict[str, str] = {}  # adapter name -> server model name
        self._cards: dict[str, Any] = {}
        self._checked: set[tuple[str, str]] = set()
        self._lock = threading.RLock()

    # -- connection
    @property
    def client(self) -> OpenAIClient:
        with self._lock:
            if self._client is None:
                key = None
                if self.api_key_env:
                    key = os.environ.get(self.api_key_env)
                    if not key:
                        raise ModelError(f"generation.openai.api_key_env names ${self.api_key_env}, which is not set")
                self._client = OpenAIClient(self.base_url, api_key=key, **self._settings)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def served_models(self, refresh: bool = False) -> dict[str, dict] | None:
        """``GET /v1/models`` by id (cached; ``refresh`` asks again); None for a server without that
        endpoint (404/405), whose model names then cannot be checked before use."""
        with self._lock:
            if self._served is None or refresh:
                try:
                    self._served = {m["id"]: m for m in self.client.models()}
                except BackendHTTPError as e:
                    if e.status not in (404, 405):
                        raise
                    log.warning("%s has no model list (GET /models: %d): model and adapter names are not "
                                "checked before use", self.client.where, e.status)
                    self._served = {}
                    self._no_list = True
            return None if self._no_list else self._served

    def warm_up(self) -> None:
        """Ask the server which models it serves: a server that is down or lacks ``model_id`` is a
        one-line ``ModelError`` now rather than at the first question."""
        served = self.served_models()
        if served is not None and self.model_id not in served:
            raise ModelError(f"{self.client.where} has no model {self.model_id!r} (it serves: "
                             f"{', '.join(sorted(served)) or 'nothing'}); set generation.model to one of them")
        self.tokens.load()

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer prompt budgets are counted with, or None when they are estimated."""
        return self.tokens.load().tokenizer

    @property
    def context_window(self) -> int:
        if self._context:
            return self._context
        entry = (self._served or {}).get(self.model_id, {})
        for key in ("max_model_len", "context_length", "context_window"):  # vLLM, others
            if isinstance(entry.get(key), int) and entry[key] > 0:
                return int(entry[key])
        return self.tokens.context_window() or DEFAULT_CONTEXT

    # -- adapters
    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    def adapter_card(self, name: str) -> Any:
        return self._cards.get(name)

    def load_adapter(self, name: str, path: str | os.PathLike[str] | None = None) -> None:
        """Use the server's model ``adapter_models[name]`` (default ``name``) for ``adapter=name``.
        Nothing is uploaded: the server must already serve it (``hybrid tune export`` prints how).
        ``path`` is the local adapter directory, read only for its card."""
        if not name or not isinstance(name, str):
            raise InputError(f"adapter name must be a non-empty string, got {name!r}")
        served_name = self.adapter_models.get(name, name)
        served = self.served_models(refresh=True)
        if served is not None and served_name not in served:
            raise ModelError(f"{self.client.where} does not serve {served_name!r}, the model name of adapter "
                             f"{name!r} (it serves: {', '.join(sorted(served)) or 'nothing'}); load it there "
                             f"(vLLM: --enable-lora --lora-modules {served_name}=DIR, see `hybrid tune export`)")
        card = None
        if path is not None and (Path(path) / "adapter_card.json").is_file():
            from hybrid.tuning.card import read_card

            card = read_card(Path(path))
        with self._lock:
            self._adapters[name] = served_name
            self._cards[name] = card
        self._check_card(name, card, (served or {}).get(served_name, {}))

    def _check_card(self, name: str, card: Any, entry: dict) -> None:
        """Compare the card with what the server reports for the adapter's model, or say why not."""
        if card is None:
            log.warning("adapter %r has no local adapter_card.json: its base model, chat template and system "
                        "prompt cannot be checked against the server", name)
            return
        parent = entry.get("parent")
        base = str(card.base_model_id).rsplit("/", 1)[-1].lower()
        if isinstance(parent, str) and base and base not in parent.lower():
            log.warning("adapter %r was trained on %s but the server reports its base model as %s",
                        name, card.base_model_id, parent)
        reported = {k: entry.get(k) for k in ("template_hash", "system_prompt_hash") if entry.get(k)}
        for key, value in reported.items():
            want = getattr(card, key, "") or ""
            if want and want != value:
                log.warning("adapter %r: the server's %s %s differs from the card's %s", name, key,
                            str(value)[:12], want[:12])
        if "template_hash" not in reported:
            log.warning("adapter %r: %s does not report the chat template it applies, so the card's template "
                        "hash cannot be checked; serve the base model with its own chat template (the one the "
                        "adapter was trained with). The system prompt is sent from here and is checked locally.",
                        name, self.client.where)

    # -- requests
    def _messages(self, messages: list[Message]) -> tuple[list[Message], Any]:
        msgs = validate_messages(messages)
        tok = self.tokenizer
        if tok is not None:
            # the server renders the chat template, so the control strings are made ordinary text here,
            # with the local copy of its tokenizer's list; without one we cannot know the server's
            # special tokens (docs/prompt-integrity.md says so)
            msgs = neutralize_messages(tok, msgs)[0]
        own = next((m["content"] for m in msgs if m["role"] == "system"), None)
        if own is not None:
            sp: Any = own
            if isinstance(self.system_prompt, SystemPrompt) and self.system_prompt.matches(own):
                sp = self.system_prompt  # our template, rendered by the caller (e.g. with a date)
            return msgs, sp
        return apply_system_prompt(msgs, self.system_prompt), self.system_prompt

    def count_tokens(self, messages: list[Message]) -> int:
        return self.tokens.count(self._messages(messages)[0])

    def _body(self, messages: list[Message], adapter: str | None, params: GenerationParams, stream: bool) -> dict:
        if adapter is not None and adapter not in self._adapters:
            raise ModelError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.adapters()) or 'none'})")
        msgs, sp = self._messages(messages)
        card = self._cards.get(adapter) if adapter else None
        want = getattr(card, "system_prompt_hash", "") if card is not None else ""
        have = system_prompt_hash(sp)
        if want and (adapter or "", have) not in self._checked:
            self._checked.add((adapter or "", have))
            if want != have:
                log.warning("adapter %r: system prompt differs from training (card %s, now %s)",
                            adapter, want[:12], have[:12])
        body: dict[str, Any] = {**self.extra_body, "model": self._adapters[adapter] if adapter else self.model_id,
                                "messages": msgs, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}
        if params.stop:
            body["stop"] = list(params.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def generate(self, messages: list[Message], *, adapter: str | None = None,
                 params: GenerationParams | None = None) -> Generation:
        params = check_params(params)
        body = self._body(messages, adapter, params, stream=False)
        data = self.client.chat(body)
        choice = data["choices"][0]
        if not isinstance(choice, dict) or not isinstance(choice.get("message") or {}, dict):
            raise BackendError(f"{self.client.where} sent a completion whose choice is not an object: {choice!r:.120}")
        text = (choice.get("message") or {}).get("content") or ""
        text, cut = cut_at_stop(text, params.stop)  # servers that ignore stop strings still end at one
        usage = data.get("usage") or {}
        prompt_tokens = _int(usage.get("prompt_tokens"), lambda: self.tokens.count(body["messages"]))
        completion = _int(usage.get("completion_tokens"), lambda: self.tokens.count_text(text))
        finish = "stop" if cut else ("length" if choice.get("finish_reason") == "length" else "stop")
        return Generation(text, prompt_tokens, completion, finish)

    def generate_batch(self, batch: list[list[Message]], *, adapter: str | None = None,
                       params: GenerationParams | None = None,
                       on_row: Callable[[int], None] | None = None) -> list[Generation]:
        """Concurrent requests through the pool (the server batches them); results in input order.
        ``on_row(i)`` is called, in this thread, as soon as row ``i``'s answer is back (eval's progress bar)."""
        if not batch:
            return []
        params = check_params(params)
        out: list[Generation | None] = [None] * len(batch)
        with ThreadPoolExecutor(max_workers=min(len(batch), self.max_connections),
                                thread_name_prefix="openai-batch") as pool:
            futures = {pool.submit(self.generate, m, adapter=adapter, params=params): i for i, m in enumerate(batch)}
            try:
                for fut in as_completed(futures):
                    i = futures[fut]
                    out[i] = fut.result()
                    if on_row is not None:
                        on_row(i)
            except BaseException:
                for f in futures:
                    f.cancel()  # the rows not sent yet; those in flight end at their deadline
                raise
        return out  # type: ignore[return-value]

    def stream(self, messages: list[Message], *, adapter: str | None = None,
               params: GenerationParams | None = None) -> "RemoteStream":
        params = check_params(params)
        body = self._body(messages, adapter, params, stream=True)
        return RemoteStream(self, body, params)


def _int(value: Any, fallback) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else int(fallback())


class RemoteStream:
    """Text pieces as the server sends them. ``close()``, leaving a ``with`` block or dropping the
    iterator closes the connection (the server then stops generating). ``generation`` once done."""

    def __init__(self, gen: OpenAIGenerator, body: dict, params: GenerationParams):
        self._gen, self._body, self._params = gen, body, params
        self.generation: Generation | None = None
        self._events: Iterator[dict] | None = None
        self._pieces = self._run()

    def _run(self) -> Iterator[str]:
        scanner = _StopScanner(self._params.stop)
        self._events = self._gen.client.chat_stream(self._body)
        parts: list[str] = []
        usage: dict = {}
        finish = "stop"
        try:
            for event in self._events:
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
                    out = scanner.feed(delta) if delta else ""
                    if out:
                        parts.append(out)
                        yield out
                    if scanner.stopped:
                        finish = "stop"
                        return
            tail = scanner.flush()
            if tail:
                parts.append(tail)
                yield tail
        except GeneratorExit:
            finish = "cancelled"
            raise
        finally:
            self._events.close()
            text = "".join(parts)
            self.generation = Generation(
                text, _int(usage.get("prompt_tokens"), lambda: self._gen.tokens.count(self._body["messages"])),
                _int(usage.get("completion_tokens"), lambda: self._gen.tokens.count_text(text)), finish)

    def __iter__(self) -> "RemoteStream":
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()

    def __enter__(self) -> "RemoteStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

