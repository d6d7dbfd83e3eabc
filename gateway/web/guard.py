"""What the front checks of every request before its endpoint runs (docs/api.md, Auth).

In this order: the CORS headers its answer will carry, ``OPTIONS`` (answered here, since
a browser's preflight comes without credentials), a declared body over the limit (413
before a byte of it is read), and, on every /v1 URL, the credential: who the caller is,
and so the tenant of every key and channel the request may name.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from gateway.auth.keyring import NotLoaded, Unauthenticated, UnknownKey
from gateway.web import problems
from gateway.web.context import Context
from gateway.web.services import Services


class Guard:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._cors = services.cors
        self._max_body = services.settings.max_body_bytes

    def greet(self, context: Context) -> None:
        """Before the route is known: the headers every answer carries."""
        if self._cors.enabled:
            context.headers.extend(self._cors.headers(context.origin))

    def options(self, context: Context, scope: Scope, allow: str) -> Response:
        headers = dict((k.decode("latin-1"), v.decode("latin-1"))
                       for k, v in scope.get("headers") or ())
        return self._cors.options(context.origin, headers.get("access-control-request-method"),
                                  headers.get("access-control-request-headers"), allow)

    def admit(self, context: Context, scope: Scope, protected: bool, *,
              caught_up: bool = False) -> bool:
        """413, 401 or 503; True: the request may go on (as its principal); False: its key
        is unknown here, and may be one made a moment ago: ``catch_up``, then ask again
        with ``caught_up``."""
        length = context.content_length
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise problems.too_large(self._max_body)
        if not protected:
            return True
        credential = context.credential()
        if credential is not None and credential.in_url_or_cookie and scope["method"] not in (
                "GET", "HEAD"):
            # A browser sends a cookie with any form another site posts, and a URL is
            # easily handed on: from there a token reads, and changes nothing.
            raise problems.invalid_credentials(
                "a token in the URL or a cookie is accepted for GET and HEAD only: send it "
                "as Authorization: Bearer", given=True)
        server = scope.get("server")
        try:
            principal = self._services.keyring.authenticate(
                credential, server[0] if server else None)
        except NotLoaded:
            raise problems.backend_unavailable() from None
        except UnknownKey as exc:
            if not caught_up:
                return False
            raise problems.invalid_credentials(str(exc), given=True) from None
        except Unauthenticated as exc:
            raise problems.invalid_credentials(str(exc), given=credential is not None) from None
        context.authenticated(principal)
        return True

    async def catch_up(self) -> None:
        await self._services.keyring.catch_up()
