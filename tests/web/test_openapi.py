"""``/openapi.json`` against the gateway it describes: the document is valid OpenAPI 3.1,
it is what the server serves, and schemathesis finds nothing when it throws generated
valid and invalid requests at a live gateway on a real Redis (docs/api.md)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from gateway.observability.metrics import Metrics
from gateway.settings import Settings
from gateway.web import openapi, problems
from gateway.web.routes import routes
from gateway.web.services import Services

DOCUMENT = openapi.document(routes(Services(Settings(), Metrics(dict))))
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


def test_the_gateway_serves_the_document_and_a_page_that_reads_it(gateway) -> None:
    served = httpx.get(f"{gateway.url}/openapi.json", timeout=5)
    assert served.status_code == 200 and served.json() == DOCUMENT
    page = httpx.get(f"{gateway.url}/docs", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("docs/swagger-ui-bundle.js", "docs/swagger-ui.css"):
        assert f'"{asset}"' in page.text  # relative: served from the package, no CDN
        loaded = httpx.get(f"{gateway.url}/{asset}", timeout=5)
        assert loaded.status_code == 200 and len(loaded.content) > 10_000
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from outside
    missing = httpx.get(f"{gateway.url}/docs/index.html", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "request.not_found"


def test_every_route_and_method_is_described_and_nothing_else() -> None:
    table = routes(Services(Settings(), Metrics(dict)))
    served = {(route.path, method.lower()) for route in table if route.endpoint.described
              for method in route.endpoint.methods if method not in ("HEAD", "OPTIONS")}
    described = {(path, method) for path, item in DOCUMENT["paths"].items()
                 for method in item}
    assert served == described
    # The guard refuses a body over the limit on every URL, before the route's own checks.
    assert all("413" in operation["responses"] for item in DOCUMENT["paths"].values()
               for operation in item.values())
    with pytest.raises(ValueError, match="served and not described"):
        openapi.document([*table[:-1], type(table[0])(
            "/v1/undescribed", table[0].endpoint)])


def test_every_error_code_the_gateway_can_answer_is_in_the_document() -> None:
    made = [problems.invalid_job_id("x"), problems.invalid_parameter("x"),
            problems.too_large(1), problems.headers_too_large(1), problems.head_timeout(1),
            problems.not_found("x"), problems.already_exists("x"),
            problems.not_cancellable("x", "failed"), problems.not_deletable("x", "running"),
            problems.not_ready("x"), problems.expired("x"),
            problems.invalid_credentials("x", given=True), problems.insufficient_scope("x"),
            problems.too_many_streams(1, 1), problems.malformed(), problems.no_route(),
            problems.method_not_allowed("PUT", "GET"), problems.not_acceptable(),
            problems.backend_unavailable(), problems.internal()]
    codes = DOCUMENT["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
    for error in made:
        assert error.code in codes and problems.CODES[error.code][0] == error.status


def _no_long_poll(case) -> None:  # type: ignore[no-untyped-def]
    """A generated ``Prefer: wait=N`` with ``If-None-Match: *`` is a long-poll held for N
    seconds, as documented: too slow for many examples (tests/e2e/test_actions.py has the
    long-poll's own tests)."""
    if case.headers:
        case.headers.pop("Prefer", None)


# Derandomized: the same examples on every run, so that CI never fails on a draw another
# run would not make (random runs of 250 examples an operation find nothing either).
@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_generated_requests_find_nothing(case, gateway) -> None:  # type: ignore[no-untyped-def]
    _no_long_poll(case)
    case.call_and_validate(base_url=gateway.url, timeout=10)


def test_the_links_walk_a_job_through_its_life_and_find_nothing(gateway, r) -> None:  # type: ignore[no-untyped-def]
    """Stateful: create → get → cancel → delete (the document's links), in generated orders
    and with generated data, every answer checked against the document."""
    from hypothesis.stateful import run_state_machine_as_test

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case) -> None:  # type: ignore[no-untyped-def]
            _no_long_poll(case)

        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"base_url": gateway.url, "timeout": 10}

        def teardown(self) -> None:
            # Each run starts from no jobs: hypothesis replays runs, and a job left by the
            # last one would answer differently (409 instead of 201).
            r.flushall()

    run_state_machine_as_test(Workflow, settings=settings(
        max_examples=15, stateful_step_count=6, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))


def _stream_events(path: str, method: str = "get") -> dict[str, dict]:  # type: ignore[type-arg]
    media = DOCUMENT["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]
    return {event["event"]: event["data"] for event in media["x-sse-events"]}


def _check(name: str, data: str, documented: dict[str, dict]) -> None:  # type: ignore[type-arg]
    from jsonschema import Draft202012Validator

    assert name in documented, f"event {name!r} is not in the document"
    validator = Draft202012Validator({**documented[name], "components": DOCUMENT["components"]},
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    validator.validate(json.loads(data))


def test_every_event_a_stream_sends_is_documented_with_its_data(gateway, redis_url) -> None:  # type: ignore[no-untyped-def]
    import threading

    from httpx_sse import connect_sse

    from gateway.worker import SyncWorker

    seen: dict[str, list[tuple[str, str]]] = {"one": [], "many": []}

    def read(key: str, url: str, until: str | None) -> None:
        with httpx.Client(timeout=20) as client, connect_sse(client, "GET", url) as source:
            for sse in source.iter_sse():
                if sse.data:
                    seen[key].append((sse.event, sse.data))
                if sse.event == until:
                    return

    with SyncWorker.from_url(redis_url) as worker:
        worker.create("doc-a", conversion={"source_format": "docx", "target_format": "pdf",
                                           "original_filename": "a.docx",
                                           "source_size_bytes": 1234})
        readers = [
            threading.Thread(target=read, args=("one", f"{gateway.url}/v1/jobs/doc-a", None)),
            threading.Thread(target=read, args=(
                "many", f"{gateway.url}/v1/jobs?job_id=doc-a&job_id=doc-none", "deleted")),
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + 10
        while len(seen["one"]) < 1 or len(seen["many"]) < 2:
            assert time.monotonic() < deadline, seen
            time.sleep(0.02)
        # One change at a time, each seen on both streams before the next: a reader that
        # falls behind may be sent only the newest snapshot (docs/api.md, What a client is
        # promised), and this test wants every kind of event.
        changes = [
            lambda: worker.start("doc-a", phase="Loading"),
            lambda: worker.progress("doc-a", 50, phase="Rendering", metrics={"pages": 3}),
            lambda: worker.complete("doc-a", file_url="https://files.example/a.pdf",
                                    file_name="a.pdf", content_type="application/pdf",
                                    file_size_bytes=99),
            lambda: worker.delete("doc-a"),
        ]
        for n, change in enumerate(changes, start=1):
            change()
            while len(seen["one"]) < min(1 + n, 4) or len(seen["many"]) < 2 + n:
                assert time.monotonic() < deadline + 10 * n, seen
                time.sleep(0.02)
        for reader in readers:
            reader.join(20)
            assert not reader.is_alive()
    one, many = _stream_events("/v1/jobs/{job_id}"), _stream_events("/v1/jobs")
    assert [name for name, _ in seen["one"]] == ["snapshot", "status", "progress", "status"]
    for name, data in seen["one"]:
        _check(name, data, one)
    assert {name for name, _ in seen["many"]} == {"snapshot", "unknown", "status", "progress",
                                                 "deleted"}
    for name, data in seen["many"]:
        _check(name, data, many)
