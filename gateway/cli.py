"""The ``gateway`` command (its --help says what each subcommand does)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions

from gateway.contract.keys import DEFAULT_TENANT
from gateway.errors import ChangeRefused
from gateway.settings import Settings, SettingsError


def _serve(args: argparse.Namespace) -> int:
    from gateway.launch import Launch, serve

    if args.workers < 1:
        print("gateway serve: --workers must be 1 or more", file=sys.stderr)
        return 2
    return serve(Launch(host=args.host, port=args.port, insecure=args.insecure,
                        embedded=args.embedded, workers=args.workers))


def _redis_url(command: str) -> tuple[str, bool] | None:
    """REDIS_URL and whether it names a cluster (GATEWAY_REDIS_CLUSTER), checked as the
    gateway checks them; None (said) when REDIS_URL is unset."""
    settings = Settings.from_env()
    if not settings.redis_url:
        print(f"gateway {command}: set REDIS_URL (`gateway serve` prints it)", file=sys.stderr)
        return None
    # As `gateway serve` checks before it starts: a Redis of the other mode would take
    # the changes and publish them where no gateway listens.
    from gateway.backend import preflight

    refusal = asyncio.run(preflight.check(settings.redis_url, 5, cluster=settings.redis_cluster))
    if refusal is not None:
        print(f"gateway {command}: REDIS_URL: {refusal}", file=sys.stderr)
        return None
    return settings.redis_url, settings.redis_cluster


def _worker_call(args: argparse.Namespace) -> int:
    from gateway.worker import SyncWorker

    redis_url = _redis_url("job")
    if not redis_url:
        return 2
    url, cluster = redis_url
    try:
        worker = SyncWorker.from_url(url, cluster=cluster, tenant=args.tenant)
    except ValueError as exc:
        print(f"gateway job: --tenant: {exc}", file=sys.stderr)
        return 2
    with worker:
        snapshot = args.call(worker, args)
    print(json.dumps(snapshot, indent=2))
    return 0


def _keys(args: argparse.Namespace) -> int:
    from gateway.auth import apikeys
    from gateway.auth.principal import Scope
    from gateway.backend import nodes

    redis_url = _redis_url("keys")
    if not redis_url:
        return 2
    with nodes.sync_client(redis_url[0], cluster=redis_url[1]) as client:
        if args.op == "create":
            try:
                key, record = apikeys.create(client, args.tenant, Scope(args.scope), args.name)
            except ValueError as exc:
                print(f"gateway keys create: --tenant: {exc}", file=sys.stderr)
                return 2
            if args.json:
                print(json.dumps({"key": key, "key_id": record.key_id, "tenant": record.tenant,
                                  "scope": record.scope.value}))
            else:
                print(key)
            return 0
        if args.op == "list":
            used = apikeys.last_used(client)
            rows = [record.public(used.get(record.key_id)) for record in apikeys.records(client)
                    if args.tenant is None or record.tenant == args.tenant]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                _table(rows)
            return 0
        revoked = apikeys.revoke(client, args.key_id)
        if revoked is None:
            print(f"gateway keys revoke: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked.key_id} (tenant {revoked.tenant}, {revoked.scope.value}) at "
              f"{revoked.revoked_at}; gateways refuse it within 5 s")
        return 0


def _table(rows: list[dict[str, Any]]) -> None:
    columns = ["key_id", "tenant", "scope", "name", "created_at", "last_used_at", "revoked_at"]
    if not rows:
        print("no API key (gateway keys create --tenant NAME --scope read|write)",
              file=sys.stderr)
        return
    cells = [[str(row[c] or "-") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for line in [columns, *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
              .rstrip())


def _keys_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys (needs REDIS_URL)")
    ops = keys.add_subparsers(dest="op", required=True)
    p = ops.add_parser("create", help="make a key; prints it, once (Redis keeps only a hash)")
    p.add_argument("--tenant", required=True, help="the tenant whose jobs the key reaches")
    p.add_argument("--scope", required=True, choices=["read", "write"],
                   help="read: GET, streams, downloads; write: also create, cancel, delete, "
                        "and minting tokens")
    p.add_argument("--name", default="", help="a note for `gateway keys list`")
    p.add_argument("--json", action="store_true", help="print key, key_id, tenant, scope")
    p.set_defaults(func=_keys)
    p = ops.add_parser("list", help="every key (never the key itself)")
    p.add_argument("--tenant", help="only this tenant's keys")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_keys)
    p = ops.add_parser("revoke", help="stop a key (and the tokens it minted) within 5 s")
    p.add_argument("key_id")
    p.set_defaults(func=_keys)


def _job_commands(sub: Any) -> None:
    job = sub.add_parser("job", help="report a job's changes as a worker would (needs REDIS_URL)")
    ops = job.add_subparsers(dest="op", required=True)

    def op(name: str, help: str, call: Callable[[Any, argparse.Namespace], Any]) -> Any:
        parser = ops.add_parser(name, help=help)
        parser.set_defaults(func=_worker_call, call=call)
        parser.add_argument("--tenant", default=DEFAULT_TENANT,
                            help=f"the job's tenant (default: {DEFAULT_TENANT})")
        return parser

    p = op("create", "register a queued job; prints its snapshot", lambda w, a: w.create(
        a.job_id,
        conversion={k: v for k, v in {
            "source_format": a.source_format, "target_format": a.target_format,
            "original_filename": a.filename, "source_size_bytes": a.size}.items() if v is not None},
    ))
    p.add_argument("job_id", nargs="?", help="the id (default: a new ULID)")
    p.add_argument("--source-format")
    p.add_argument("--target-format")
    p.add_argument("--filename", help="the original file name")
    p.add_argument("--size", type=int, help="the source size in bytes")

    def phase(a: argparse.Namespace) -> dict[str, Any]:
        return {} if a.phase is None else {"phase": a.phase}

    p = op("start", "queued -> running", lambda w, a: w.start(a.job_id, **phase(a)))
    p.add_argument("job_id")
    p.add_argument("--phase")

    p = op("progress", "report percent and/or phase",
           lambda w, a: w.progress(a.job_id, a.percent, **phase(a)))
    p.add_argument("job_id")
    p.add_argument("percent", type=float, nargs="?")
    p.add_argument("--phase")

    p = op("complete", "running -> completed", lambda w, a: w.complete(
        a.job_id, file_url=a.file_url, file_name=a.file_name, content_type=a.content_type,
        file_size_bytes=a.size, file_count=a.count))
    p.add_argument("job_id")
    p.add_argument("--file-url")
    p.add_argument("--file-name")
    p.add_argument("--content-type")
    p.add_argument("--size", type=int)
    p.add_argument("--count", type=int, default=1)

    p = op("fail", "-> failed", lambda w, a: w.fail(a.job_id, a.code, a.message))
    p.add_argument("job_id")
    p.add_argument("code")
    p.add_argument("message", nargs="?", default="")

    p = op("cancel", "-> canceled", lambda w, a: w.cancel(a.job_id))
    p.add_argument("job_id")


def _watch(args: argparse.Namespace) -> int:
    from gateway.client.watch import watch

    if bool(args.job_ids) == bool(args.all):
        print("gateway watch: name job ids, or --all for every job of the tenant",
              file=sys.stderr)
        return 2
    return watch(args.url, args.job_ids or None, as_json=args.json,
                 api_key=os.environ.get("GATEWAY_API_KEY") or None)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.launch import run
    from gateway.demo.simulation import Options

    for name, wrong, rule in (
            ("--rate", not 0 < args.rate <= 100, "more than 0 and at most 100 (jobs a second)"),
            ("--workers", args.workers < 1, "1 or more"),
            ("--duration", not args.duration >= 0, "0 (until stopped) or more seconds")):
        if wrong:
            print(f"gateway demo: {name} must be {rule}", file=sys.stderr)
            return 2
    options = Options(rate=args.rate, workers=args.workers, duration=args.duration)
    if args.only_workers:
        from gateway.demo import workers

        return workers.run(options, args.tenant)
    return run(options, args.port)


def _dashboard_url(args: argparse.Namespace) -> int:
    from gateway.auth.links import LinkRefused, check_base, dashboard_link, parse_ttl
    from gateway.backend import nodes

    settings = Settings.from_env()
    base = args.base or f"http://{settings.host}:{settings.port}"
    try:  # the options, before Redis is asked anything
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        print(f"gateway dashboard-url: --ttl: {exc}", file=sys.stderr)
        return 2
    try:
        check_base(base)
    except ValueError as exc:
        print(f"gateway dashboard-url: --base: {exc}", file=sys.stderr)
        return 2
    redis_url = _redis_url("dashboard-url")
    if not redis_url:
        return 2
    with nodes.sync_client(redis_url[0], cluster=redis_url[1]) as client:
        try:
            link = dashboard_link(
                client, tenant=args.tenant, write=args.write, ttl_seconds=ttl, base=base,
                key_id=args.key_id,
                secret=settings.token_secret.encode() if settings.token_secret else None)
        except ValueError as exc:
            print(f"gateway dashboard-url: --tenant: {exc}", file=sys.stderr)
            return 2
        except LinkRefused as exc:
            print(f"gateway dashboard-url: {exc}", file=sys.stderr)
            return 1
    print(link.url)
    if link.expires_at is None:
        print("(no API key exists: auth is off, and the page needs no token)", file=sys.stderr)
    else:
        print(f"({'may cancel jobs' if args.write else 'read-only'}, tenant {args.tenant}, "
              f"until {link.expires_at}, under key {link.key_id}: revoking it ends the link; "
              "anyone with the link has this access)", file=sys.stderr)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("job-status-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="gateway",
        description="The job status gateway: serve jobs' snapshots and event streams over "
                    "HTTP (and a live dashboard at /), manage API keys, report a job's "
                    "changes as a worker would, watch jobs move in a terminal, and try it "
                    "all with simulated workers (gateway demo).")
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway (embedded Redis when REDIS_URL is unset)")
    serve.add_argument("--host", help="default: GATEWAY_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: GATEWAY_PORT, PORT or 8000")
    serve.add_argument("--insecure", action="store_true",
                       help="serve without auth on a public address while no API key exists "
                            "(GATEWAY_INSECURE=true)")
    serve.add_argument("--embedded", action="store_true",
                       help="run a private embedded Valkey even on a public address (without "
                            "REDIS_URL; only this process can reach it)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="N processes sharing the port (default: 1); SIGTERM stops each "
                            "one's streams with a retry: and exits 0")
    serve.set_defaults(func=_serve)
    _keys_commands(sub)
    _job_commands(sub)
    watch = sub.add_parser("watch", help="show jobs moving in the terminal")
    watch.add_argument("job_ids", nargs="*", metavar="ID")
    watch.add_argument("--all", action="store_true", help="every job of the tenant (endless)")
    watch.add_argument("--json", action="store_true", help="one snapshot per line instead")
    watch.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
                       help="the gateway (default: GATEWAY_URL or http://127.0.0.1:8000)")
    watch.set_defaults(func=_watch)
    demo = sub.add_parser("demo", help="the gateway with simulated workers and a live "
                                       "dashboard, on an embedded Valkey (Ctrl-C stops all)")
    demo.add_argument("--port", type=int, help="default: GATEWAY_PORT, PORT or 8000")
    demo.add_argument("--rate", type=float, default=0.5,
                      help="new jobs per second, up to 100 (default: 0.5)")
    demo.add_argument("--workers", type=int, default=6,
                      help="simulated workers running jobs at once (default: 6)")
    demo.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                      help="stop after this long (default: 0, until Ctrl-C or SIGTERM)")
    demo.add_argument("--only-workers", action="store_true",
                      help="only the simulated workers, on the Redis of REDIS_URL, for "
                           "gateways that run elsewhere")
    demo.add_argument("--tenant", default=DEFAULT_TENANT,
                      help=f"with --only-workers: their jobs' tenant (default: {DEFAULT_TENANT})")
    demo.set_defaults(func=_demo)
    link = sub.add_parser("dashboard-url", help="print a link to the dashboard that carries "
                                                "a token (needs REDIS_URL)")
    link.add_argument("--tenant", required=True, help="whose jobs the page shows")
    link.add_argument("--write", action="store_true",
                      help="let the page cancel jobs (default: read-only)")
    link.add_argument("--ttl", default="8h",
                      help="how long the link works: 8h, 30m, 90s (a number alone: seconds), "
                           "up to 24h (default: 8h)")
    link.add_argument("--key-id", help="the tenant's write key to mint under (default: its "
                                       "newest named 'dashboard', else its newest)")
    link.add_argument("--base", help="the gateway's address as browsers reach it (default: "
                                     "http://GATEWAY_HOST:GATEWAY_PORT)")
    link.set_defaults(func=_dashboard_url)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"gateway: bad setting: {exc}", file=sys.stderr)
        return 2
    except ChangeRefused as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        from gateway.backend.preflight import refusal

        reason = refusal(exc)
        if reason is not None:
            print(f"gateway: REDIS_URL: {reason}", file=sys.stderr)
        elif isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                        | redis.exceptions.RedisClusterException):
            print(f"gateway: cannot reach Redis: {exc}", file=sys.stderr)
        else:
            print(f"gateway: Redis answered with an error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
