"""The README and docs stand alone, and say what the code does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gateway.settings import _VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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


def _shown(value: object) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(GATEWAY_[A-Z_]+)` \| `([^`]*)` \|", README, re.M))
    for field, (name, _) in _VARIABLES.items():
        if field == "host":
            continue  # one row with the port: `GATEWAY_HOST`, `GATEWAY_PORT` (or `PORT`)
        assert rows.get(name) == _shown(getattr(Settings, field)), name
    assert "`GATEWAY_HOST`, `GATEWAY_PORT` (or `PORT`) | `127.0.0.1`, `8000`" in README
    assert set(rows) <= {name for name, _ in _VARIABLES.values()}
