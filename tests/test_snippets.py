"""Every code block of README.md and docs/*.md runs as written, or says why it does not.

The blocks are run the way a reader runs them: from the repository's root, in a second
terminal beside a gateway (here one that this test starts, with its own Redis, on free
ports), with ``.venv/bin`` *not* on the ``PATH`` (the docs write ``.venv/bin/gateway``).
As a doctest runner would, only the addresses change:

- ``localhost:8000`` and ``127.0.0.1:8000``: the test gateway's address;
- ``127.0.0.1:PORT/`` (in ``redis://[user:password@]127.0.0.1:PORT/<db>``): the test
  Redis (``PORT`` is the one ``./scripts/serve`` prints);
- the environment has ``REDIS_URL`` exported (every page says to export it),
  ``GATEWAY_URL`` and ``GATEWAY_PORT`` naming the test gateway (the defaults of
  ``gateway watch --url`` and ``gateway serve --port`` are that address for a reader).

All the runnable blocks of one page run in order in one bash session (``set -eu``, so a
command that fails fails the test), because a block may use what an earlier one made (a
job, ``$KEY``); ``python`` blocks run in it with ``.venv/bin/python``. Then the session
waits for what it left in the background, and every process it started is stopped. A
page's output must also show what its prose promises: ``EXPECTED`` below.

A block that cannot run so (the server of the first command, browser JavaScript, an
output sample, a diagram) has ``<!-- not run: <why> -->`` on the line before it. A block
that ends only when its reader stops it must be written so that it ends (``kill $!``
after a stream that stays open, a ``break`` in a loop that would not end).

docs/architecture.md and docs/workers.md are left out: the first has no commands, the
second is run by its own test (tests/e2e/test_worker_shell.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md",
         *(p for p in sorted((ROOT / "docs").glob("*.md"))
           if p.name not in ("architecture.md", "workers.md"))]
RUNNABLE = {"sh": "sh", "bash": "sh", "python": "python"}
_NOT_RUN = re.compile(r"^<!-- not run: (.*?) -->$")
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
SESSION_SECONDS = 75
_WORKER_LINE = re.compile(r"job [\w-]+: (created; starting in 3 s \(curl [^\n]*\)|"
                          r"[a-z]+ \(version \d+\))\n")

# What each page's blocks must print, in any order: the promises of the prose around them.
EXPECTED: dict[str, list[str]] = {
    "README.md": [
        r"event: snapshot\ndata: \{\"job_id\":\"demo\",\"status\":\"queued\"",
        r"event: status\ndata: \{\"job_id\":\"demo\",\"status\":\"running\"",
        r"event: progress\ndata: \{\"job_id\":\"demo\"",
        r"event: status\ndata: \{\"job_id\":\"demo\",\"status\":\"completed\"",
        r"HTTP/1.1 200 OK(.|\n)*etag: \"[a-z0-9]+-\d+\"",
        r"HTTP/1.1 304 Not Modified",
    ],
    "docs/api.md": [
        r"HTTP/1.1 201 Created(.|\n)*location: /v1/jobs/report-1",
        r"retry-after: 2",
        r"HTTP/1.1 304 Not Modified",
        r"preference-applied: wait=30(.|\n)*\"status\":\"running\"",
        r"\"next_cursor\":null",
        r"\"job_id\":\"a\",\"status\":\"canceled\"",
        r"\"cancel_requested\":true",
        r"HTTP/1.1 409 Conflict",
        r"location: https://files.example/b.pdf\?sig=1",
        r"\"error\":\"jobs.not_ready\"",
        r"\{\"status\":\"ok\"\}",
        r"\{\"status\":\"ready\"\}",
        r"\"openapi\": ?\"3\.1",
        r"event: progress\ndata: \{\"job_id\":\"job-7\"",
        r"event: status\ndata: \{\"job_id\":\"job-7\",\"status\":\"completed\"",
        r"HTTP/1.1 204 No Content",
        r"event: unknown\ndata: \{\"job_ids\":\[\"job-8\"\]\}",
        r"event: deleted\ndata: \{\"job_id\":\"job-8\",\"version\":3\}",
        r"\"error\":\"jobs.not_found\"",
        r"allow: GET, HEAD, POST, OPTIONS",
        r"\"error\":\"request.invalid_parameter\"",
        r"\{\"job_id\":\"report-1\",\"status\":\"queued\"",
        r"HTTP/1.1 401 Unauthorized",
        r"HTTP/1.1 404 Not Found",
        r"acme +write +backend",
    ],
    "docs/dashboard.md": [
        r"<!doctype html>",
        r"(?m)^http://127\.0\.0\.1:\d+/$",
        r"(?m)^http://127\.0\.0\.1:\d+/#token=[\w-]+\.[\w-]+\.[\w-]+$",
        r"may cancel jobs, tenant acme, until 20\d\d-.*under key [0-9a-f]{12}",
        r"(?m)^https://status\.example\.com/#token=[\w-]+\.[\w-]+\.[\w-]+$",
        r"\{\"jobs\":\[\],\"next_cursor\":null\}",
    ],
    "docs/client.md": [
        r"running 10.0 Loading document",
        r"completed 100.0 Writing PDF\nhttps://files.example/job-42/report.pdf",
        r"snapshot job-7 completed",
        r"✓ job-7 completed",
        r"\{\"job_id\":\"job-42\",\"status\":\"completed\"",
        r"gateway watch: cannot reach the gateway at http://127.0.0.1:9.*\nexit status 2",
    ],
    "docs/operations.md": [
        r"gateway \d+\.\d+",
        r"REDIS_URL='nonsense'.*\nexit status 2",
        r"selects database 1.*\nexit status 2",
        r"refuses the credentials.*\nexit status 2",
        r"does not speak the Redis protocol.*\nexit status 2",
        r"port \d+ on 127.0.0.1 is in use.*\nexit status 2",
        r"cannot reach Redis.*\nexit status 2",
        r"gateway_watchers 0\.0",
    ],
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    not_run: str | None  # why it is not run, or None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang or 'no language'})"


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        fence, lang, start = opened[1], opened[2].lower(), i
        i += 1
        while i < len(lines) and not (lines[i].startswith(fence[0] * len(fence))
                                      and not lines[i].strip(fence[0]).strip()):
            i += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = _NOT_RUN.match(before.strip())
        found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:i]) + "\n",
                           marker[1].strip() if marker else None))
        i += 1
    return found


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_block_runs_or_says_why_not(page: Path) -> None:
    unexplained = [str(b) for b in blocks(page)
                   if b.not_run is None and b.lang not in RUNNABLE]
    assert unexplained == [], (
        "a block the test cannot run needs <!-- not run: <why> --> on the line before it")
    assert [str(b) for b in blocks(page) if b.not_run == ""] == [], "say why it does not run"


def test_the_block_reader_sees_every_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# T\n\n```sh\necho 1\n```\n\n<!-- not run: a sample -->\n```text\n"
                    "out\n```\n````python\nprint('```')\n````\n")
    assert [(b.line, b.lang, b.code, b.not_run) for b in blocks(page)] == [
        (3, "sh", "echo 1\n", None), (8, "text", "out\n", "a sample"),
        (11, "python", "print('```')\n", None)]


def substitute(code: str, gateway_port: int, redis_url: str) -> str:
    redis_address = urlsplit(redis_url).netloc
    code = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{gateway_port}", code)
    return code.replace("127.0.0.1:PORT/", f"{redis_address}/")


def session(page: Path, gateway_port: int, redis_url: str) -> str:
    """The bash script of a page's runnable blocks, in order."""
    parts = ["set -eu"]
    for block in blocks(page):
        if block.not_run is not None or block.lang not in RUNNABLE:
            continue
        code = substitute(block.code, gateway_port, redis_url)
        parts.append(f"# {block}")
        if RUNNABLE[block.lang] == "python":
            assert "PYTHON_BLOCK" not in code
            parts.append(f".venv/bin/python - <<'PYTHON_BLOCK'\n{code}PYTHON_BLOCK")
        else:
            parts.append(code)
    parts.append("wait  # for what a block left in the background")
    return "\n".join(parts) + "\n"


def _environment(gateway_url: str, gateway_port: int, redis_url: str,
                 home: Path) -> dict[str, str]:
    venv_bin = (ROOT / ".venv" / "bin").resolve()
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and Path(entry).resolve() != venv_bin]
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("GATEWAY_") and name not in ("VIRTUAL_ENV", "PORT")}
    env.update(PATH=os.pathsep.join(path), REDIS_URL=redis_url, GATEWAY_URL=gateway_url,
               GATEWAY_PORT=str(gateway_port), PYTHONUNBUFFERED="1", COLUMNS="100")
    # curl shows a progress meter when its output is not a terminal, as here and never
    # for a reader: its own config turns it off (errors are still shown).
    (home / ".curlrc").write_text("silent\nshow-error\n")
    env["CURL_HOME"] = str(home)
    return env


@pytest.mark.timeout(SESSION_SECONDS + 30)
@pytest.mark.parametrize("page", [p for p in PAGES if any(
    b.not_run is None and b.lang in RUNNABLE for b in blocks(p))], ids=_name)
def test_the_blocks_of_a_page_run_as_written(page: Path, redis_url: str, start_gateway,
                                             tmp_path: Path) -> None:
    gateway = start_gateway()
    script = session(page, gateway.port, redis_url)
    process = subprocess.Popen(
        ["bash", "-c", script], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=_environment(gateway.url, gateway.port, redis_url, tmp_path),
        start_new_session=True)  # its own process group: everything it started is stopped
    try:
        output, _ = process.communicate(timeout=SESSION_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the blocks of {_name(page)} did not end within {SESSION_SECONDS} s:\n"
                    f"{output.decode(errors='replace')[-6000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"a command failed (exit {process.returncode}):\n{text}"
    # The pretend worker's own lines (each one write) may land inside a line of the client
    # that runs beside it, whose print writes piece by piece: the promises are the client's.
    client = _WORKER_LINE.sub("", text)
    missing = [pattern for pattern in EXPECTED.get(_name(page), [])
               if re.search(pattern, client) is None]
    assert missing == [], f"not in the output of {_name(page)}'s blocks:\n{text}"


def test_every_page_with_blocks_to_run_has_its_expectations() -> None:
    run = {_name(p) for p in PAGES
           if any(b.not_run is None and b.lang in RUNNABLE for b in blocks(p))}
    assert run == set(EXPECTED)
