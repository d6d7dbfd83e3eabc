"""The Python client: follow one job, many jobs or a tenant; wait for a job to finish.

Built on httpx and httpx-sse. It reconnects by itself (the server's ``retry:`` first,
then exponential backoff with jitter) and resumes with ``Last-Event-ID``, so a caller
sees every job reach its current state across gateway restarts; 204 ends a follow, and
401/403/404 raise instead of being retried forever; a gateway that was never reached
raises ``Unreachable`` after a few attempts instead of being waited for in silence.

``AsyncClient`` and ``Client`` have the same methods; the decisions they share (what to
send, what a status means, which events to pass on) live in ``_Follow``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from gateway.contract.events import EventId
from gateway.contract.record import TERMINAL
from gateway.errors import GatewayError

# A stream that sends nothing for this long is dead (heartbeats come every 15 s).
STREAM_READ_TIMEOUT = 45.0


# -- snapshots -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float
    phase: str | None
    # docs/api.md, Time left: when 100 % comes at the rate so far (RFC 3339), and that
    # rate in percent per second; None before two reports of a rising percent, and once
    # the job ended.
    eta_at: str | None = None
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Output:
    file_name: str | None
    content_type: str | None
    file_size_bytes: int | None
    file_count: int | None
    file_url: str | None
    expires_at: str | None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Job:
    """A job snapshot (docs/api.md, The job snapshot)."""

    job_id: str
    status: str
    progress: Progress
    conversion: dict[str, Any]
    output: Output | None
    metrics: dict[str, float]
    error: ErrorInfo | None
    cancel_requested: bool
    created_at: str
    updated_at: str
    expires_at: str | None
    version: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        progress = data.get("progress") or {}
        output, error = data.get("output"), data.get("error")
        return cls(
            job_id=data["job_id"],
            status=data["status"],
            progress=Progress(float(progress.get("percent", 0.0)), progress.get("phase"),
                              progress.get("eta_at"),
                              None if progress.get("rate") is None else float(progress["rate"])),
            conversion=dict(data.get("conversion") or {}),
            output=Output(**{k: output.get(k) for k in Output.__slots__}) if output else None,
            metrics=dict(data.get("metrics") or {}),
            error=ErrorInfo(error.get("code", ""), error.get("message", "")) if error else None,
            cancel_requested=bool(data.get("cancel_requested")),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            expires_at=data.get("expires_at"),
            version=int(data["version"]),
        )


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a stream: ``snapshot``, ``progress``, ``status``, ``deleted``,
    ``unknown`` (named jobs that do not exist: ``missing``) or ``reset`` (a tenant-wide
    stream with too many jobs to send: reload the list, the stream goes on from here)."""

    event: str
    id: str | None
    job_id: str | None = None
    job: Job | None = None
    missing: list[str] = field(default_factory=list)


# -- errors ------------------------------------------------------------------------------


class ClientError(GatewayError):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class NotFound(ClientError):
    pass


class Unauthorized(ClientError):
    pass


class JobDidNotComplete(GatewayError):
    """``wait(..., raise_on_failure=True)`` saw the job end ``failed`` or ``canceled``."""

    def __init__(self, job: Job) -> None:
        reason = f": {job.error.code} {job.error.message}" if job.error else ""
        super().__init__(f"job {job.job_id!r} ended {job.status}{reason}")
        self.job = job


class WaitTimeout(GatewayError, TimeoutError):
    pass


class Unreachable(GatewayError, ConnectionError):
    """No attempt of a follow ever reached the gateway (nothing listens there, a wrong
    URL, DNS): raised after ``connect_attempts`` tries. Once a follow has reached the
    gateway, a broken connection is a pause, retried without end."""


def _raise_for(response: httpx.Response, body: bytes) -> None:
    try:
        error = json.loads(body)
        code, detail = str(error.get("error")), str(error.get("detail"))
    except (ValueError, AttributeError):
        code, detail = "http.error", body[:200].decode(errors="replace")
    kind = {404: NotFound, 401: Unauthorized, 403: Unauthorized}.get(response.status_code,
                                                                   ClientError)
    raise kind(response.status_code, code, detail)


class _Retry(Exception):
    """The stream broke or the server is busy: wait ``delay`` seconds and reconnect."""

    def __init__(self, delay: float | None = None) -> None:
        self.delay = delay


# -- what both clients share -------------------------------------------------------------


class _Follow:
    """The state of one logical follow across reconnects."""

    def __init__(self, path: str, params: list[tuple[str, str]], *, single: bool,
                 max_backoff: float, connect_attempts: int) -> None:
        self.path, self.params, self.single = path, params, single
        self.connect_attempts = connect_attempts
        self.reached = False
        self.last_id: str | None = None
        self.retry_ms = 3000
        self.failures = 0
        self.max_backoff = max_backoff
        self.versions: dict[str, int] = {}
        self.epoch: str | None = None
        self.done = False

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def check(self, response: httpx.Response, body: bytes) -> bool:
        """True when the stream is open; False when it is over (204); raises otherwise."""
        if not self.reached:
            self.reached = True
            self.failures = 0  # the backoff of a gateway that answers starts from retry:
        if response.status_code == 200:
            self.failures = 0
            return True
        if response.status_code == 204:
            self.done = True
            return False
        if response.status_code in (429, 502, 503, 504):
            retry_after = response.headers.get("retry-after", "")
            raise _Retry(float(retry_after) if retry_after.isdigit() else None)
        _raise_for(response, body)
        return False

    def broken(self, base_url: object, exc: Exception) -> float:
        """The delay before the next attempt after a failed connection; Unreachable when
        no attempt ever reached the gateway and the attempts are spent."""
        if self.reached:
            return self.delay()
        self.failures += 1
        if self.failures >= self.connect_attempts:
            raise Unreachable(f"cannot reach the gateway at {base_url} "
                              f"({self.connect_attempts} attempts): {exc}") from exc
        return float(min(0.5 * 2 ** (self.failures - 1), self.max_backoff))  # 0.5, 1, 2, 4 s

    def delay(self, hint: float | None = None) -> float:
        """How long to wait before the next attempt: retry: first, then backoff."""
        self.failures += 1
        base = self.retry_ms / 1000 * (2 ** (self.failures - 1))
        if hint is not None:
            base = max(base, hint)
        return float(min(base, self.max_backoff) * random.uniform(0.8, 1.2))

    def accept(self, sse: ServerSentEvent) -> JobEvent | None:
        if sse.retry is not None:
            self.retry_ms = int(sse.retry)
        if not sse.data:
            return None  # a block with only `retry:` or an id
        if sse.id:
            parsed = EventId.parse(sse.id)
            if parsed is not None and parsed.epoch != self.epoch:
                # Redis lost its data: versions start again.
                self.epoch = parsed.epoch
                self.versions.clear()
            self.last_id = sse.id
        data = json.loads(sse.data)
        if sse.event == "unknown":
            return JobEvent("unknown", None, missing=list(data.get("job_ids", [])))
        if sse.event == "reset":
            # Too many jobs to send at once: the caller reloads the list (the JSON page);
            # the stream goes on from here.
            self.versions.clear()
            return JobEvent("reset", sse.id)
        if sse.event == "deleted":
            self.versions.pop(data["job_id"], None)
            if self.single:
                self.done = True
            return JobEvent("deleted", sse.id, data["job_id"])
        job = Job.from_dict(data)
        if job.version <= self.versions.get(job.job_id, 0):
            return None  # already seen (a resume may send a job again)
        self.versions[job.job_id] = job.version
        if self.single and job.terminal:
            self.done = True
        return JobEvent(sse.event or "message", sse.id, job.job_id, job)


def _many_params(job_ids: list[str] | None) -> list[tuple[str, str]]:
    return [("job_id", job_id) for job_id in job_ids or []]


def _timeout(connect: float) -> httpx.Timeout:
    return httpx.Timeout(connect, read=STREAM_READ_TIMEOUT)


# A connection that failed or broke (refused, reset, read timeout, truncated): reconnect.
_BROKEN = (httpx.TransportError,)


def _auth(api_key: str | None) -> dict[str, str]:
    """``api_key``: an API key or a token (docs/api.md, Auth), sent on every request."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# -- asyncio -----------------------------------------------------------------------------


class AsyncClient:
    """``async with AsyncClient("http://gateway:8000") as c: job = await c.wait(id, 60)``."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0,
                 max_backoff: float = 30.0, connect_attempts: int = 5,
                 http: httpx.AsyncClient | None = None) -> None:
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=_timeout(timeout),
                                           headers=_auth(api_key))
        self._max_backoff = max_backoff
        self._attempts = connect_attempts

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, job_id: str) -> Job:
        response = await self._http.get(f"/v1/jobs/{job_id}",
                                        headers={"Accept": "application/json"})
        if response.status_code != 200:
            _raise_for(response, response.content)
        return Job.from_dict(response.json())

    async def follow(self, job_id: str) -> AsyncIterator[Job]:
        """Every snapshot of the job as it changes, ending with its terminal one."""
        follow = _Follow(f"/v1/jobs/{job_id}", [], single=True, max_backoff=self._max_backoff,
                         connect_attempts=self._attempts)
        async for event in self._run(follow):
            if event.job is not None:
                yield event.job

    async def follow_many(self, job_ids: list[str] | None = None) -> AsyncIterator[JobEvent]:
        """Events of the named jobs (or of the whole tenant) on one connection; endless."""
        follow = _Follow("/v1/jobs", _many_params(job_ids), single=False,
                         max_backoff=self._max_backoff,
                         connect_attempts=self._attempts)
        async for event in self._run(follow):
            yield event

    async def wait(
        self,
        job_id: str,
        timeout: float,  # noqa: ASYNC109 (a deadline is this call's point, as in the sync twin)
        *,
        raise_on_failure: bool = False,
    ) -> Job:
        """The job's terminal snapshot; WaitTimeout after ``timeout`` seconds."""
        last: Job | None = None
        with anyio.move_on_after(timeout):
            async for job in self.follow(job_id):
                last = job
            if last is not None:
                if raise_on_failure and last.status != "completed":
                    raise JobDidNotComplete(last)
                return last
        raise WaitTimeout(f"job {job_id!r} did not end within {timeout} s")

    async def _run(self, follow: _Follow) -> AsyncIterator[JobEvent]:
        while not follow.done:
            try:
                async with aconnect_sse(self._http, "GET", follow.path, params=follow.params,
                                        headers=follow.headers()) as source:
                    body = b"" if source.response.status_code == 200 else (
                        await source.response.aread())
                    if not follow.check(source.response, body):
                        return
                    async for sse in source.aiter_sse():
                        event = follow.accept(sse)
                        if event is not None:
                            yield event
                        if follow.done:
                            return
                raise _Retry()  # the server ended the stream without an end: reconnect
            except _Retry as retry:
                await anyio.sleep(follow.delay(retry.delay))
            except _BROKEN as exc:
                await anyio.sleep(follow.broken(self._http.base_url, exc))


# -- blocking ------------------------------------------------------------------------------


class Client:
    """The blocking twin of AsyncClient: ``Client(url).wait(job_id, 60)``."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0,
                 max_backoff: float = 30.0, connect_attempts: int = 5,
                 http: httpx.Client | None = None) -> None:
        self._http = http or httpx.Client(base_url=base_url, timeout=_timeout(timeout),
                                           headers=_auth(api_key))
        self._max_backoff = max_backoff
        self._attempts = connect_attempts

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, job_id: str) -> Job:
        response = self._http.get(f"/v1/jobs/{job_id}", headers={"Accept": "application/json"})
        if response.status_code != 200:
            _raise_for(response, response.content)
        return Job.from_dict(response.json())

    def follow(self, job_id: str, *, deadline: float | None = None) -> Iterator[Job]:
        follow = _Follow(f"/v1/jobs/{job_id}", [], single=True, max_backoff=self._max_backoff,
                         connect_attempts=self._attempts)
        for event in self._run(follow, deadline):
            if event.job is not None:
                yield event.job

    def follow_many(self, job_ids: list[str] | None = None) -> Iterator[JobEvent]:
        follow = _Follow("/v1/jobs", _many_params(job_ids), single=False,
                         max_backoff=self._max_backoff,
                         connect_attempts=self._attempts)
        yield from self._run(follow, None)

    def wait(self, job_id: str, timeout: float, *, raise_on_failure: bool = False) -> Job:
        last: Job | None = None
        for job in self.follow(job_id, deadline=time.monotonic() + timeout):
            last = job
        if last is None or not last.terminal:
            raise WaitTimeout(f"job {job_id!r} did not end within {timeout} s")
        if raise_on_failure and last.status != "completed":
            raise JobDidNotComplete(last)
        return last

    def _run(self, follow: _Follow, deadline: float | None) -> Iterator[JobEvent]:
        def left() -> float:
            return STREAM_READ_TIMEOUT if deadline is None else deadline - time.monotonic()

        while not follow.done and left() > 0:
            try:
                # A blocking read can only be bounded by its timeout: the deadline's.
                timeout = httpx.Timeout(self._http.timeout.connect,
                                        read=min(STREAM_READ_TIMEOUT, max(left(), 0.01)))
                with connect_sse(self._http, "GET", follow.path, params=follow.params,
                                 headers=follow.headers(), timeout=timeout) as source:
                    body = b"" if source.response.status_code == 200 else source.response.read()
                    if not follow.check(source.response, body):
                        return
                    for sse in source.iter_sse():
                        event = follow.accept(sse)
                        if event is not None:
                            yield event
                        if follow.done or left() <= 0:
                            # The deadline counts however the stream goes: a heartbeat
                            # keeps each read short, never the wait.
                            return
                raise _Retry()
            except _Retry as retry:
                time.sleep(min(follow.delay(retry.delay), max(left(), 0)))
            except _BROKEN as exc:
                time.sleep(min(follow.broken(self._http.base_url, exc), max(left(), 0)))
