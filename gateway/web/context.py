"""The request context: what the gateway knows about a request, owned in one place.

Made once per request by the front (gateway.web.front) from the request's headers, and
handed to the endpoint: the request id, the tenant, the negotiated representation. The
endpoint notes on it what the access log reports (status, whether it streamed). Every
response goes out through it, which adds the headers every response carries (today
``X-Request-ID``) in this one place, and never wraps a stream's ``send``.
"""

from __future__ import annotations

import random
import re
import time

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.contract import keys
from gateway.web import problems
from gateway.web.negotiation import Representation, negotiate

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_KEY = "gateway.context"  # the one scope key the gateway adds


def _new_request_id() -> str:
    # A correlation id, not a secret: the Mersenne Twister is enough, and unlike
    # secrets.token_hex it costs no getrandom() system call per request.
    return f"{random.getrandbits(64):016x}"


class Context:
    __slots__ = ("_accept", "headers", "request_id", "started", "status", "stream", "tenant")

    def __init__(self, scope: Scope) -> None:
        given = accept = None
        for name, value in scope.get("headers") or ():
            # The first of each, as Starlette's Headers.get reads them.
            if name == b"accept" and accept is None:
                accept = value.decode("latin-1")
            elif name == b"x-request-id" and given is None:
                given = value.decode("latin-1")
        self._accept = accept
        self.request_id = given if given and _REQUEST_ID.fullmatch(given) else _new_request_id()
        # Every key and channel a request touches is its tenant's. One tenant until API
        # keys exist; the credential will set it here (README, HTTP API).
        self.tenant = keys.DEFAULT_TENANT
        # Response headers that every answer carries.
        self.headers: list[tuple[bytes, bytes]] = [(b"x-request-id", self.request_id.encode())]
        self.started = time.perf_counter()
        self.status = 0  # of the response, once it started
        self.stream = False  # an event stream was asked for (and served, or refused)
        scope[_KEY] = self

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
