"""The package's layers import only downwards (docs/architecture.md).

contract → backend → fanout and auth → web, with errors, timers and observability below them
all; the client shares the contract with the server and nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

# What each part of the package may import from the package.
ALLOWED = {
    "contract": {"contract", "errors"},
    "backend": {"backend", "contract", "errors", "timers", "observability"},
    "fanout": {"fanout", "backend", "contract", "errors", "timers", "observability"},
    "auth": {"auth", "backend", "contract", "errors"},
    "web": {"web", "auth", "fanout", "backend", "contract", "errors", "observability",
            "settings"},
    "observability": {"observability", "web"},  # access.py types its context only
    "client": {"client", "contract", "errors"},
    # At the top, beside cli.py and launch.py: a program made of the others.
    "demo": {"demo", "app", "contract", "embedded", "errors", "launch", "observability",
             "runtime", "server", "settings", "worker"},
    "timers": set(),
    "errors": set(),
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "gateway."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "gateway":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("gateway."))
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_is_below_it(part: str) -> None:
    paths = [PACKAGE / f"{part}.py"] if (PACKAGE / f"{part}.py").exists() else sorted(
        (PACKAGE / part).glob("*.py"))
    assert paths
    for path in paths:
        wrong = _imports(path) - ALLOWED[part]
        assert not wrong, f"{path.relative_to(PACKAGE)} imports gateway.{', gateway.'.join(wrong)}"
