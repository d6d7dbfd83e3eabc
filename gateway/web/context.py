"""The request context: what the gateway knows about a request, owned in one place.

Made once per request by the front (gateway.web.front) from the request's headers, and
handed to the endpoint: the request id, the credential it came with and who that made it
(its principal, and so its tenant), the negotiated representation. The endpoint notes on
it what the access log reports (status, whether it streamed). Every response goes out
through it, which adds the headers every response carries (``X-Request-ID``, and CORS
headers for an allowed origin) in this one place, and never wraps a stream's ``send``.
"""

from __future__ import annotations

import random
import re
import time
from urllib.parse import parse_qsl

from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.auth.keyring import Credential
from gateway.auth.principal import Principal
from gateway.auth.principal import Scope as AuthScope
from gateway.contract import keys
from gateway.web import problems
from gateway.web.negotiation import Representation, negotiate
from gateway.web.types import DIRECT_WRITE, DirectWriter

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_KEY = "gateway.context"  # the one scope key the gateway adds


def _new_request_id() -> str:
    # A correlation id, not a secret: the Mersenne Twister is enough, and unlike
    # secrets.token_hex it costs no getrandom() system call per request.
    return f"{random.getrandbits(64):016x}"


TOKEN_COOKIE = "gateway_token"


# The request headers the gateway reads, each by its place in Context.__init__'s list.
_READ = {name: i for i, name in enumerate((b"accept", b"x-request-id", b"authorization",
                                            b"x-api-key", b"cookie", b"origin",
                                            b"content-length", b"last-event-id",
                                            b"if-none-match", b"prefer"))}


class Context:
    __slots__ = ("_accept", "_api_key", "_authorization", "_cookie", "_query",
                 "content_length", "direct_write", "headers", "if_none_match",
                 "last_event_id", "origin", "prefer", "principal", "request_id", "started",
                 "status", "stream", "tenant")

    def __init__(self, scope: Scope) -> None:
        found: list[str | None] = [None] * len(_READ)
        for name, value in scope.get("headers") or ():
            i = _READ.get(name)
            # The first of each, as Starlette's Headers.get reads them.
            if i is not None and found[i] is None:
                found[i] = value.decode("latin-1")
        (accept, given, authorization, api_key, cookie, origin, length, self.last_event_id,
         self.if_none_match, self.prefer) = found
        self._accept = accept
        self._authorization, self._api_key, self._cookie = authorization, api_key, cookie
        self._query: bytes = scope.get("query_string", b"")
        self.origin = origin
        self.content_length = length
        self.request_id = given if given and _REQUEST_ID.fullmatch(given) else _new_request_id()
        # Every key and channel a request touches is its tenant's, and the tenant comes
        # from the credential alone (the front sets both once it verified it).
        self.principal: Principal | None = None
        self.tenant = keys.DEFAULT_TENANT
        # Response headers that every answer carries.
        self.headers: list[tuple[bytes, bytes]] = [(b"x-request-id", self.request_id.encode())]
        # The server's way to write a body part without a send coroutine, where it has one
        # (gateway.server.DirectWrite): the stream's watcher uses it.
        extensions = scope.get("extensions")
        self.direct_write: DirectWriter | None = (
            extensions.get(DIRECT_WRITE) if extensions else None)
        self.started = time.perf_counter()
        self.status = 0  # of the response, once it started
        self.stream = False  # an event stream was asked for (and served, or refused)
        scope[_KEY] = self

    def credential(self) -> Credential | None:
        """The credential the request carries, by precedence: the Authorization header,
        X-Api-Key, ``?access_token=`` (RFC 6750 section 2.3), the ``gateway_token``
        cookie. An Authorization header of another scheme (a proxy's Basic, say) is not
        ours, and the next source counts."""
        if self._authorization is not None:
            scheme, _, value = self._authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                return Credential("authorization", value.strip())
        if self._api_key is not None:
            return Credential("x-api-key", self._api_key.strip())
        query = self._query
        if b"access_token" in query or b"%" in query:  # the name may come percent-encoded
            for name, value in parse_qsl(query.decode("latin-1"),
                                         keep_blank_values=True):
                if name == "access_token":
                    return Credential("query", value)
        if self._cookie is not None:
            token = cookie_parser(self._cookie).get(TOKEN_COOKIE)
            if token is not None:
                return Credential("cookie", token)
        return None

    def authenticated(self, principal: Principal) -> None:
        self.principal = principal
        self.tenant = principal.tenant

    def require_write(self) -> None:
        """403 unless the credential may change things (create, cancel, delete, mint)."""
        principal = self.principal
        if principal is not None and principal.scope is not AuthScope.WRITE:
            raise problems.insufficient_scope("this needs a credential of scope write")

    def sees(self, job_id: str) -> None:
        """404 for a job the credential is not for (a token limited to other jobs): the
        same answer as for a job that does not exist, which reveals nothing."""
        principal = self.principal
        if principal is not None and not principal.sees(job_id):
            raise problems.not_found(job_id)

    @staticmethod
    def of(scope: Scope) -> Context | None:
        """The context of a request the front has seen (None before that)."""
        context: Context | None = scope.get(_KEY)
        return context

    def representation(self) -> Representation | None:
        """What ``Accept`` asks for: JSON, the event stream, or None (nothing acceptable)."""
        return negotiate(self._accept or None)

    def negotiated(self) -> Representation:
        """What ``Accept`` asks for, on a resource served both ways; 406 if neither. A
        stream asked for is noted for the access log whatever becomes of the request."""
        representation = negotiate(self._accept or None)
        if representation is None:
            raise problems.not_acceptable()
        self.stream = representation is Representation.STREAM
        return representation

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> Message:
        """A stream's ``http.response.start``, with the headers every response carries."""
        self.status = status
        return {"type": "http.response.start", "status": status,
                "headers": [*headers, *self.headers]}

    async def respond(self, response: Response, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """Send a whole response, with the headers every response carries."""
        response.raw_headers.extend(self.headers)
        self.status = response.status_code
        await response(scope, receive, send)
