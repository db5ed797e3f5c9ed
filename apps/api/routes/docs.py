"""The schema and its viewers (/openapi.json, /docs, /redoc) behind the same key as the API: the
schema names every route, field and cap, which is nobody's business without a key. With no key
configured (loopback only) they stay open, like every other route."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from apps.api.routes.deps import AUTHED

router = APIRouter(include_in_schema=False, dependencies=AUTHED)

SCHEMA_URL = "/openapi.json"


@router.get(SCHEMA_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=SCHEMA_URL, title=request.app.title + " - docs")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=SCHEMA_URL, title=request.app.title + " - ReDoc")
