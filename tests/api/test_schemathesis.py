"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis): valid and invalid
bodies, queries and paths, with a valid key. The contract: never a 5xx, and every response is
documented in the schema. Runs in-process against the fake backend (fast); a smaller run against
the real pipeline follows."""

from __future__ import annotations

import os
import tempfile

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance  # noqa: E402

from tests.api.conftest import AUTH, fake_backend, make_settings  # noqa: E402

EXAMPLES = int(os.environ.get("HYBRID_FUZZ_EXAMPLES", "150"))
CALLS = {"fake": 0, "real": 0}


def _fake_app():
    from apps.api.server import create_app

    b = fake_backend()
    b.load()  # the ASGI transport does not run the lifespan; load here so /v1 routes answer
    return create_app(make_settings(upload_dir=tempfile.mkdtemp(prefix="fuzz-uploads-")), b)


schema = schemathesis.openapi.from_asgi("/openapi.json", _fake_app(), headers=AUTH)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_fake_backend(case):
    CALLS["fake"] += 1
    case.call_and_validate(headers=AUTH, checks=[not_a_server_error, status_code_conformance,
                                                 content_type_conformance])


@pytest.fixture(scope="module")
def real_schema(tiny_apps, tmp_path_factory):
    """The same schema served by the real pipeline (real KnowledgeBase, router, strategies; hash
    embedder and scripted generator). Uploads are left to the fake run: each one starts a real
    ingest job, and hundreds of those would only measure the connectors."""
    from apps.api.backend import RealBackend
    from apps.api.server import create_app

    b = RealBackend(tiny_apps)
    b.load()
    app = create_app(make_settings(upload_dir=str(tmp_path_factory.mktemp("fuzz-real"))), b)
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH).exclude(path="/v1/documents")


def test_no_server_errors_real_backend(real_schema):
    from hypothesis import given

    ops = [r.ok() for r in real_schema.get_all_operations()]
    assert len(ops) >= 9
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=max(10, EXAMPLES // 5), deadline=None, suppress_health_check=list(HealthCheck))
        def run(case):
            CALLS["real"] += 1
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error, status_code_conformance,
                                                         content_type_conformance])

        run()


def test_zz_at_least_1000_generated_cases():
    if CALLS["fake"] == 0:
        pytest.skip("run the whole module to count the generated cases")
    print(f"schemathesis: {CALLS['fake']} generated cases (fake backend), {CALLS['real']} (real pipeline), "
          "no server error")
    assert CALLS["fake"] >= 1000, f"only {CALLS['fake']} generated cases ran"
