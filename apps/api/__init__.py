"""The Q&A service: ``hybrid serve --app apps/legal`` (FastAPI + uvicorn) and the chat page at ``/``.

``apps.api.server.create_app(settings, backend)`` builds the ASGI app; ``apps.api.backend`` holds the
``Backend`` protocol with the real implementation (``hybrid.pipeline``) and a fast fake for tests.
"""
