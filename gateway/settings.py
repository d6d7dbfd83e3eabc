"""The one Settings object, built from the environment and checked at start-up.

A bad value stops the process with a message that names the variable (docs/operations.md,
Settings). Every variable, its default and its meaning is listed there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio.connection import parse_url

from gateway.backend import nodes
from gateway.contract.script import Lifetimes

T = TypeVar("T")

_LIFETIMES = Lifetimes()


class SettingsError(ValueError):
    """A variable of the environment has a value the gateway cannot use."""


# Not slots=True: the defaults must stay readable as class attributes (from_env uses them).
@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    # REDIS_URL names a Valkey/Redis Cluster (one node or several, comma-separated).
    redis_cluster: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    heartbeat_seconds: float = 15.0  # docs/api.md, Event streams: comment heartbeats every 15 s
    retry_ms: int = 3000  # the `retry:` field every stream opens with
    redis_timeout_seconds: float = 2.0  # bounds every Redis command of a request
    redis_connections: int = 100  # request connections to Redis; more requests queue
    subscribe_timeout_seconds: float = 5.0  # bounds the wait for a SUBSCRIBE confirmation
    send_timeout_seconds: float = 30.0  # a client that takes no data this long is dropped
    probe_seconds: float = 10.0  # how often the hub checks that its pub/sub still delivers
    # docs/api.md, The job snapshot: the record after the job ended, the output after completion,
    # and a job not ended after its last change (the worker library's defaults too).
    retention_seconds: int = _LIFETIMES.retention_seconds
    output_ttl_seconds: int = _LIFETIMES.output_ttl_seconds
    active_ttl_seconds: int = _LIFETIMES.active_ttl_seconds
    shutdown_grace_seconds: float = 10.0
    log_level: str = "info"
    # The HTTP server (gateway.server): a request's line and headers, the time they may
    # take to arrive, and how long an idle keep-alive connection is kept. The keep-alive
    # outlasts the idle timeout of the usual proxies and load balancers (60 s), so that
    # none of them reuses a connection the gateway is closing.
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024  # a request's body (POST /v1/jobs): 413 past it
    allow_http_downloads: bool = False  # download redirects to http:// URLs (not only https)
    # A tenant-wide stream that would open with more jobs than this (a resume from long
    # ago, or that many jobs not ended) opens with a `reset` event instead.
    stream_open_max_jobs: int = 1000
    header_timeout_seconds: float = 10.0
    keepalive_seconds: int = 75
    # docs/api.md, Auth: serve without a key on a public address (never the default), the
    # secret that signs browser tokens (else one made once in Redis), the browser origins
    # allowed to call the API, and the bounds of streams.
    insecure: bool = False
    token_secret: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_streams_per_tenant: int = 10_000
    max_stream_seconds: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        read = _Reader(os.environ if env is None else env)
        values: dict[str, Any] = {field: read(name, parse, getattr(cls, field))
                                  for field, (name, parse) in _VARIABLES.items()}
        cluster = values["redis_cluster"]
        values["redis_url"] = read("REDIS_URL", _cluster_url if cluster else _redis_url, None)
        if cluster and values["redis_url"] is None:
            raise SettingsError(
                "GATEWAY_REDIS_CLUSTER=true needs REDIS_URL: one or more nodes of the "
                "cluster, comma-separated (the embedded server is a single one)")
        # PORT is what platforms such as Heroku set; GATEWAY_PORT wins when both are.
        values["port"] = read("GATEWAY_PORT", _port, read("PORT", _port, cls.port))
        return cls(**values)

    @property
    def lifetimes(self) -> Lifetimes:
        """For the jobs created through the HTTP API."""
        return Lifetimes(self.retention_seconds, self.output_ttl_seconds,
                         self.active_ttl_seconds)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __call__(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            shown = (redacted(raw) if name == "REDIS_URL" else "REDACTED"
                     if name in _SECRET else raw)
            raise SettingsError(f"{name}={shown!r}: {exc}") from None


def _text(raw: str) -> str:
    return raw


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number greater than 0")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value <= 0:
        raise ValueError("must be a whole number greater than 0")
    return value


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a port number (0-65535)") from None
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number (0-65535)")
    return value


def _redis_url(raw: str) -> str:
    """One server's URL (a comma in it is the password's, say, not a list)."""
    scheme = urlsplit(raw).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    try:
        require_database_0(raw)
    except ValueError as exc:
        if "," in raw:  # most likely a cluster's nodes
            raise ValueError(f"{exc} (for several nodes of a cluster, set "
                             "GATEWAY_REDIS_CLUSTER=true)") from None
        raise
    return raw


def _cluster_url(raw: str) -> str:
    """One node of a cluster or several, comma-separated (a comma in a password is
    written %2C here)."""
    if raw.startswith("unix:"):
        raise ValueError("a cluster is reached over TCP (redis:// or rediss://), not a "
                         "unix socket")
    for number, node in enumerate(nodes.split(raw), start=1):
        if urlsplit(node).scheme not in ("redis", "rediss"):
            raise ValueError(f"node {number} is no redis:// or rediss:// URL")
        require_database_0(node)
    return raw


def require_database_0(url: str) -> None:
    """ValueError unless the Redis URL selects database 0: the gateway's and the workers'."""
    try:
        database = int(parse_url(url).get("db") or 0)  # as redis-py reads it: /03 is 3
    except ValueError as exc:
        raise ValueError(f"cannot be read: {exc}") from None
    if database != 0:
        raise ValueError(
            f"selects database {database}: Redis pub/sub ignores the database, so the "
            "streams of two databases would mix; the gateway and its workers use database "
            "0 (a separate Redis, or a tenant each, keeps deployments apart)")


def redacted(url: str) -> str:
    """A URL without its password, fit for an error message (however malformed it is);
    each of several, comma-separated, too."""
    return _CREDENTIALS.sub(r"\1REDACTED@", url)


# "scheme://user:" then the password, up to the "@" before the host (a password's own "@"
# is written %40 in a URL).
_CREDENTIALS = re.compile(r"(://[^:/@,]*:)[^@]*@")


def _secret(raw: str) -> str:
    if len(raw.encode()) < 32:
        raise ValueError("must be at least 32 bytes long (64 hex digits from "
                         "`openssl rand -hex 32`, say)")
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    origins = []
    for part in raw.split(","):
        origin = part.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        try:
            port = parts.port
        except ValueError:
            port = -1
        scheme = parts.scheme.lower()
        if origin == "*" or scheme not in ("http", "https") or not parts.hostname or (
                parts.path or parts.query or parts.fragment or parts.username or port == -1):
            raise ValueError(f"{origin!r} is not an origin: give each as scheme://host[:port] "
                             "(no path, no '*': credentials are allowed, so each origin is "
                             "named)")
        # As a browser writes its Origin: lower case, no default port.
        default = {"http": 80, "https": 443}[scheme]
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        origins.append(f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else ""))
    return tuple(origins)


def _log_level(raw: str) -> str:
    level = raw.lower()
    if level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ValueError("must be one of critical, error, warning, info, debug, trace")
    return level


# Each setting's variable and how its value is read (REDIS_URL and the port: from_env).
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("GATEWAY_HOST", _text),
    "redis_cluster": ("GATEWAY_REDIS_CLUSTER", _boolean),
    "heartbeat_seconds": ("GATEWAY_HEARTBEAT_SECONDS", _positive),
    "retry_ms": ("GATEWAY_RETRY_MS", _positive_int),
    "redis_timeout_seconds": ("GATEWAY_REDIS_TIMEOUT_SECONDS", _positive),
    "redis_connections": ("GATEWAY_REDIS_CONNECTIONS", _positive_int),
    "subscribe_timeout_seconds": ("GATEWAY_SUBSCRIBE_TIMEOUT_SECONDS", _positive),
    "send_timeout_seconds": ("GATEWAY_SEND_TIMEOUT_SECONDS", _positive),
    "probe_seconds": ("GATEWAY_PROBE_SECONDS", _positive),
    "retention_seconds": ("GATEWAY_RETENTION_SECONDS", _positive_int),
    "output_ttl_seconds": ("GATEWAY_OUTPUT_TTL_SECONDS", _positive_int),
    "active_ttl_seconds": ("GATEWAY_ACTIVE_TTL_SECONDS", _positive_int),
    "shutdown_grace_seconds": ("GATEWAY_SHUTDOWN_GRACE_SECONDS", _positive),
    "log_level": ("GATEWAY_LOG_LEVEL", _log_level),
    "max_header_bytes": ("GATEWAY_MAX_HEADER_BYTES", _positive_int),
    "max_body_bytes": ("GATEWAY_MAX_BODY_BYTES", _positive_int),
    "allow_http_downloads": ("GATEWAY_ALLOW_HTTP_DOWNLOADS", _boolean),
    "stream_open_max_jobs": ("GATEWAY_STREAM_OPEN_MAX_JOBS", _positive_int),
    "header_timeout_seconds": ("GATEWAY_HEADER_TIMEOUT_SECONDS", _positive),
    "keepalive_seconds": ("GATEWAY_KEEPALIVE_SECONDS", _positive_int),
    "insecure": ("GATEWAY_INSECURE", _boolean),
    "token_secret": ("GATEWAY_TOKEN_SECRET", _secret),
    "cors_origins": ("GATEWAY_CORS_ORIGINS", _origins),
    "max_streams_per_tenant": ("GATEWAY_MAX_STREAMS_PER_TENANT", _positive_int),
    "max_stream_seconds": ("GATEWAY_MAX_STREAM_SECONDS", _positive),
}
# Variables whose value an error message never shows.
_SECRET = frozenset({"GATEWAY_TOKEN_SECRET"})
