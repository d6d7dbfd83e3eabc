"""Structured access logs: JSON lines, request ids, secrets redacted."""

from __future__ import annotations

import json
import time

import httpx

from gateway.observability.access import redact_query
from gateway.worker import SyncWorker


def test_redaction_of_query_parameters() -> None:
    """Issue 10, item 17: only the API's own parameters are written, and only with values
    of their own shape; everything else is REDACTED (an allow-list, not a deny-list)."""
    assert redact_query("api_key=s3cret&x=1&job_id=j&X-Amz-Signature=abc") == (
        "REDACTED=REDACTED&REDACTED=REDACTED&job_id=j&REDACTED=REDACTED")
    assert redact_query("job_id=a&job_id=b&status=running&limit=10&cursor=42") == (
        "job_id=a&job_id=b&status=running&limit=10&cursor=42")
    assert redact_query("last_event_id=k3x9q2-17") == "last_event_id=k3x9q2-17"
    # Names a deny-list missed, pairs joined by ';', secrets in an allowed name's value.
    for query in ("jwt=s3cret", "session=s3cret", "code=s3cret", "pw=s3cret",
                  "bearer=s3cret", "job_id=a;token=s3cret", "status=x%20s3cret",
                  "%74oken=s3cret", "s3cret", "job_id=" + "a" * 200 + "s3cret"):
        assert "s3cret" not in redact_query(query), query
    assert redact_query("") == ""


def test_routes_outside_the_stream_path_keep_their_request_id(gateway) -> None:
    """Accept: text/event-stream on a route that has no stream is an ordinary request."""
    for method, path in (("HEAD", "/healthz"), ("GET", "/healthz"), ("GET", "/v1/jobs/a/b")):
        response = httpx.request(method, f"{gateway.url}{path}",
                                 headers={"Accept": "text/event-stream", "X-Request-ID": "rq-1"})
        assert response.headers.get_list("x-request-id") == ["rq-1"], (method, path)


def _access_lines(gateway) -> list[dict]:
    lines = []
    for line in gateway.output().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "gateway.access" and entry["path"] != "/readyz":
                lines.append(entry)
    return lines


def test_access_log_lines(gateway, redis_url: str) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("lg")
        worker.cancel("lg")
    response = httpx.get(f"{gateway.url}/v1/jobs/lg?api_key=hunter2",
                         headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    stream = httpx.get(f"{gateway.url}/v1/jobs/lg", headers={"Accept": "text/event-stream"})
    generated = stream.headers["x-request-id"]
    httpx.get(f"{gateway.url}/v1/jobs/none", headers={"Accept": "text/event-stream"})
    deadline = time.monotonic() + 5
    while len(lines := _access_lines(gateway)) < 3:
        assert time.monotonic() < deadline, gateway.output()
        time.sleep(0.05)
    first, second, third = lines[:3]
    assert (first["request_id"], first["status"], first["stream"]) == ("req-42", 200, False)
    assert first["query"] == "REDACTED=REDACTED"  # not a parameter of the API
    assert "hunter2" not in gateway.output()
    assert (second["request_id"], second["status"], second["stream"]) == (generated, 200, True)
    assert (third["status"], third["stream"]) == (404, True)
    assert all(isinstance(entry["duration_ms"], float) for entry in lines)


def test_a_refused_stream_request_is_logged_as_a_stream(gateway) -> None:
    """The access line says a stream was asked for, whatever became of the request."""
    for path in ("/v1/jobs/bad!id", "/v1/jobs?job_id=bad!"):
        response = httpx.get(f"{gateway.url}{path}", headers={"Accept": "text/event-stream"})
        assert response.status_code == 400
    deadline = time.monotonic() + 5
    while len(lines := _access_lines(gateway)) < 2:
        assert time.monotonic() < deadline, gateway.output()
        time.sleep(0.05)
    assert [(line["status"], line["stream"]) for line in lines] == [(400, True), (400, True)]


def test_the_access_line_is_the_same_around_logging_and_through_it() -> None:
    """The access log skips logging's machinery while logging is as configure() left it
    (AccessSink), and goes through it otherwise: the same line either way, key for key
    and in the same order, in order with every other record."""
    import io
    import logging
    import re
    from types import SimpleNamespace

    from gateway.observability import access, logs

    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = (logging.root.handlers[:], logging.root.level, logging._srcfile,
             [(logging.getLogger(n).handlers[:], logging.getLogger(n).propagate,
               logging.getLogger(n).disabled) for n in names])
    records: list[str] = []
    make_record = access.access_log.makeRecord

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        records.append(args[0])
        return make_record(*args, **kwargs)

    try:
        logs.configure("info")
        handler = logging.root.handlers[0]
        assert isinstance(handler, logs.BatchedStreamHandler)
        handler.stream = io.StringIO()
        access.access_log.makeRecord = spy  # type: ignore[method-assign]
        context = SimpleNamespace(request_id="rq-7", status=200, stream=True, principal=None,
                                  started=time.perf_counter())
        scope = {"method": "GET", "path": "/v1/jobs/j", "query_string": b"token=s3cret",
                 "client": ("10.0.0.1", 5)}
        access.write(context, scope)  # type: ignore[arg-type]
        assert records == []  # around logging
        logging.getLogger("gateway.other").warning("between")
        access.access_log.addFilter(lambda record: True)  # not as configure() left it
        access.write(context, scope)  # type: ignore[arg-type]
        assert records == ["gateway.access"]  # through logging
        handler.flush()
        lines = handler.stream.getvalue().splitlines()
        assert [json.loads(line)["msg"] for line in lines] == [
            "GET /v1/jobs/j 200", "between", "GET /v1/jobs/j 200"]
        stamp = re.compile(r'"ts": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"')
        took = re.compile(r'"duration_ms": [0-9.]+')
        fast, slow = (took.sub("D", stamp.sub("T", line)) for line in (lines[0], lines[2]))
        assert fast == slow == (
            '{T, "level": "info", "logger": "gateway.access", "msg": "GET /v1/jobs/j 200", '
            '"request_id": "rq-7", "method": "GET", "path": "/v1/jobs/j", '
            '"query": "REDACTED=REDACTED", "status": 200, "stream": true, "tenant": null, '
            'D, "client": "10.0.0.1"}')
    finally:
        access.access_log.__dict__.pop("makeRecord", None)
        access.access_log.filters.clear()
        access.use_sink(None)
        root_handlers, level, srcfile, per_logger = saved
        logging.root.handlers[:] = root_handlers
        logging.root.setLevel(level)
        logging._srcfile = srcfile
        for name, (handlers, propagate, disabled) in zip(names, per_logger, strict=True):
            logger = logging.getLogger(name)
            logger.handlers[:], logger.propagate, logger.disabled = handlers, propagate, disabled
