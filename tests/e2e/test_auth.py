"""API keys, tokens and tenants against a real gateway and Redis (docs/api.md, Auth).

Every /v1 route is asked with every kind of credential, and must answer with the status
and error code that credential gets; two tenants share one gateway and one Redis and
neither learns anything of the other's jobs; a revoked key ends its open streams; and no
key or token used ever appears in the gateway's log output.
"""

from __future__ import annotations

import base64
import calendar
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from gateway.auth import apikeys, tokens
from gateway.auth.principal import Principal, Scope
from gateway.contract import keys
from gateway.worker import SyncWorker

STREAM = {"Accept": "text/event-stream"}


@dataclass
class Tenants:
    """Keys of two tenants, acme and globex, made before the gateway starts."""

    read: str
    write: str
    revoked: str
    other: str  # globex, scope write
    revoked_id: str


@pytest.fixture
def tenants(r: redis.Redis) -> Tenants:
    read, _ = apikeys.create(r, "acme", Scope.READ, "dashboard")
    write, _ = apikeys.create(r, "acme", Scope.WRITE, "backend")
    revoked, record = apikeys.create(r, "acme", Scope.WRITE)
    apikeys.revoke(r, record.key_id)
    other, _ = apikeys.create(r, "globex", Scope.WRITE)
    return Tenants(read, write, revoked, other, record.key_id)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def mint(client: httpx.Client, key: str, **body: object) -> str:
    response = client.post("/v1/tokens", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    token: str = response.json()["token"]
    return token


def tampered(token: str) -> str:
    """The same token with its claims changed to another tenant: the signature fails."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = "globex"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


# (connect_sse adds its Accept header to the dict it is given: each call gets a copy.)


def data_events(source: object) -> Iterator[object]:
    """The events of an httpx-sse source that carry data (it reports a block holding only
    ``retry:`` as an event without data)."""
    return (event for event in source.iter_sse() if event.data)  # type: ignore[attr-defined]


def ask(client: httpx.Client, method: str, path: str, headers: dict[str, str],
        body: object = None) -> httpx.Response:
    """The response's status and head; a stream is closed once its head arrived."""
    with client.stream(method, path, headers=headers, json=body) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response  # its body is endless: the head is what is asked about
        response.read()
        return response


def routes(queued: str, done: str, new: str) -> list[tuple[str, str, str, dict[str, str], object]]:
    """(name, method, path, extra headers, body) of every /v1 route, on jobs of acme."""
    return [
        ("job json", "GET", f"/v1/jobs/{queued}", {}, None),
        ("job head", "HEAD", f"/v1/jobs/{queued}", {}, None),
        ("job stream", "GET", f"/v1/jobs/{queued}", STREAM, None),
        ("job resume", "GET", f"/v1/jobs/{queued}", {**STREAM, "Last-Event-ID": "x-1"}, None),
        ("long-poll", "GET", f"/v1/jobs/{done}", {"If-None-Match": '"x"', "Prefer": "wait=1"},
         None),
        ("list", "GET", "/v1/jobs", {}, None),
        ("named jobs stream", "GET", f"/v1/jobs?job_id={queued}", STREAM, None),
        ("tenant stream", "GET", "/v1/jobs", STREAM, None),
        ("create", "POST", "/v1/jobs", {}, {"job_id": new}),
        ("download", "GET", f"/v1/jobs/{done}/download", {}, None),
        ("token", "POST", "/v1/tokens", {}, {"scope": "read", "ttl_seconds": 60}),
        ("cancel", "POST", f"/v1/jobs/{queued}/cancel", {}, None),  # changes come last
        ("delete", "DELETE", f"/v1/jobs/{done}", {}, None),
    ]


# What a caller who may do everything gets on each route (the jobs: one queued, one done).
GRANTED = {"job json": 200, "job head": 200, "job stream": 200, "job resume": 200,
           "long-poll": 200, "list": 200, "named jobs stream": 200, "tenant stream": 200,
           "create": 201, "cancel": 202, "delete": 204, "download": 307, "token": 201}
WRITES = {"create", "cancel", "delete", "token"}
JOB_ROUTES = {"job json", "job head", "job stream", "job resume", "long-poll", "cancel",
              "delete", "download", "named jobs stream"}
UNAUTHENTICATED = (401, "auth.invalid_credentials")
NO_SCOPE = (403, "auth.insufficient_scope")
NOT_FOUND = (404, "jobs.not_found")


def expected(credential: str, route: str) -> tuple[int, str | None]:
    if credential in ("none", "malformed", "basic", "unknown key", "revoked key",
                      "expired token", "tampered token"):
        return UNAUTHENTICATED
    if credential == "read key" or credential == "read token":
        return NO_SCOPE if route in WRITES else (GRANTED[route], None)
    if credential == "write token":
        return NO_SCOPE if route == "token" else (GRANTED[route], None)
    if credential == "token for another job":
        if route in WRITES:
            return NO_SCOPE  # a read token
        if route in ("list", "tenant stream"):
            return NO_SCOPE  # it cannot see the whole tenant
        return NOT_FOUND
    if credential == "another tenant's key":
        if route == "named jobs stream":
            return 200, None  # it opens, with the job reported unknown in its own tenant
        return NOT_FOUND if route in JOB_ROUTES else (GRANTED[route], None)
    assert credential == "write key"
    return GRANTED[route], None


def test_every_route_with_every_credential(
    start_gateway, redis_url: str, r: redis.Redis, tenants: Tenants
) -> None:
    gateway = start_gateway()
    used: list[str] = [tenants.read, tenants.write, tenants.revoked, tenants.other]
    failures = []
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url, tenant="acme") as worker:
        secret = r.get(keys.token_secret_key())
        assert secret
        read_token = mint(client, tenants.write, scope="read")
        write_token = mint(client, tenants.write, scope="write")
        narrow = mint(client, tenants.write, scope="read", job_ids=["someone-else"])
        expired, _ = tokens.mint(secret, Principal("acme", Scope.READ, apikeys.key_id_of(
            tenants.write) or "", "key"), Scope.READ, ttl_seconds=60, job_ids=None,
            now=time.time() - 120)
        unknown = tenants.write[:-6] + "AAAAAA"
        credentials: dict[str, dict[str, str]] = {
            "none": {},
            "malformed": bearer("not-a-credential"),
            "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
            "unknown key": {"X-Api-Key": unknown},
            "revoked key": bearer(tenants.revoked),
            "read key": bearer(tenants.read),
            "write key": {"X-Api-Key": tenants.write},
            "another tenant's key": bearer(tenants.other),
            "read token": bearer(read_token),
            "write token": bearer(write_token),
            "token for another job": bearer(narrow),
            "expired token": bearer(expired),
            "tampered token": bearer(tampered(read_token)),
        }
        used += [read_token, write_token, narrow, expired, unknown]
        for n, (credential, headers) in enumerate(credentials.items()):
            queued, done = f"q{n}", f"d{n}"
            worker.create(queued)
            worker.create(done)
            worker.start(done)
            worker.complete(done, file_url=f"https://files.example/{done}.pdf")
            for route, method, path, extra, body in routes(queued, done, f"new{n}"):
                response = ask(client, method, path, {**extra, **headers}, body)
                want_status, want_code = expected(credential, route)
                code = None
                if response.status_code >= 400:
                    # A HEAD answer has no body to say its code in.
                    code = want_code if method == "HEAD" else response.json()["error"]
                if (response.status_code, code) != (want_status, want_code):
                    failures.append(f"{credential} / {route}: {response.status_code} {code}, "
                                    f"expected {want_status} {want_code}")
                if want_status == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
            # A key never works in the URL: pages get tokens.
            response = client.get(f"/v1/jobs/{queued}?access_token={tenants.write}")
            if (response.status_code, response.json()["error"]) != UNAUTHENTICATED:
                failures.append(f"key in the query: {response.status_code}")
    assert not failures, "\n".join(failures)
    assert gateway.terminate() == 0  # the whole log, flushed
    output = gateway.output()
    leaked = [secret for secret in used if secret in output]
    assert not leaked, "a credential was written to the gateway's log"
    assert output.count('"status": 401') == 7 * len(GRANTED) + len(credentials)  # all seen


def test_two_tenants_share_a_gateway_and_see_nothing_of_each_other(
    start_gateway, redis_url: str, tenants: Tenants
) -> None:
    gateway = start_gateway()
    acme, globex = bearer(tenants.write), bearer(tenants.other)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url, tenant="acme") as worker:
        # The same job id in both tenants: two jobs.
        assert client.post("/v1/jobs", json={"job_id": "shared"}, headers=acme).status_code == 201
        assert client.post("/v1/jobs", json={"job_id": "shared"},
                           headers=globex).status_code == 201
        worker.create("secret-plan", conversion={"original_filename": "merger.docx"})
        with connect_sse(client, "GET", "/v1/jobs", headers={**globex}) as theirs, connect_sse(
                client, "GET", "/v1/jobs", headers={**acme}) as ours:
            their_events, our_events = data_events(theirs), data_events(ours)
            assert theirs.response.status_code == ours.response.status_code == 200
            first = next(their_events)
            assert json.loads(first.data)["job_id"] == "shared"  # its own job, and only it
            acme_ids = set()
            for _ in range(2):
                acme_ids.add(json.loads(next(our_events).data)["job_id"])
            assert acme_ids == {"shared", "secret-plan"}
            worker.start("secret-plan")
            assert json.loads(next(our_events).data)["status"] == "running"
            # globex's stream got nothing of it: the next thing it sees is its own change.
            client.post("/v1/jobs/shared/cancel", headers=globex)
            event = next(their_events)
            assert (json.loads(event.data)["job_id"], json.loads(event.data)["status"]) == (
                "shared", "canceled")
        position = client.get("/v1/jobs/secret-plan", headers=acme).headers["etag"].strip('"')
        for method, path, headers in [
            ("GET", "/v1/jobs/secret-plan", {}),
            ("GET", "/v1/jobs/secret-plan", STREAM),
            ("GET", "/v1/jobs/secret-plan", {**STREAM, "Last-Event-ID": position}),
            ("GET", "/v1/jobs/secret-plan", {"If-None-Match": f'"{position}"',
                                             "Prefer": "wait=1"}),
            ("GET", "/v1/jobs/secret-plan/download", {}),
            ("POST", "/v1/jobs/secret-plan/cancel", {}),
            ("DELETE", "/v1/jobs/secret-plan", {}),
        ]:
            response = client.request(method, path, headers={**headers, **globex})
            assert (response.status_code, response.json()["error"]) == NOT_FOUND, (method, path)
        listed = client.get("/v1/jobs", headers=globex).json()["jobs"]
        assert [(j["job_id"], j["status"]) for j in listed] == [("shared", "canceled")]
        with connect_sse(client, "GET", "/v1/jobs?job_id=secret-plan", headers={**globex}) as s:
            assert json.loads(next(data_events(s)).data) == {"job_ids": ["secret-plan"]}
        # acme's job is untouched by all of it.
        mine = client.get("/v1/jobs/secret-plan", headers=acme).json()
        assert (mine["status"], mine["cancel_requested"]) == ("running", False)


def test_a_revoked_key_ends_its_open_streams_within_5_seconds(
    start_gateway, redis_url: str, r: redis.Redis, tenants: Tenants
) -> None:
    gateway = start_gateway(GATEWAY_RETRY_MS="100")
    key, record = apikeys.create(r, "acme", Scope.READ)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url, tenant="acme") as worker:
        worker.create("long")
        token = mint(client, tenants.write, scope="read")  # minted by another key: stays
        deadline = time.monotonic() + 5  # the new key reaches the gateway within 5 s
        while client.get("/v1/jobs/long", headers=bearer(key)).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with client.stream("GET", "/v1/jobs/long", headers={**STREAM, **bearer(key)}) as ended, \
                client.stream("GET", "/v1/jobs/long",
                              headers={**STREAM, **bearer(token)}) as kept:
            assert ended.status_code == kept.status_code == 200
            apikeys.revoke(r, record.key_id)
            revoked_at = time.monotonic()
            body = b"".join(ended.iter_bytes())  # until the gateway ends it
            took = time.monotonic() - revoked_at
            assert took < 5, took
            assert body.rstrip().splitlines()[-1].startswith(b"retry: ")
            worker.start("long")  # the other stream still delivers
            kept_lines = kept.iter_lines()
            assert any('"status":"running"' in line for line in kept_lines)
        again = client.get("/v1/jobs/long", headers={**STREAM, **bearer(key)})
        assert (again.status_code, again.json()["error"]) == UNAUTHENTICATED


def test_a_key_made_while_the_gateway_runs_works_at_once(
    start_gateway, r: redis.Redis, tenants: Tenants
) -> None:
    """Found by a new user: a key refused for up to a second after it was made, as
    'unknown or revoked'."""
    gateway = start_gateway()
    for _ in range(3):
        key, _ = apikeys.create(r, "acme", Scope.READ)
        assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key)).status_code == 200
    unknown = "gwk_000000000000_" + "A" * 43
    started = time.monotonic()
    for _ in range(4):  # each waits for the next reload turn (4 a second), then 401
        assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(unknown)).status_code == 401
    assert 0.5 < time.monotonic() - started < 3


def test_revoking_a_key_revokes_the_tokens_it_minted(
    start_gateway, r: redis.Redis, tenants: Tenants
) -> None:
    gateway = start_gateway()
    key, record = apikeys.create(r, "acme", Scope.WRITE)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        deadline = time.monotonic() + 5
        while client.post("/v1/tokens", json={}, headers=bearer(key)).status_code != 201:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        token = mint(client, key)
        assert client.get("/v1/jobs", headers=bearer(token)).status_code == 200
        apikeys.revoke(r, record.key_id)
        deadline = time.monotonic() + 5
        while client.get("/v1/jobs", headers=bearer(token)).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_stream_ends_when_its_token_expires_and_then_gets_401(
    start_gateway, redis_url: str, tenants: Tenants
) -> None:
    gateway = start_gateway(GATEWAY_RETRY_MS="100")
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url, tenant="acme") as worker:
        worker.create("t")
        token = mint(client, tenants.write, scope="read", ttl_seconds=2, job_ids=["t"])
        opened = time.monotonic()
        with client.stream("GET", f"/v1/jobs/t?access_token={token}", headers=STREAM) as s:
            assert s.status_code == 200
            body = b"".join(s.iter_bytes())
        took = time.monotonic() - opened
        assert 0.5 < took < 4, took  # at the expiry (the hub's timer ticks each second)
        assert body.rstrip().splitlines()[-1].startswith(b"retry: ")
        again = client.get(f"/v1/jobs/t?access_token={token}", headers=STREAM)
        assert again.status_code == 401
        assert "expired" in again.json()["detail"]


def test_streams_older_than_the_limit_end_with_a_retry(start_gateway, redis_url: str) -> None:
    gateway = start_gateway(GATEWAY_MAX_STREAM_SECONDS="1", GATEWAY_RETRY_MS="200")
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url) as worker:
        worker.create("old")
        with client.stream("GET", "/v1/jobs", headers=STREAM) as stream:
            body = b"".join(stream.iter_bytes())
        retry = int(body.rstrip().splitlines()[-1].removeprefix(b"retry: "))
        assert 200 <= retry <= 400  # jittered between 1x and 2x GATEWAY_RETRY_MS


def test_a_tenant_past_its_stream_limit_gets_429_and_its_streams_go_on(
    start_gateway, redis_url: str, tenants: Tenants
) -> None:
    gateway = start_gateway(GATEWAY_MAX_STREAMS_PER_TENANT="2")
    acme = {**STREAM, **bearer(tenants.read)}
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url, tenant="acme") as worker:
        worker.create("busy")
        with client.stream("GET", "/v1/jobs/busy", headers=acme) as one, \
                client.stream("GET", "/v1/jobs", headers=acme) as two:
            assert one.status_code == two.status_code == 200
            refused = client.get("/v1/jobs/busy", headers=acme)
            assert (refused.status_code, refused.json()["error"]) == (
                429, "limits.too_many_streams")
            assert int(refused.headers["retry-after"]) > 0
            # JSON is no stream, and another tenant has its own count.
            assert client.get("/v1/jobs/busy", headers=bearer(tenants.read)).status_code == 200
            with client.stream("GET", "/v1/jobs",
                               headers={**STREAM, **bearer(tenants.other)}) as theirs:
                assert theirs.status_code == 200
            worker.start("busy")
            for stream in (one, two):
                assert any('"status":"running"' in line for line in stream.iter_lines())
        # Closed streams give their places back.
        deadline = time.monotonic() + 5
        while True:
            with client.stream("GET", "/v1/jobs", headers=acme) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_token_limited_to_jobs_opens_only_those(
    start_gateway, redis_url: str, tenants: Tenants
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url, timeout=10) as client, SyncWorker.from_url(
            redis_url, tenant="acme") as worker:
        for job_id in ("a", "b", "c"):
            worker.create(job_id)
        token = bearer(mint(client, tenants.write, scope="write", job_ids=["a", "b"]))
        with connect_sse(client, "GET", "/v1/jobs?job_id=a&job_id=b", headers={**token}) as s:
            events = data_events(s)
            assert {json.loads(next(events).data)["job_id"] for _ in range(2)} == {"a", "b"}
        response = client.get("/v1/jobs?job_id=a&job_id=c", headers={**STREAM, **token})
        assert (response.status_code, response.json()["error"]) == NOT_FOUND
        assert client.get("/v1/jobs?job_id=a&job_id=b", headers=token).status_code == 200
        assert client.post("/v1/jobs/a/cancel", headers=token).status_code == 202
        assert client.post("/v1/jobs/c/cancel", headers=token).status_code == 404
        created = client.post("/v1/jobs", json={"job_id": "z"}, headers=token)
        assert (created.status_code, created.json()["error"]) == NO_SCOPE


@pytest.mark.parametrize("body, problem", [
    ({"scope": "admin"}, "scope"),
    ({"ttl_seconds": 0}, "ttl_seconds"),
    ({"ttl_seconds": 86401}, "ttl_seconds"),
    ({"ttl_seconds": "60"}, "ttl_seconds"),
    ({"job_ids": []}, "job_ids"),
    ({"job_ids": "a"}, "job_ids"),
    ({"job_ids": ["a b"]}, "job id"),
    ({"tenant": "globex"}, "unknown field"),
])
def test_token_requests_are_checked(
    start_gateway, tenants: Tenants, body: dict[str, object], problem: str
) -> None:
    gateway = start_gateway()
    response = httpx.post(f"{gateway.url}/v1/tokens", json=body, headers=bearer(tenants.write))
    assert response.status_code == 400
    assert problem in response.json()["detail"]


def test_a_token_says_its_expiry_and_the_tenant_comes_from_the_key(
    start_gateway, r: redis.Redis, tenants: Tenants
) -> None:
    gateway = start_gateway()
    # 120.0 is the whole number 120 in JSON, as JSON Schema (and /openapi.json) says.
    response = httpx.post(f"{gateway.url}/v1/tokens", content=b'{"ttl_seconds": 120.0}',
                          headers=bearer(tenants.other))
    assert response.status_code == 201, response.text
    body = response.json()
    expires = calendar.timegm(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(expires - time.time() - 120) < 5
    claims = tokens.verify(r.get(keys.token_secret_key()) or b"", body["token"])
    assert (claims.tenant, claims.scope, claims.job_ids) == ("globex", Scope.READ, None)


def test_without_keys_loopback_is_served_and_the_first_key_closes_it(
    start_gateway, r: redis.Redis
) -> None:
    gateway = start_gateway()
    assert "NO AUTH" in gateway.output()
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.post("/v1/jobs", json={"job_id": "free"}).status_code == 201
        with client.stream("GET", "/v1/jobs/free", headers=STREAM) as stream:
            assert stream.status_code == 200
            key, record = apikeys.create(r, "default", Scope.READ)
            created = time.monotonic()
            b"".join(stream.iter_bytes())  # the anonymous stream ends
            assert time.monotonic() - created < 5
        response = client.get("/v1/jobs/free")
        assert (response.status_code, response.json()["error"]) == UNAUTHENTICATED
        assert client.get("/v1/jobs/free", headers=bearer(key)).status_code == 200
        # Revoking the last key does not turn auth off.
        apikeys.revoke(r, record.key_id)
        time.sleep(2.5)
        assert client.get("/v1/jobs/free").status_code == 401
        # /healthz, /readyz and /metrics stay open.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200


def test_key_use_is_written_down(start_gateway, r: redis.Redis, tenants: Tenants) -> None:
    gateway = start_gateway()
    httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(tenants.read))
    deadline = time.monotonic() + 5
    read_id = apikeys.key_id_of(tenants.read)
    while read_id not in apikeys.last_used(r):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert set(apikeys.last_used(r)) == {read_id}


def test_a_token_in_the_query_counts_and_is_never_logged_however_it_is_encoded(
    start_gateway, tenants: Tenants
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        token = mint(client, tenants.write)
        for query in (f"access_token={token}", f"access%5Ftoken={token}",
                      f"limit=5&access_token={token.replace('.', '%2E')}"):
            assert client.get(f"/v1/jobs?{query}").status_code == 200, query
        assert client.get("/v1/jobs?access_token=").status_code == 401
        # Found in review: a write token in a cookie let any site's form change jobs.
        write = mint(client, tenants.write, scope="write")
        client.post("/v1/jobs", json={"job_id": "kept"}, headers=bearer(write))
        for refused in (client.post("/v1/jobs/kept/cancel", headers={
                            "Cookie": f"gateway_token={write}"}),
                        client.delete(f"/v1/jobs/kept?access_token={write}")):
            assert (refused.status_code, refused.json()["error"]) == UNAUTHENTICATED
            assert "GET and HEAD only" in refused.json()["detail"]
        assert client.post("/v1/jobs/kept/cancel", headers=bearer(write)).status_code == 202
        cookie = client.get("/v1/jobs", headers={"Cookie": f"theme=dark; gateway_token={token}"})
        assert cookie.status_code == 200
    assert gateway.terminate() == 0
    output = gateway.output()
    assert token not in output and token.split(".")[2] not in output
    assert output.count('"tenant": "acme"') >= 4
