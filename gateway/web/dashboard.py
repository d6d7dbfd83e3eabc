"""The dashboard at ``/``: a page of the tenant's jobs, live (docs/dashboard.md).

Static files shipped in the package (``gateway/web/ui/``: HTML, CSS, JavaScript modules),
with no build step and nothing from outside. The page gets its data as any client does,
through ``/v1`` with the credential in its link, so these files need none: they are open,
like ``/docs``. Each file is read once, at start, and served with an ``ETag``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from gateway.web import problems
from gateway.web.context import Context
from gateway.web.types import Reply

_DIR = Path(__file__).with_name("ui")
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8"}

# The page runs only its own files and talks only to its own origin; the token in its
# link never leaves in a Referer.
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class _File:
    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.media_type = _TYPES[path.suffix]
        self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:16]}"'

    def response(self, request: Request) -> Response:
        headers = {**_HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


class Dashboard:
    def __init__(self) -> None:
        files = {path.name: _File(path) for path in sorted(_DIR.iterdir())
                 if path.suffix in _TYPES}
        self._page = files.pop("index.html")
        self._assets = files

    async def page(self, request: Request, context: Context, send: Send) -> Reply:
        return self._page.response(request)

    async def asset(self, request: Request, context: Context, send: Send) -> Reply:
        found = self._assets.get(request.path_params["name"])
        if found is None:
            raise problems.no_route()
        return found.response(request)
