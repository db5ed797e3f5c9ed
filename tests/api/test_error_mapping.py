"""How errors raised below the API become HTTP statuses (apps/api/errors.py::to_api_error)."""

from __future__ import annotations

from apps.api.errors import to_api_error
from core.errors import InputError, ModelError
from hybrid.generation.remote import BackendDeadline, BackendHTTPError


def test_a_remote_backend_deadline_is_a_504_not_a_500():
    err = to_api_error(BackendDeadline("no answer from http://127.0.0.1:9/v1 within the 30s deadline"))
    assert (err.status, err.kind) == (504, "timeout")
    assert err.message == "no answer from http://127.0.0.1:9/v1 within the 30s deadline"


def test_other_backend_and_input_errors_keep_their_statuses():
    assert to_api_error(BackendHTTPError(500, "the server failed (500)")).status == 500
    assert to_api_error(ModelError("weights missing")).status == 500
    assert to_api_error(InputError("k must be > 0, got 0")).status == 422
