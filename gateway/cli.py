"""The ``gateway`` command: ``serve`` runs the gateway; ``job`` reports changes like a worker."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import redis.exceptions

from gateway.errors import ChangeRefused
from gateway.settings import Settings, SettingsError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.embedded import EmbeddedRedis
    from gateway.observability import logs
    from gateway.runtime import Server
    from gateway.server import protocol

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    settings = dataclasses.replace(
        settings,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
    )
    with ExitStack() as stack:
        if settings.redis_url is None:
            server = stack.enter_context(EmbeddedRedis())
            settings = dataclasses.replace(settings, redis_url=server.url)
            print(
                f"gateway: REDIS_URL is unset, so an embedded server runs for this process.\n"
                f"gateway: workers reach it with REDIS_URL={server.url}",
                file=sys.stderr,
                flush=True,
            )
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # logs.configure did it: JSON lines, our access log
            access_log=False,
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
            http=protocol(settings),
            timeout_keep_alive=settings.keepalive_seconds,
        )
        # A stop by SIGTERM/SIGINT exits 0 (gateway.runtime).
        Server(config).run()
    return 0


def _worker_call(args: argparse.Namespace) -> int:
    from gateway.worker import SyncWorker

    url = Settings.from_env().redis_url  # checked as the gateway checks it
    if not url:
        print("gateway job: set REDIS_URL (`gateway serve` prints it)", file=sys.stderr)
        return 2
    with SyncWorker.from_url(url) as worker:
        snapshot = args.call(worker, args)
    print(json.dumps(snapshot, indent=2))
    return 0


def _job_commands(sub: Any) -> None:
    job = sub.add_parser("job", help="report a job's changes as a worker would (needs REDIS_URL)")
    ops = job.add_subparsers(dest="op", required=True)

    def op(name: str, help: str, call: Callable[[Any, argparse.Namespace], Any]) -> Any:
        parser = ops.add_parser(name, help=help)
        parser.set_defaults(func=_worker_call, call=call)
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
    return watch(args.url, args.job_ids or None, as_json=args.json)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway (embedded Redis when REDIS_URL is unset)")
    serve.add_argument("--host", help="default: GATEWAY_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: GATEWAY_PORT, PORT or 8000")
    serve.set_defaults(func=_serve)
    _job_commands(sub)
    watch = sub.add_parser("watch", help="show jobs moving in the terminal")
    watch.add_argument("job_ids", nargs="*", metavar="ID")
    watch.add_argument("--all", action="store_true", help="every job of the tenant (endless)")
    watch.add_argument("--json", action="store_true", help="one snapshot per line instead")
    watch.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
                       help="the gateway (default: GATEWAY_URL or http://127.0.0.1:8000)")
    watch.set_defaults(func=_watch)
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
    except redis.exceptions.ConnectionError as exc:
        print(f"gateway: cannot reach Redis: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
