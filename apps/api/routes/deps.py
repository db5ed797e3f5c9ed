"""Dependencies every router shares: the app's ``Service``, and the caller check on authed routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from apps.api.errors import ApiError
from apps.api.schemas import unsafe_text
from apps.api.limits import retry_after_header
from apps.api.service import Service


async def service(request: Request) -> Service:
    """The one ``Service`` of the app serving this request (set by ``create_app``). Async on purpose: a
    plain function would run in FastAPI's thread pool, a thread hop per request that under overload
    delays even the requests it refuses."""
    return request.app.state.service


Svc = Annotated[Service, Depends(service)]


async def caller(request: Request, svc: Svc) -> str:
    """The caller's identity for rate limiting: 401 without a valid key, 429 over the rate limit."""
    who = svc.check_key(request.headers.get("authorization"))
    if who == "anonymous" and request.client is not None:
        who = f"ip:{request.client.host}"
    wait = svc.rate.check(who)
    if wait:
        svc.metrics.rejected.labels("rate_limit").inc()
        raise ApiError(429, f"rate limit of {svc.settings.rate_limit:g} requests/minute reached; "
                            f"retry in {wait:.1f}s", "rate_limit", {"Retry-After": retry_after_header(wait)})
    return who


AUTHED = [Depends(caller)]


def clean_params(**params: Any) -> None:
    """Query, form and path values get the JSON bodies' rule: no NUL, no lone surrogate (422)."""
    for name, value in params.items():
        bad = unsafe_text(value, name)
        if bad:
            raise ApiError(422, bad)
