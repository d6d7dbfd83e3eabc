"""``--baseline REF``: an earlier build of the gateway, measured in the same run.

The team compares builds as ratios within one run, never across runs (machine drift). So
the bench checks REF out into a detached ``git worktree`` in a temporary directory, and a
``baseline`` column runs ``python -m gateway serve`` from it: the same interpreter and
venv as the ``gateway`` column, with ``cwd`` and ``PYTHONPATH`` set to the worktree so that
its ``gateway`` package is imported instead of the editable install of this tree (checked
before anything is measured). Only the server differs: Redis, the load generator and the
workers' side (``gateway.worker`` and its Lua script, in the bench's publisher) are this
tree's, so REF must accept the same ``gateway serve --port N`` and read what today's
workers write. The worktree is removed when the run ends, also on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    """Where the baseline's ``gateway`` package comes from."""

    ref: str  # as given on the command line
    commit: str  # what it resolved to
    path: Path  # the worktree

    @property
    def label(self) -> str:
        short = self.commit[:7]
        return self.ref if self.ref == short else f"{self.ref} ({short})"


def source_env(path: Path) -> dict[str, str]:
    """The environment changes that make ``python -m gateway`` import the package at path
    (run with ``cwd=path`` too)."""
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(path) + (os.pathsep + rest if rest else "")}


def check_import(path: Path) -> Path:
    """Where a process started as the baseline's server imports ``gateway`` from; raises
    unless that is inside path (and not, say, the editable install of this tree)."""
    done = subprocess.run(
        [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
        cwd=path, env={**os.environ, **source_env(path)}, capture_output=True, text=True,
        timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"baseline: `import gateway` failed in {path}:\n"
                           f"{done.stderr[-2000:]}")
    imported = Path(done.stdout.strip()).resolve()
    if not imported.is_relative_to(path.resolve()):
        raise RuntimeError(f"baseline: the server would import gateway from {imported}, "
                           f"not from the worktree {path}")
    return imported


def _git(*argv: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def worktree(ref: str) -> Iterator[Source]:
    """A detached worktree of ref in a temporary directory, removed on the way out (also
    on an exception, Ctrl-C or SIGTERM). Exits with a message if ref is no commit, or if
    its ``gateway`` cannot be imported from the worktree."""
    try:
        commit = _git("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    except RuntimeError as exc:
        raise SystemExit(f"bench: --baseline {ref}: not a commit of {REPO} ({exc})") from None
    path = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    previous = signal.signal(signal.SIGTERM, _raise_exit)  # so that `finally` runs
    added = False
    try:
        try:
            _git("worktree", "add", "--detach", str(path), commit)
            added = True
            imported = check_import(path)
        except RuntimeError as exc:
            raise SystemExit(f"bench: --baseline {ref}: {exc}") from None
        print(f"bench: baseline {ref} = {commit[:12]}, gateway imported from {imported}",
              file=sys.stderr, flush=True)
        yield Source(ref, commit, path)
    finally:
        if added:
            try:
                _git("worktree", "remove", "--force", str(path))
            except RuntimeError as exc:
                print(f"bench: {exc} (`git worktree prune` drops its entry)", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
