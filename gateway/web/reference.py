"""The API described: ``/openapi.json``, and ``/docs``, a page to read it.

The page is Swagger UI, from the ``swagger-ui-py`` package, whose wheel ships Swagger UI's
built assets: they are served from the installed package, never from a CDN, so the page
works on a machine with no way out. Only its files are used, not its framework glue.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Send

from gateway.web import openapi, problems
from gateway.web.context import Context
from gateway.web.types import Reply

# Relative URLs: the page works behind a proxy that serves the gateway under a prefix.
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Job status gateway: API reference</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
</script>
</body>
</html>
"""

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}


def _assets_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")  # located, not imported (no jinja2)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


class Reference:
    def __init__(self) -> None:
        self._document = b""
        self._assets: dict[str, bytes] = {}

    def describe(self, table: list[Route]) -> None:
        """Build the document of the whole table (ValueError if it and the table disagree)."""
        self._document = openapi.encoded(table)

    async def openapi(self, request: Request, context: Context, send: Send) -> Reply:
        return Response(self._document, media_type="application/json",
                        headers={"Cache-Control": "no-cache"})

    async def page(self, request: Request, context: Context, send: Send) -> Reply:
        return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})

    async def asset(self, request: Request, context: Context, send: Send) -> Reply:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise problems.no_route()
        body = self._assets.get(name)
        if body is None:
            body = self._assets[name] = (_assets_dir() / name).read_bytes()
        return Response(body, media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
