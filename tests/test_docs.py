"""The README and docs stand alone, and say what the code does.

Their code blocks run in tests/test_snippets.py; here: what they point to, the settings
table and the error codes against the code.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from gateway.settings import _VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPERATIONS = ROOT / "docs" / "operations.md"
API = ROOT / "docs" / "api.md"

# The hosts an absolute http(s) link in the docs may point to. None: every link stays
# inside the repository, where a reader of a checkout can follow it. (Example hosts, such
# as files.example, appear in code only, never as links.)
EXTERNAL_HOSTS: frozenset[str] = frozenset()


def test_nothing_in_the_repository_points_outside_it() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    outside = re.compile(r"DESIGN\.md|\.\./shared|shared/reference|/work/")
    found = []
    for name in files:
        path = ROOT / name
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m[0]}" for m in outside.finditer(text)]
    assert found == []


# -- links ---------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
_AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]*)>", re.I)
_BARE_URL = re.compile(r"\bhttps?://[^\s)<>\]]+", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str, *, spans: bool = False) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered; without their code spans, or with
    them and their backticks gone (``spans``)."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened[1][0] == fence[0] and len(opened[1]) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened[1]
            continue
        lines.append((number, line.replace("`", "") if spans else _CODE_SPAN.sub("", line)))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, without punctuation
    (letters, digits, ``_`` and ``-`` stay), spaces as ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(), spans=True):
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target of a page: inline links and images, reference definitions, HTML
    href and src, autolinks, and bare URLs (which GitHub turns into links)."""
    found = []
    for number, line in _prose_lines(path.read_text()):
        targets = [m[1] for m in _INLINE_LINK.finditer(line)]
        rest = _INLINE_LINK.sub("", line)
        targets += [m[1] for m in _REFERENCE.finditer(rest)]
        targets += [m[1] for m in _HTML.finditer(rest)]
        targets += [m[1] for m in _AUTOLINK.finditer(rest)]
        rest = _AUTOLINK.sub("", _HTML.sub("", rest))
        targets += [m[0] for m in _BARE_URL.finditer(rest)]
        found += [(number, target) for target in targets]
    return found


def _problem(page: Path, target: str) -> str | None:
    """Why ``target``, linked from ``page``, does not resolve; None when it does."""
    parts = urlsplit(target)
    if parts.scheme or target.startswith("//"):
        if parts.scheme in ("http", "https") and parts.hostname in EXTERNAL_HOSTS:
            return None
        return "leaves the repository (absolute links are allowed to EXTERNAL_HOSTS only)"
    if not parts.path and not parts.fragment:
        return "is empty"
    if parts.path.startswith("/"):
        return "is absolute: relative links keep working in a checkout and on GitHub"
    file = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if not file.is_relative_to(ROOT) or ".git" in file.relative_to(ROOT).parts:
        return "points outside the repository"
    if not file.exists():
        return f"names {file.relative_to(ROOT)}, which does not exist"
    if parts.fragment:
        if file.suffix != ".md":
            return "has an anchor into a file that is not Markdown"
        if unquote(parts.fragment) not in anchors(file):
            return f"names #{parts.fragment}, which is no heading of {file.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    broken = [f"{page.relative_to(ROOT)}:{number}: {target} {problem}"
              for number, target in links(page)
              if (problem := _problem(page, target)) is not None]
    assert broken == []


def test_the_link_checker_sees_what_github_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A `b` c!\n## A b c\n[x](docs/api.md#a) ![i](y.png) <https://e.example/>\n"
                    "see https://f.example/x `[no](link.md)` <a href=\"z.md\">z</a>\n"
                    "```sh\n[not](a-link.md)\n# not a heading\n```\n[r]: ref.md\n")
    assert sorted(target for _, target in links(page)) == sorted([
        "docs/api.md#a", "y.png", "https://e.example/", "https://f.example/x", "z.md",
        "ref.md"])
    assert anchors(page) == {"a-b-c", "a-b-c-1"}
    assert slug("`GET /v1/jobs/{id}` as JSON") == "get-v1jobsid-as-json"
    assert slug("`GET /healthz`, `/readyz`, `/metrics`") == "get-healthz-readyz-metrics"
    assert slug("What a client is promised") == "what-a-client-is-promised"


# -- what the docs say against the code ----------------------------------------------------


def _shown(value: object) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_setting_is_in_operations_with_its_default() -> None:
    text = OPERATIONS.read_text()
    rows = dict(re.findall(r"^\| `(GATEWAY_[A-Z_]+)` \| `([^`]*)` \|", text, re.M))
    for field, (name, _) in _VARIABLES.items():
        if field == "host":
            continue  # one row with the port: `GATEWAY_HOST`, `GATEWAY_PORT` (or `PORT`)
        assert rows.get(name) == _shown(getattr(Settings, field)), name
    assert "`GATEWAY_HOST`, `GATEWAY_PORT` (or `PORT`) | `127.0.0.1`, `8000`" in text
    assert set(rows) <= {name for name, _ in _VARIABLES.values()}


def test_every_error_code_is_in_the_api_reference_with_its_status() -> None:
    from gateway.web import problems

    source = (ROOT / "gateway" / "web" / "problems.py").read_text()
    made = set(re.findall(r"ApiError\(\s*(\d{3}),\s*\"([a-z_.]+)\"", source))
    assert ("404", "jobs.not_found") in made  # the pattern still reads problems.py
    codes: dict[str, tuple[int, str]] = getattr(problems, "CODES", {})  # what OpenAPI says
    made |= {(str(status), code) for code, (status, _) in codes.items()}
    listed = set(re.findall(r"^\| (\d{3}) \| `([a-z_.]+)` \|", API.read_text(), re.M))
    assert sorted(made - listed) == [], "made by gateway/web/problems.py, not in docs/api.md"
    assert sorted(listed - made) == [], "in docs/api.md, not made by gateway/web/problems.py"
