"""The error model: every failure becomes ``{"error": {"message", "type", "code"}}`` (what OpenAI
clients expect), and this module is the only place errors become HTTP.

``UnknownAppError`` 404, an upload name already in the KB 409, ``InputError`` 422, ``NotReadyError`` and draining 503, a full queue or rate
limit 429 (+ Retry-After), the deadline 504, a body over the cap 413, anything unexpected 500.
Routes raise ``ApiError``; ``install_error_handlers`` turns it and every other exception into JSON.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from apps.api import schemas as S
from apps.api.backend import NotReadyError, UnknownAppError
from apps.api.limits import BodyTooLarge
from core.errors import HybridError, InputError
from hybrid.generation.remote import BackendDeadline

log = logging.getLogger("hybrid.api")


class ApiError(Exception):
    """An HTTP error with its OpenAI-style ``type`` and extra headers (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}

    def body(self) -> dict[str, Any]:
        """The error body, also sent as the last event of a stream that fails midway."""
        return error_body(self.status, self.message, self.kind)


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


def error_json(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, kind), status_code=status, headers=headers)


ERRORS = {
    401: {"model": S.ErrorResponse, "description": "missing, empty or wrong bearer key"},
    404: {"model": S.ErrorResponse, "description": "unknown app or job"},
    409: {"model": S.ErrorResponse, "description": "an upload's file name is already a document of the app"},
    413: {"model": S.ErrorResponse, "description": "request body over the cap"},
    422: {"model": S.ErrorResponse, "description": "invalid field or a value over a cap"},
    429: {"model": S.ErrorResponse, "description": "queue full or rate limit; see Retry-After"},
    503: {"model": S.ErrorResponse, "description": "still loading, or draining for shutdown"},
    504: {"model": S.ErrorResponse, "description": "the per-request deadline passed"},
}


def errs(*codes: int) -> dict[int, dict]:
    """Documented error responses of an authenticated route (401 and 429 apply to all of them)."""
    return {c: ERRORS[c] for c in sorted({401, 422, 429, *codes})}


def to_api_error(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UnknownAppError):
        return ApiError(404, str(e), "not_found")
    if isinstance(e, NotReadyError):
        return ApiError(503, str(e), "unavailable", {"Retry-After": "1"})
    if isinstance(e, InputError):
        return ApiError(422, str(e))
    if isinstance(e, BackendDeadline):  # a remote generation server outlived its own deadline
        return ApiError(504, str(e), "timeout")
    if isinstance(e, HybridError):
        return ApiError(500, f"{type(e).__name__}: {e}", "server_error")
    log.exception("unexpected error", exc_info=e)
    return ApiError(500, f"internal error ({type(e).__name__})", "server_error")


def json_error_message(err: dict[str, Any], doc: Any) -> str:
    """Broken JSON: where it broke (character, line, column), what the parser expected there, and a
    short excerpt of the text around that point."""
    loc = err.get("loc") or ()
    pos = loc[-1] if loc else None
    what = (err.get("ctx") or {}).get("error", "invalid JSON")
    if not isinstance(pos, int) or not isinstance(doc, str):
        return f"request body is not valid JSON: {what}"
    line = doc.count("\n", 0, pos) + 1
    col = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    near = doc[max(0, pos - 20):pos + 20]
    return (f"request body is not valid JSON: {what} at character {pos} (line {line}, column {col}), "
            f"near {near!r}")


def validation_message(e: RequestValidationError) -> str:
    """One line naming the field, the problem and the bad value."""
    parts = []
    for err in e.errors()[:3]:
        if err.get("type") == "json_invalid":
            return json_error_message(err, getattr(e, "body", None))
        if err.get("type") == "unsafe_text":  # the message names the field itself
            parts.append(err["msg"])
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        msg = err.get("msg", "invalid")
        if "input" in err and err.get("type") not in ("missing",):
            val = repr(err["input"])
            if isinstance(err["input"], float) and math.isnan(err["input"]):
                val = "NaN"
            msg += f" (got {val[:60]})"
        parts.append(f"{loc}: {msg}")
    more = len(e.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception a route can raise into an error body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_json(e.status, e.message, e.kind, e.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge):
        return error_json(413, str(e), "request_too_large")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return error_json(422, validation_message(e), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        kind = {404: "not_found", 405: "invalid_request"}.get(e.status_code, "invalid_request")
        msg, status = str(e.detail), e.status_code
        if status == 400:  # FastAPI/Starlette could not decode the body (bad JSON bytes, bad multipart)
            detail = "" if "parsing the body" in msg else f" ({msg.rstrip('.')})"
            msg = f"request body could not be parsed{detail}: send UTF-8 JSON (multipart form data for uploads)"
            status = 422  # the same status as any other malformed body
        return error_json(status, msg, kind, getattr(e, "headers", None))

    @app.exception_handler(HybridError)
    async def _hybrid(request: Request, e: HybridError):
        a = to_api_error(e)
        return error_json(a.status, a.message, a.kind, a.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        a = to_api_error(e)
        return error_json(a.status, a.message, a.kind, a.headers)
