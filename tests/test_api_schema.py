"""Schemathesis fuzzes every operation of the OpenAPI schema: no input may cause a 5xx.

Runs in-process on SQLite and the filesystem broker, without workers (jobs
just wait). /readyz is left out: without a worker its documented answer is
503, and it takes no input to fuzz (tests/test_api_requests.py covers it).
Bounded: a fixed number of examples per operation, no deadline per example.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from conftest import make_settings
from worker import db

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    from app.main import create_app

    tmp = tmp_path_factory.mktemp("schema")
    service = make_settings(tmp, database_url=f"sqlite:///{tmp / 'api.db'}", broker_url="filesystem://localhost/",
                            redis_url=None)
    service.ensure_dirs()
    db.upgrade(service.database_url)
    app = create_app(service, run_reaper=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/readyz")
    db.dispose_engines()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_input_makes_the_server_fail(api_schema, mode):
    """Every operation, with schema-valid inputs and with inputs that break the schema."""
    failures: list[str] = []
    fuzzed = 0
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate])
        def fuzz(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:300]}")
                return
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, FailureGroup) as exc:  # collect: one run reports every operation
                failures.append(f"{case.method} {case.formatted_path}: {str(exc)[:500]}")

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing to negate: an operation without parameters or body (e.g. /healthz).
            assert mode == GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed += 1
    assert fuzzed >= (8 if mode == GenerationMode.POSITIVE else 6)
    assert not failures, "\n".join(failures[:20])
