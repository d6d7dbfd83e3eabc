"""The ASGI application: routes, negotiation and the lifetime of the backend and the hub.

Run it with ``gateway serve`` (which also starts an embedded Redis when REDIS_URL is
unset), or under any ASGI server: ``uvicorn --factory gateway.app:create_app``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import problems
from gateway.actions import cancel_job, delete_job, download
from gateway.backend.standalone import StandaloneBackend
from gateway.collection import JobsEndpoint
from gateway.contract import frames, keys
from gateway.contract import script as changes
from gateway.errors import BackendUnavailable, InvalidUpdate, JobAlreadyExists
from gateway.fanout.hub import Hub
from gateway.front import Front
from gateway.observability.logs import AccessLog
from gateway.observability.metrics import Metrics
from gateway.resource import JobEndpoint
from gateway.settings import Settings, SettingsError
from gateway.state import TENANT, AppState


async def create_job(request: Request) -> Response:
    """``POST /v1/jobs``: register a queued job (backend services)."""
    state: AppState = request.app.state.gateway
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise problems.ApiError(400, "request.invalid_parameter", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise problems.ApiError(400, "request.invalid_parameter", "the body must be a JSON object")
    unknown = set(body) - {"job_id", "conversion"}
    if unknown:
        raise problems.ApiError(
            400, "request.invalid_parameter", f"unknown field(s): {', '.join(sorted(unknown))}"
        )
    job_id = body.get("job_id")
    if job_id is None:
        job_id = changes.new_job_id(int(time.time() * 1000))
    elif not isinstance(job_id, str) or not keys.valid_job_id(job_id):
        raise problems.invalid_job_id(str(job_id))
    conversion = body.get("conversion")
    if conversion is not None and not isinstance(conversion, dict):
        raise problems.ApiError(400, "request.invalid_parameter", "conversion must be an object")
    try:
        change = await state.backend.change(
            "create",
            job_id,
            {"conversion": conversion or {}},
            tenant=TENANT,
            retention_seconds=state.settings.retention_seconds,
            output_ttl_seconds=state.settings.output_ttl_seconds,
        )
    except JobAlreadyExists:
        raise problems.ApiError(
            409, "jobs.already_exists", f"job {job_id!r} already exists"
        ) from None
    except InvalidUpdate as exc:
        raise problems.ApiError(400, "request.invalid_parameter", str(exc)) from None
    return JSONResponse(
        change.data,
        status_code=201,
        headers={"Location": f"/v1/jobs/{job_id}", "ETag": f'"{change.data["version"]}"'},
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    if state.backend.listening and await state.backend.ping():
        return JSONResponse({"status": "ready"})
    raise problems.backend_unavailable()


async def metrics_endpoint(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, problems.ApiError)
    return exc.response()


async def _backend_unavailable(request: Request, exc: Exception) -> Response:
    return problems.backend_unavailable().response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "request.not_found", 405: "request.method_not_allowed"}.get(
        exc.status_code, "request.invalid"
    )
    return problems.error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return problems.error_response(500, "internal", "an unexpected error; it has been logged")


@contextmanager
def _streams_end_on_exit_signal(hub: Hub, retry_ms: int) -> Any:
    """On SIGTERM/SIGINT, end every open stream with a ``retry:`` (DESIGN.md section 5).

    An ASGI server waits for open responses before it runs the lifespan shutdown, so the
    streams must end when the signal arrives. The server's own handler still runs after
    ours; jitter spreads the clients' reconnects over [retry, 2 * retry] milliseconds.
    """
    loop = asyncio.get_running_loop()

    def end_streams() -> None:
        hub.finish_all(lambda: frames.retry(random.randint(retry_ms, 2 * retry_ms)))

    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        # A signal handler may run between any two bytecodes: only schedule the work.
        loop.call_soon_threadsafe(end_streams)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
            # uvicorn records the signal to re-raise it once it has stopped, so that the
            # process dies of it; a stop that went well should exit 0 (issue 4), so the
            # record goes. (`gateway serve` does the same by other means.)
            captured = getattr(getattr(chained, "__self__", None), "_captured_signals", None)
            if isinstance(captured, list) and signum in captured:
                captured.remove(signum)

    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[int(sig)] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (an embedding server): nothing to chain
        pass
    try:
        yield
    finally:
        for signum, chained in previous.items():
            signal.signal(signum, chained)


# Young-generation collections every 50,000 net allocations instead of 700. Each open
# stream leaves a handful of long-lived objects (its coroutine frames, watcher, dicts);
# with the default thresholds the collector kept re-scanning all of them, and at a few
# thousand streams it took a third of the CPU of accepting new ones (bench/profiles/idle.txt).
_GC_THRESHOLDS = (50_000, 50, 100)


def _tune_gc() -> None:
    """Move what start-up built (modules, settings, the hub) out of the collector's way."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def create_app(settings: Settings | None = None) -> AccessLog:
    if settings is None:
        settings = Settings.from_env()
    if settings.redis_url is None:
        raise SettingsError(
            "REDIS_URL is not set: point it at Redis/Valkey 7+, or run `gateway serve`, "
            "which starts an embedded server when REDIS_URL is unset"
        )
    redis_url = settings.redis_url
    state = AppState(settings)

    metrics = Metrics(lambda: {
        "gateway_open_streams": {k: float(v) for k, v in state.hub.open_streams.items()},
        "gateway_pubsub_channels": {"": float(state.hub.channel_count)},
        "gateway_asyncio_tasks": {"": float(len(asyncio.all_tasks()))},
    })
    state.metrics = metrics

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            StandaloneBackend.connected(
                redis_url,
                timeout=settings.redis_timeout_seconds,
                max_connections=settings.redis_connections,
                subscribe_timeout=settings.subscribe_timeout_seconds,
                probe_seconds=settings.probe_seconds,
            ) as backend,
            Hub.running(
                backend,
                heartbeat_seconds=settings.heartbeat_seconds,
                subscribe_timeout_seconds=settings.subscribe_timeout_seconds,
                send_timeout_seconds=settings.send_timeout_seconds,
                on_fanout=metrics.fanout_seconds.observe,
            ) as hub,
        ):
            state.backend, state.hub = backend, hub
            _tune_gc()
            with _streams_end_on_exit_signal(hub, settings.retry_ms):
                yield

    job, jobs = JobEndpoint(state), JobsEndpoint(state)
    routes = [
        # Starlette takes the first route that matches path and method: POST creates,
        # every other method goes to the collection endpoint (GET, or a 405).
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route("/v1/jobs", jobs),
        Route("/v1/jobs/{job_id:str}", delete_job, methods=["DELETE"]),
        Route("/v1/jobs/{job_id:str}", job),
        Route("/v1/jobs/{job_id:str}/cancel", cancel_job, methods=["POST"]),
        Route("/v1/jobs/{job_id:str}/download", download, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    handlers: dict[Any, Callable[..., Any]] = {
        problems.ApiError: _api_error,
        BackendUnavailable: _backend_unavailable,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.gateway = state
    # The access log sees every request; event streams then bypass Starlette (gateway.front).
    front = Front(app, job=job, jobs=jobs)
    return AccessLog(front, direct=front.serves)
