"""The demo's pretend storage: the files its simulated workers "upload".

A real worker uploads its output to storage and reports the URL; the gateway's download
link redirects there. The demo has no storage, so its own server answers those URLs with
a short text that says so, in front of the gateway's app.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/demo-files/"


class Outputs:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        name = unquote(scope["path"].rsplit("/", 1)[-1])
        body = (f"{name}: an output of the gateway's demo.\n\nA real worker uploads the "
                "converted file to storage and reports its URL; the dashboard's download "
                "link goes through the gateway, which redirects here.\n").encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})
