"""Health and metrics: /healthz (liveness), /readyz (readiness), /metrics (Prometheus, authed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from apps.api import schemas as S
from apps.api.errors import ERRORS, error_json, errs
from apps.api.limits import retry_after_header
from apps.api.routes.deps import AUTHED, Svc

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=S.Health, summary="liveness (no auth)",
            responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", response_model=S.Health, summary="readiness (no auth): 503 while loading and while draining",
            responses={503: ERRORS[503], 200: {"content": {"application/json": {"example": {"status": "ready"}}}}})
async def readyz(svc: Svc):
    if svc.draining:
        return error_json(503, "draining: the server is shutting down", "unavailable")
    if svc.load_error:
        return error_json(503, f"failed to load: {svc.load_error}", "unavailable")
    if not svc.backend.ready():
        return error_json(503, "loading models and knowledge bases", "unavailable",
                          {"Retry-After": retry_after_header(svc.settings.retry_after)})
    return {"status": "ready"}


@router.get("/metrics", dependencies=AUTHED, summary="Prometheus metrics", response_class=Response,
            responses={**errs(), 200: {"content": {"text/plain": {"example": "hybrid_requests_total{...} 3.0"}}}})
async def metrics(svc: Svc):
    svc.metrics.queue_depth.set(svc.gate.waiting)
    return Response(svc.metrics.render(), media_type=svc.metrics.content_type)
