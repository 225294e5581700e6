"""Schemathesis tests every operation of the OpenAPI schema with all of its checks.

Not only "no 5xx": every built-in check is on (status codes, content types,
headers and bodies as documented; schema-valid data accepted and invalid
data refused; 405 with a true Allow header for undeclared methods; auth
enforced where it is declared; missing headers refused; resources readable
after creation and gone after deletion), against the generation API and the
survey API, with a real researcher key so the survey operations are tested
past their 401.

Runs in-process on SQLite and the filesystem broker, without workers (jobs
just wait; an event stream ends after a second). /readyz is left out:
without a worker its documented answer is 503, and it takes no input to
fuzz (tests/app/test_api_requests.py covers it). Bounded: a fixed number of
examples per operation, no deadline per example, a fixed seed.
"""
from __future__ import annotations

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.engine import Status, events, from_schema

from conftest import make_settings
from worker import db

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# positive_data_acceptance expects a 2xx (or 401/403/404/409/429) for every schema-valid
# request. Three operations also check their input against this server's state, which no
# static schema can say: the presets it has and their classes, methods and limits (a
# label out of range, an unknown class name, "guidance": "robust" on a preset without a
# robust classifier, more steps than RGUIDE_MAX_STEPS), and an opaque cursor that only
# the server issues. They answer 422 naming the field, as documented; schemathesis'
# documented remedy is to list that status as expected for those operations only.
# A study's caps can only be raised (PATCH /v1/surveys/{study_id}: a value below the
# study's current cap is a 422 naming it), which no static schema can say either.
# POST /v1/analyses likewise: which fields apply depends on its kind, and its labels,
# classifiers, arms, timesteps and uploaded PNGs are checked against the preset.
# POST /v1/evaluations too: its methods, samplers and steps are the preset's, its shard_size a multiple of
# its feature_batch, and its size (images, shards) bounded by the server.
# POST /v1/classifications: its PNG is checked against the preset's size, its schedule against its classes.
# POST /v1/robustness-reports: its preset must record held-out data and the classifiers it names, n fit that data,
# and its schedule the preset's classes.
# Every other check, and every other operation, keeps the defaults.
SEMANTIC_422 = ["POST /v1/generations", "POST /v1/surveys", "GET /v1/generations", "PATCH /v1/surveys/{study_id}",
                "POST /v1/analyses", "POST /v1/evaluations", "POST /v1/classifications", "POST /v1/robustness-reports"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "422"]
# negative_data_rejection: schemathesis' defaults plus 413. A schema-violating body can be large (long `arms` or
# `labels` arrays of a survey), and the body-size limit refuses it before validation does: a rejection, as asked.
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]


def _config(plaintext: str, max_examples: int, seed: int = 20261201) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": seed,
        # No .schemathesis/ cache of earlier runs: each run is the same, and writes nothing in the checkout.
        "cache": {"enabled": False},
        "headers": {"Authorization": f"Bearer {plaintext}"},
        "generation": {"max-examples": max_examples},
        # At most a few events from a stream that would otherwise wait for a worker.
        "max-stream-events": 5,
        "checks": {"negative_data_rejection": {"expected-statuses": REJECTED}},
        "operations": [{"include-name": name, "checks": {"positive_data_acceptance": {
            "expected-statuses": ACCEPTED}}} for name in SEMANTIC_422],
    })


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from app.keys import create_key
    from app.main import create_app

    tmp = tmp_path_factory.mktemp("schema")
    settings_ = make_settings(tmp, database_url=f"sqlite:///{tmp / 'api.db'}", broker_url="filesystem://localhost/",
                              redis_url=None)
    settings_.ensure_dirs()
    db.upgrade(settings_.database_url)
    app = create_app(settings_, run_reaper=False)
    app.state.sse_max_seconds = 1.0  # no worker: a stream would wait its 600 s for progress
    with app.state.sessions() as session:
        _, plaintext = create_key(session, "schemathesis")
        session.commit()
    yield app, plaintext
    db.dispose_engines()


def _schema(service, max_examples: int):
    app, plaintext = service
    return schemathesis.openapi.from_asgi("/openapi.json", app,
                                          config=_config(plaintext, max_examples)).exclude(path="/readyz")


@pytest.fixture(scope="module")
def api_schema(service):
    return _schema(service, 40)


def test_the_document_says_what_the_edge_answers(service, tmp_path):
    """The answers no route declares itself, documented on every operation they can come from."""
    from app.main import create_app

    doc = service[0].openapi()
    paths = doc["paths"]
    for path, item in paths.items():
        for method, op in item.items():
            responses = op["responses"]
            assert "400" in responses, (method, path)  # EdgeGuard's URL check, on every route
            if "requestBody" in op:
                assert {"413", "415", "422"} <= set(responses), (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")) and code not in ("422", "503"):
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)
            for parameter in op.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"].endswith("_id"):
                    assert parameter["schema"]["pattern"] == "^[0-9a-f]{32}$"
    # One event of the stream, as an EventSource reads it; not "a JSON string".
    stream = paths["/v1/generations/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    assert stream["text/event-stream"]["schema"]["properties"]["event"]["enum"] == ["progress", "done"]
    # A key is optional for generation here (no RGUIDE_REQUIRE_KEY_FOR_GENERATION), required for surveys.
    assert {} in paths["/v1/generations"]["post"]["security"]
    assert {} in paths["/v1/generations/{job_id}"]["get"]["security"]
    for path, item in paths.items():
        if path.startswith("/v1/surveys"):
            for op in item.values():
                assert op["security"] and {} not in op["security"], path
    locked = create_app(make_settings(tmp_path, generation_requires_key=True, redis_url=None,
                                      database_url=f"sqlite:///{tmp_path / 'locked.db'}"), run_reaper=False)
    assert {} not in locked.openapi()["paths"]["/v1/generations"]["post"]["security"]


def test_405_names_every_method_of_the_path(service):
    """GET and POST /v1/surveys are two routes: Starlette's own 405 named only the first one's method."""
    from fastapi.testclient import TestClient

    client = TestClient(service[0])
    for method, url, allowed in [("OPTIONS", "/v1/surveys", "GET, POST"), ("DELETE", "/v1/generations", "GET, POST"),
                                 ("PUT", "/v1/generations/0123456789abcdef0123456789abcdef", "GET"),
                                 ("DELETE", "/v1/surveys/0123456789abcdef0123456789abcdef/close", "POST")]:
        r = client.request(method, url)
        assert r.status_code == 405, (method, url)
        assert r.headers["allow"] == allowed, (method, url)
        assert r.headers["content-type"] == "application/problem+json"
        assert allowed in r.json()["detail"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_input_makes_the_server_fail(api_schema, service, mode):
    """Every operation, with schema-valid inputs and with inputs that break the schema, under every check."""
    auth = {"Authorization": f"Bearer {service[1]}"}
    failures: list[str] = []
    fuzzed = 0
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    assert any(op.path.startswith("/v1/surveys") for op in operations)

    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate])
        def fuzz(case):
            response = case.call(headers=auth)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:300]}")
                return
            try:
                case.validate_response(response, headers=auth)  # no `checks`: every enabled check, i.e. all
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


def test_every_phase_with_every_check(service):
    """What ``schemathesis run`` does: examples, coverage (undeclared methods, missing headers,
    boundary values), fuzzing and stateful sequences (resources followed through their Location),
    every check on; no failure at all, and the survey operations answered past their 401."""
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    schema = _schema(service, 15)
    config = schema.config.checks_config_for()
    assert all(config.get_by_name(name=check.__name__).enabled for check in CHECKS.get_all())

    failures: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    errors: list[str] = []
    statuses: dict[str, set[int]] = collections.defaultdict(set)
    finished = None
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        case = event.recorder.cases[case_id].value
                        failure = check.failure_info.failure
                        failures[(check.name, event.recorder.label or "")].add(
                            f"{failure.title}: {str(failure.message)[:300]} <- {case.method} "
                            f"{case.formatted_path} query={str(case.query)[:100]} body={str(case.body)[:150]}")
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    statuses[f"{interaction.request.method} {interaction.request.uri.split('?')[0]}"].add(
                        interaction.response.status_code)
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "value", None) or getattr(event, "exception", None))[:500])
        elif isinstance(event, events.EngineFinished):
            finished = event
    assert finished is not None and not finished.failures, finished and finished.failures
    report = [f"{name} on {label}:\n    " + "\n    ".join(sorted(found)[:3])
              for (name, label), found in sorted(failures.items())]
    assert not report and not errors, "\n".join(report + errors)
    survey_ok = {url for url, codes in statuses.items() if "/v1/surveys" in url and any(200 <= c < 300 for c in codes)}
    assert survey_ok, "the researcher key opened no survey operation"
