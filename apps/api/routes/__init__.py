"""The HTTP routes, one ``APIRouter`` per concern; ``apps.api.server.create_app`` includes them.

- ``admin``: /healthz, /readyz, /metrics
- ``answers``: /v1/ask (JSON, or Server-Sent Events)
- ``openai``: /v1/chat/completions and /v1/models (OpenAI-compatible)
- ``kb``: /v1/search, /v1/documents, /v1/jobs/{id}, /v1/apps
- ``page``: the chat page at /

``deps`` holds what they share: the app's ``Service`` and the bearer-key + rate-limit check.
"""
