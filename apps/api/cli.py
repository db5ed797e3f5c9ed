"""``hybrid serve``: the Q&A API and chat page for one or more apps.

    hybrid serve --app apps/legal --app apps/shopping --port 8000
    HYBRID_API_KEYS=change-me-please hybrid serve --app apps/legal --host 0.0.0.0

SIGTERM drains: /readyz turns 503, new work is refused with 503, in-flight answers finish (up to
``--drain-grace`` seconds), then the process exits 0. A second SIGTERM/SIGINT exits at once.

The ``hybrid`` command finds this one through the ``hybrid.commands`` entry point group (declared in
pyproject.toml), so the library under ``hybrid/`` never imports ``apps``.
"""

from __future__ import annotations

import logging

import click

from hybrid.cli.options import app_set_option

log = logging.getLogger("hybrid.serve")


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-a", "--app", "apps", multiple=True, required=True, type=click.Path(exists=True),
              help="App directory (app.yaml + data); repeat to serve several.")
@click.option("-H", "--host", default=None, envvar="HYBRID_API_HOST", show_envvar=True,
              help="Bind address [default 127.0.0.1; only loopback without an API key].")
@click.option("-p", "--port", default=None, type=int, envvar="HYBRID_API_PORT", show_envvar=True,
              help="TCP port [default 8000].")
@click.option("-k", "--api-key", "api_keys", multiple=True,
              help="Bearer key clients must send (repeatable; or env HYBRID_API_KEYS=k1,k2).")
@click.option("--concurrency", type=int, default=None, help="Answers generated at once [default 1].")
@click.option("--queue-size", type=int, default=None, help="Requests that may wait; more get 429 [default 8].")
@click.option("--timeout", "request_timeout", type=float, default=None, help="Per-request deadline, s [default 120].")
@click.option("--drain-grace", type=float, default=None,
              help="Seconds in-flight requests get after SIGTERM [default 30].")
@click.option("--batch-size", "batch_max_size", type=int, default=None,
              help="Answers generated together in one batch on the transformers backend (env "
                   "HYBRID_API_BATCH_MAX_SIZE) [default 1: one at a time]. See docs/serving.md.")
@click.option("--batch-window-ms", "batch_window_ms", type=float, default=None,
              help="How long the first waiting answer waits for others to join its batch, ms [default 15].")
@app_set_option
def serve(apps, host, port, api_keys, concurrency, queue_size, request_timeout, drain_grace, batch_max_size,
          batch_window_ms, overrides) -> None:
    """Serve the apps over HTTP: /v1/ask, /v1/chat/completions (OpenAI), /v1/search, /v1/documents,
    /v1/apps, /healthz, /readyz, /metrics, and the chat page at /."""
    from pydantic import ValidationError

    from apps.api.settings import ServiceSettings
    from core.errors import ConfigError

    given = {"apps": list(apps), "host": host, "port": port, "api_keys": list(api_keys) or None,
             "concurrency": concurrency, "queue_size": queue_size, "request_timeout": request_timeout,
             "drain_grace": drain_grace, "batch_max_size": batch_max_size, "batch_window_ms": batch_window_ms}
    try:
        settings = ServiceSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"serve: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    run(settings, overrides)


def run(settings, overrides=()) -> None:
    """Load the apps and serve them under uvicorn until SIGTERM (drained) or a second signal."""
    import uvicorn

    from apps.api.backend import RealBackend
    from apps.api.runner import DrainingServer
    from apps.api.server import create_app

    # bad app dirs fail here, before any log line; the batching settings come from the same flags/env
    backend = RealBackend(settings.apps, overrides=overrides, batching=settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The CLI may have configured logging already (quieter); the service's own lines stay visible.
    logging.getLogger("hybrid").setLevel(min(logging.getLogger("hybrid").getEffectiveLevel(), logging.INFO))
    if settings.forced_loopback:
        log.warning("no API key configured: binding to 127.0.0.1 instead of %s "
                    "(set HYBRID_API_KEYS or --api-key to serve other hosts)", settings.forced_loopback)
    elif not settings.api_keys:
        log.warning("no API key configured: anyone on this machine can use the service (loopback only)")
    app = create_app(settings, backend)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=5, access_log=False, lifespan="on")
    server = DrainingServer(config, app.state.service, settings.drain_grace)
    log.info("serving %s on http://%s:%d", ", ".join(backend.app_names()), settings.host, settings.port)
    server.run()
