"""``POST /v1/tokens``: a short-lived token for a browser page (docs/api.md, Auth).

A page cannot send headers with ``EventSource``, and must not hold a long-lived key: its
server mints it a token with a write key, for the page's tenant, perhaps limited to some
jobs and to read, for minutes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Send

from gateway.auth import tokens
from gateway.auth.principal import Scope
from gateway.contract import keys
from gateway.contract.record import rfc3339
from gateway.web import params, problems
from gateway.web.context import Context
from gateway.web.services import Services
from gateway.web.types import Reply

_FIELDS = frozenset({"scope", "job_ids", "ttl_seconds"})


class Tokens:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def create(self, request: Request, context: Context, send: Send) -> Reply:
        principal = context.principal
        assert principal is not None  # a protected route
        if not principal.can_mint:
            raise problems.insufficient_scope("tokens are minted with an API key of scope "
                                              "write, not with a token")
        body = params.json_object(
            await params.body(request, self.services.settings.max_body_bytes))
        unknown = set(body) - _FIELDS
        if unknown:
            raise problems.invalid_parameter(f"unknown field(s): {', '.join(sorted(unknown))}")
        try:
            scope = Scope.parse(body.get("scope", "read"))
        except ValueError as exc:
            raise problems.invalid_parameter(str(exc)) from None
        ttl = body.get("ttl_seconds", tokens.DEFAULT_TTL_SECONDS)
        if type(ttl) is float and ttl.is_integer():
            ttl = int(ttl)  # 300.0 is the whole number 300 in JSON (and JSON Schema)
        if type(ttl) is not int or not (
                tokens.MIN_TTL_SECONDS <= ttl <= tokens.MAX_TTL_SECONDS):
            raise problems.invalid_parameter(
                f"ttl_seconds must be a whole number from {tokens.MIN_TTL_SECONDS} "
                f"to {tokens.MAX_TTL_SECONDS}")
        job_ids = body.get("job_ids")
        if job_ids is not None:
            if not isinstance(job_ids, list) or not job_ids or len(job_ids) > tokens.MAX_JOB_IDS:
                raise problems.invalid_parameter(
                    f"job_ids must be a list of 1 to {tokens.MAX_JOB_IDS} job ids")
            for job_id in job_ids:
                if not isinstance(job_id, str) or not keys.valid_job_id(job_id):
                    raise problems.invalid_job_id(str(job_id))
            job_ids = list(dict.fromkeys(job_ids))
        token, expires = tokens.mint(self.services.keyring.secret, principal, scope,
                                     ttl_seconds=ttl, job_ids=job_ids)
        return JSONResponse(
            {"token": token,
             "expires_at": rfc3339(expires)},
            status_code=201, headers={"Cache-Control": "no-store"})
