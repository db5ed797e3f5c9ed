"""The HTTP service: FastAPI routes over a ``Backend``, with auth, caps, back-pressure and metrics.

::

    from apps.api.server import create_app
    from apps.api.backend import RealBackend
    from apps.api.settings import ServiceSettings
    app = create_app(ServiceSettings(api_keys=["s3cret-key"]), RealBackend(["apps/legal"]))
    # uvicorn.run(app) -- or simply: hybrid serve --app apps/legal

``create_app`` only assembles: the per-server state and work live in ``apps.api.service``, the error
model in ``apps.api.errors`` (the only place errors become HTTP; every error body is
``{"error": {"message", "type", "code"}}``, what OpenAI clients expect), and the routes in
``apps.api.routes``, one router per concern.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from apps.api.backend import Backend
from apps.api.errors import install_error_handlers
from apps.api.limits import BodyLimitMiddleware, ShedMiddleware
from apps.api.metrics import MetricsMiddleware
from apps.api.routes import admin, answers, docs, kb, openai, page
from apps.api.routes.page import STATIC
from apps.api.service import Service
from apps.api.settings import ServiceSettings

__all__ = ["STATIC", "Service", "create_app"]

DESCRIPTION = (
    "Answers questions with a domain app (router -> few-shot / RAG / tuned / tuned+RAG), "
    "OpenAI-compatible chat completions, raw knowledge-base search and document upload. "
    "Every route except /healthz and /readyz (this schema and /docs included) needs "
    "`Authorization: Bearer <key>` when keys are configured. The chat page at / is a static shell; it asks for the key.")


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Start the worker pools, load the backend in the background (/readyz says when it is done)."""
    svc: Service = app.state.service
    svc.start()
    app.state.load_task = asyncio.get_running_loop().run_in_executor(None, svc.load)
    yield
    svc.stop()


def create_app(settings: ServiceSettings, backend: Backend) -> FastAPI:
    """The FastAPI app for ``backend`` (load starts in the background when the server starts)."""
    svc = Service(settings, backend)
    # FastAPI's own schema and docs routes take no dependencies; ``routes.docs`` serves them authed.
    app = FastAPI(title="hybrid Q&A API", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.service = svc
    # the last added runs first: metrics, then the queue-full 429 from the headers alone, then body caps
    app.add_middleware(BodyLimitMiddleware, json_limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    app.add_middleware(ShedMiddleware, service=svc)
    app.add_middleware(MetricsMiddleware, service=svc)
    install_error_handlers(app)
    for module in (admin, answers, openai, kb, page, docs):  # this order is the order of the OpenAPI paths
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
