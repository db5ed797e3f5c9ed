"""The Q&A service: ``hybrid serve --app apps/legal`` (FastAPI + uvicorn) and the chat page at ``/``.

``apps.api.server.create_app(settings, backend)`` builds the ASGI app from ``service`` (per-server
state and the work behind the routes), ``errors`` (the error model), ``routes`` (one router per
concern) and ``streaming`` (the token loop both streaming routes share). ``apps.api.backend`` holds
the ``Backend`` protocol with the real implementation (``hybrid.pipeline``) and a fast fake for
tests; ``apps.api.cli`` is the ``hybrid serve`` command, registered through an entry point.
"""
