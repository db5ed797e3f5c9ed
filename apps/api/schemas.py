"""Request and response bodies. Field limits here are the hard ceilings the OpenAPI schema shows;
``ServiceSettings`` may set lower caps, enforced in the handlers with the same 422 shape."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from apps.api.settings import HARD_MAX_HISTORY, HARD_MAX_K, HARD_MAX_NEW_TOKENS, HARD_MAX_QUESTION_CHARS

# A lone surrogate cannot be encoded as UTF-8 (the tokenizer and the JSON encoder of the reply both
# raise on it), and a NUL truncates strings in C libraries (tokenizers, SQLite FTS, loggers).
_UNSAFE_CHAR = re.compile("[\x00\ud800-\udfff]")


def unsafe_text(value: Any, path: str) -> str | None:
    """A one-line complaint about the first NUL or lone surrogate in ``value`` (any nesting of
    dicts, lists and strings; dict keys included), naming where it is; None when the value is clean.

    >>> unsafe_text({"messages": [{"content": "ok"}, {"content": "a\\ud800"}]}, "body")
    'body.messages.1.content contains a lone surrogate (U+D800) at character 1: send valid Unicode text'
    """
    if isinstance(value, str):
        m = _UNSAFE_CHAR.search(value)
        if m is None:
            return None
        what = "a NUL character (U+0000)" if m.group() == "\x00" else f"a lone surrogate (U+{ord(m.group()):04X})"
        return f"{path} contains {what} at character {m.start()}: send valid Unicode text"
    if isinstance(value, dict):
        for key, item in value.items():
            bad = unsafe_text(key, f"{path} key") or unsafe_text(item, f"{path}.{key}")
            if bad:
                return bad
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            bad = unsafe_text(item, f"{path}.{i}")
            if bad:
                return bad
    return None


class RequestBody(BaseModel):
    """A JSON request body: every string in it, declared or passed through (OpenAI extras), nested
    or a dict key, is free of NULs and lone surrogates, or the request gets one 422 naming where."""

    @model_validator(mode="before")
    @classmethod
    def _no_unsafe_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, item in data.items():
                bad = unsafe_text(key, "body key") or unsafe_text(item, str(key))
                if bad:
                    raise PydanticCustomError("unsafe_text", bad)
        return data


def strategy_choices() -> tuple[str, ...]:
    """``auto`` and every strategy registered in ``hybrid.strategies`` (read per request and per schema)."""
    from hybrid.strategies import strategy_names

    return ("auto", *strategy_names())


def _known_strategy(value: str) -> str:
    known = strategy_choices()
    if value not in known:
        raise ValueError(f"unknown strategy {value!r}; known: {', '.join(known)}")
    return value


def _strategy_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = list(strategy_choices())  # the registry's names when the OpenAPI schema is built


# a str checked against the registry, not a Literal, so a newly registered strategy needs no edit here
Strategy = Annotated[str, AfterValidator(_known_strategy), Field(json_schema_extra=_strategy_enum)]
# a metadata filter value: equality, or {"in": [...]} / {"gte": x, "lt": y} (indexes.kb search filters)
Scalar = str | int | float | bool
FilterValue = Scalar | dict[str, Scalar | list[Scalar]]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    """Every error, OpenAI-style, so OpenAI clients show the message."""

    error: ErrorBody


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(max_length=HARD_MAX_QUESTION_CHARS)


class AskIn(RequestBody):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"app": "legal", "question": "How long is the notice period for a residential tenancy?"},
        {"app": "shopping", "question": "Do you ship to Norway?", "strategy": "rag", "k": 4, "stream": True},
        {"app": "policy", "question": "Do they sell my data?", "filters": {"source": "walmart-com.txt"}},
    ]})
    app: str = Field(min_length=1, max_length=100, description="app name, see GET /v1/apps")
    question: str = Field(min_length=1, max_length=HARD_MAX_QUESTION_CHARS)
    strategy: Strategy = Field("auto", description="'auto' lets the app's router decide")
    history: list[Turn] = Field(default_factory=list, max_length=HARD_MAX_HISTORY,
                                description="earlier turns, oldest first")
    k: StrictInt | None = Field(None, ge=1, le=HARD_MAX_K, description="chunks to retrieve (rag strategies)")
    max_new_tokens: StrictInt | None = Field(None, ge=1, le=HARD_MAX_NEW_TOKENS)
    temperature: StrictFloat | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    stream: StrictBool = Field(False, description="Server-Sent Events: 'token' events, then one 'final' event")
    filters: dict[str, FilterValue] | None = Field(
        None, max_length=8, description="scope retrieval to matching chunks, as `hybrid search --filter`: "
        '{"source": "policy.txt"}, {"source": {"in": ["a.txt", "b.txt"]}}, {"page": {"lt": 3}}')


class CitationOut(BaseModel):
    n: int
    source: str
    page: int | None = None
    chunk_id: str
    snippet: str
    score: float = 0.0


class DecisionOut(BaseModel):
    strategy: str
    scores: dict[str, float] = {}
    confidence: float = 1.0
    reason: str = ""
    excluded: dict[str, str] = {}


class AskOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "answer": "The landlord must give at least two months' notice [1].", "strategy": "rag",
        "decision": {"strategy": "rag", "scores": {"rag": 0.71, "few_shot": 0.22}, "confidence": 0.8,
                     "reason": "retrieval found relevant text (top score 0.71)", "excluded": {}},
        "citations": [{"n": 1, "source": "vellmar-tenancy-act-2019.md", "page": None, "chunk_id": "3f2a9c",
                       "snippet": "A landlord shall give not less than two months' notice...", "score": 0.71}],
        "timings": {"route": 0.012, "generate": 1.9, "total": 2.0},
        "usage": {"prompt_tokens": 612, "completion_tokens": 24}, "notices": [], "request_id": "req_1a2b3c"}]})
    answer: str
    strategy: str
    decision: DecisionOut
    citations: list[CitationOut]
    timings: dict[str, float]
    usage: dict[str, int]
    notices: list[str] = []
    request_id: str
    answer_confidence: float | None = Field(None, description="the strategy's own score in [0, 1] (extract)")


class HitOut(BaseModel):
    rank: int
    score: float
    scores: dict[str, float] = {}
    chunk_id: str
    doc_id: str
    source: str
    page: int | None = None
    text: str


class SearchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "app": "legal", "query": "deposit", "hits": [
            {"rank": 0, "score": 0.62, "scores": {"dense": 0.62}, "chunk_id": "c1", "doc_id": "d1",
             "source": "vellmar-tenancy-act-2019.md", "page": None, "text": "A deposit shall not exceed..."}]}]})
    app: str
    query: str
    hits: list[HitOut]


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "job_5d41402abc4b2a76", "app": "legal", "files": ["lease-addendum.md"], "status": "done",
        "progress": 1.0, "stage": "done", "created": 1763900000.0, "finished": 1763900002.5,
        "report": {"documents": 1}, "error": None}]})
    id: str
    app: str
    files: list[str]
    status: Literal["queued", "running", "done", "failed"]
    progress: float
    stage: str
    created: float
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None


class AppOut(BaseModel):
    name: str
    title: str
    description: str
    strategies: list[str]
    excluded: dict[str, str]
    router: str
    adapter_card: dict[str, Any] | None = None
    knowledge_base: dict[str, Any] | None = None


class AppsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"apps": [{
        "name": "legal", "title": "Vellmar Legal Helper", "description": "Questions about Vellmar law",
        "strategies": ["few_shot", "rag"], "excluded": {"tuned": "no adapter"}, "router": "rules",
        "adapter_card": None, "knowledge_base": {"documents": 36, "chunks": 410}}]}]})
    apps: list[AppOut]


# -- OpenAI-compatible chat completions --------------------------------------------------------

class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class HybridOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Strategy = "auto"
    k: StrictInt | None = Field(None, ge=1, le=HARD_MAX_K)


class ChatIn(RequestBody):
    """The OpenAI request; unknown OpenAI fields are accepted and ignored, as OpenAI SDKs send many."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "legal", "messages": [{"role": "user", "content": "What is the deposit cap?"}]},
        {"model": "shopping", "stream": True, "max_tokens": 64,
         "messages": [{"role": "user", "content": "Return policy?"}], "hybrid": {"strategy": "rag"}},
    ]})
    model: str = Field(min_length=1, max_length=100, description="the app name")
    messages: list[ChatMessage] = Field(min_length=1, max_length=HARD_MAX_HISTORY + 2)
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(None, ge=1, le=HARD_MAX_NEW_TOKENS)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=HARD_MAX_NEW_TOKENS)
    temperature: StrictFloat | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: StrictFloat | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    n: StrictInt | None = Field(None, ge=1, le=1, description="only 1 is supported")
    stop: str | list[str] | None = None
    hybrid: HybridOptions | None = Field(None, description="extension: strategy override and k")


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class ChatOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "chatcmpl-req_1a2b3c", "object": "chat.completion", "created": 1763900000, "model": "legal",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Two months [1]."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 612, "completion_tokens": 5, "total_tokens": 617},
        "hybrid": {"strategy": "rag", "decision": {"strategy": "rag", "reason": "retrieval found relevant text"},
                   "citations": [], "request_id": "req_1a2b3c"}}]})
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: dict[str, int]
    hybrid: dict[str, Any] = Field(description="extension: route decision, citations, timings")


class ModelsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"object": "list", "data": [
        {"id": "legal", "object": "model", "created": 0, "owned_by": "hybrid"},
        {"id": "shopping", "object": "model", "created": 0, "owned_by": "hybrid"}]}]})
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: str
