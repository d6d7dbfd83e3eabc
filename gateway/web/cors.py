"""CORS: which browser origins may call the API, and the headers that tell them so.

``GATEWAY_CORS_ORIGINS`` names them (docs/api.md, Auth). For a listed origin, every answer, the
event streams included, carries ``Access-Control-Allow-Origin: <origin>``,
``Access-Control-Allow-Credentials: true`` and ``Vary: Origin``, and a preflight
``OPTIONS`` is answered; for any other origin no CORS header at all. The headers are
computed once per origin and join the context's response headers (gateway.web.context),
so a stream pays nothing per event for them. Why not Starlette's ``CORSMiddleware``:
docs/architecture.md.
"""

from __future__ import annotations

from starlette.responses import Response

ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-None-Match", "Last-Event-ID",
                   "Prefer", "X-Api-Key", "X-Request-ID")
# What a page may read of an answer, besides the CORS-safelisted headers.
EXPOSED_HEADERS = ("ETag", "Location", "Preference-Applied", "Retry-After", "X-Request-ID",
                   "WWW-Authenticate")
MAX_AGE_SECONDS = 600
_VARY = (b"vary", b"Origin")
# Not a CORS header: it tells caches that another origin may get another answer.
_REFUSED = (_VARY,)


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self._origins = frozenset(origins)
        self.enabled = bool(origins)
        self._allowed_headers = frozenset(h.lower() for h in ALLOWED_HEADERS)
        exposed = (b"access-control-expose-headers", ", ".join(EXPOSED_HEADERS).encode())
        self._headers = {origin: ((b"access-control-allow-origin", origin.encode("latin-1")),
                                  (b"access-control-allow-credentials", b"true"), exposed,
                                  _VARY)
                         for origin in origins}

    def headers(self, origin: str | None) -> tuple[tuple[bytes, bytes], ...]:
        """The headers every answer to a request from ``origin`` carries (CORS enabled)."""
        found = self._headers.get(origin) if origin is not None else None
        return _REFUSED if found is None else found

    def options(self, origin: str | None, request_method: str | None,
                request_headers: str | None, allow: str) -> Response:
        """The answer to ``OPTIONS``: a preflight's for an allowed origin that asks for a
        method and headers this URL takes; otherwise 204 with ``Allow`` alone."""
        headers = {"Allow": allow}
        asked = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
        if (self.enabled and origin in self._origins and request_method in allow.split(", ")
                and all(h in self._allowed_headers for h in asked)):
            headers.update({
                "Access-Control-Allow-Methods": allow,
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
            })
        return Response(status_code=204, headers=headers)
