"""Service settings: one pydantic ``BaseSettings``, filled from arguments, then ``HYBRID_API_*`` env vars.

::

    settings = ServiceSettings(apps=["apps/legal"], api_keys=["s3cret"])
    HYBRID_API_KEYS=key1,key2 hybrid serve --app apps/legal     # keys from the environment

Every cap here is enforced with a clear 413/422/429 message, never by hanging or by a 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Hard ceilings published in the OpenAPI schema; settings may lower them, never raise them.
HARD_MAX_K = 100
HARD_MAX_NEW_TOKENS = 2048
HARD_MAX_QUESTION_CHARS = 32_000
HARD_MAX_HISTORY = 64


def _split(v):
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


class BatchingSettings(BaseSettings):
    """Batched serving for apps on the transformers backend (``hybrid.generation.batching``).

    ``HYBRID_API_BATCH_MAX_SIZE=8 hybrid serve --app apps/legal`` gathers up to 8 concurrent answers
    into one batched generation; the first waits up to ``batch_window_ms`` for the others, and up to
    ``batch_max_wait_ms`` for answers whose retrieval is still running. Off (1) by default: answers
    are then generated one at a time, exactly as before.
    """

    model_config = SettingsConfigDict(env_prefix="HYBRID_API_", extra="ignore", populate_by_name=True)

    batch_max_size: int = Field(1, ge=1, le=64, description="answers generated together in one batch "
                                "(transformers backend); 1 = one at a time, no batching")
    batch_window_ms: float = Field(15.0, ge=0, le=1000, description="how long the first waiting answer "
                                   "waits for others to share its batch, in milliseconds")

    batch_max_wait_ms: float = Field(250.0, ge=0, le=5000, description="past the window, how long a batch "
                                     "may wait for the next answer the server is still preparing (retrieval), in ms")
    batch_prep_concurrency: int = Field(1, ge=0, le=64, description="answers preparing their prompts "
                                        "(retrieval, chat template, tokenizer) at once when batching; 0 = no "
                                        "limit. Preparation is mostly Python under the GIL: more at once gains "
                                        "little and slows the event loop that answers 429s")

    @property
    def batching(self) -> bool:
        return self.batch_max_size > 1


class ServiceSettings(BatchingSettings):
    """Everything ``hybrid serve`` can be told. Env vars: ``HYBRID_API_<FIELD>`` (``HYBRID_API_KEYS``)."""

    model_config = SettingsConfigDict(env_prefix="HYBRID_API_", extra="forbid", populate_by_name=True)

    apps: Annotated[list[str], NoDecode] = Field(default_factory=list, description="app directories to serve")
    host: str = Field("127.0.0.1", description="bind address; forced to loopback when no API key is set")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = pick a free one)")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="HYBRID_API_KEYS",
        description="bearer keys, comma-separated in the env var; empty = no auth, loopback only")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest JSON request body")
    max_upload_bytes: int = Field(20_000_000, ge=1024, description="largest multipart upload (all files)")
    max_upload_files: int = Field(20, ge=1, description="files per upload request")
    max_question_chars: int = Field(4000, ge=1, le=HARD_MAX_QUESTION_CHARS, description="longest question")
    max_history: int = Field(20, ge=0, le=HARD_MAX_HISTORY, description="most history messages per request")
    max_k: int = Field(20, ge=1, le=HARD_MAX_K, description="most chunks a request may ask for")
    max_new_tokens: int = Field(512, ge=1, le=HARD_MAX_NEW_TOKENS, description="most tokens a request may ask for")
    concurrency: int = Field(1, ge=1, description="answers generated at once (the CPU model is compute-bound); "
                             "defaults to batch_max_size when batching is on")
    queue_size: int = Field(8, ge=0, description="requests allowed to wait for the generator; more get 429")
    retry_after: int = Field(1, ge=1, description="seconds suggested in Retry-After on 429/503")
    request_timeout: float = Field(120.0, gt=0, description="per-request deadline in seconds; then 504")
    rate_limit: float = Field(600.0, ge=0, description="requests per minute per API key (0 = unlimited)")
    rate_burst: int = Field(60, ge=1, description="requests a key may send at once before the rate applies")
    drain_grace: float = Field(30.0, ge=0, description="seconds in-flight requests get after SIGTERM")
    upload_dir: str | None = Field(None, description="uploads root; default $HYBRID_CACHE/uploads/<app>/")
    log_level: str = Field("info", description="uvicorn log level")

    @field_validator("apps", "api_keys", mode="before")
    @classmethod
    def _csv(cls, v):
        return _split(v)

    @field_validator("api_keys")
    @classmethod
    def _no_blank_keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if len(k) < 8:
                raise ValueError(f"API keys must be at least 8 characters, got one of {len(k)}")
        return v

    @model_validator(mode="after")
    def _loopback_without_keys(self) -> "ServiceSettings":
        # Without a key anyone who can reach the port could use the service: only allow loopback then.
        if not self.api_keys and self.host not in ("127.0.0.1", "::1", "localhost"):
            self.forced_loopback = self.host
            self.host = "127.0.0.1"
        return self

    @model_validator(mode="after")
    def _batch_slots(self) -> "ServiceSettings":
        # A batch can only hold answers that hold a generator slot: without an explicit concurrency,
        # batching opens one slot per batch row (a smaller explicit value caps the batch instead).
        if self.batching and "concurrency" not in self.model_fields_set:
            self.concurrency = self.batch_max_size
        return self

    forced_loopback: str | None = Field(None, exclude=True, description="set when host was overridden")

    def uploads_for(self, app: str) -> Path:
        from core.io import cache_dir

        root = Path(self.upload_dir) if self.upload_dir else cache_dir("uploads")
        return root / app
