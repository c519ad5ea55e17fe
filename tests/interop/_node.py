"""Shared helpers for the cross-language interop tests: find Node/npm, install pinned packages, run scripts.

Each interop suite keeps its npm project (``package.json`` + committed ``package-lock.json`` + scripts) in
its own folder under ``tests/interop/``; these helpers are generic over that folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "NODE_MISSING_REASON",
    "NodeScriptError",
    "ensure_npm_ci",
    "node_available",
    "run_node_json",
]

NODE_MISSING_REASON = "node and npm are not installed (the interop checks need the real npm packages)"

# Written into node_modules after a successful install; holds the sha256 of the lockfile it came from.
_STAMP_NAME = ".arvo-interop-lock.sha256"
_NPM_CI_TIMEOUT_S = 600


class NodeScriptError(RuntimeError):
    """A Node script exited non-zero or printed something that is not JSON."""


def node_available() -> bool:
    """Return whether both ``node`` and ``npm`` are on ``PATH``."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def _lock_digest(directory: Path) -> str:
    return hashlib.sha256((directory / "package-lock.json").read_bytes()).hexdigest()


def _install_lock_path(directory: Path) -> Path:
    # Outside the repository (no untracked files) and outside node_modules (npm ci deletes it).
    key = hashlib.sha256(bytes(directory.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"arvo-npm-ci-{key}.lock"


def ensure_npm_ci(directory: Path) -> None:
    """Run ``npm ci`` in ``directory`` when ``node_modules`` is missing or the lockfile changed since.

    Safe to call from several test processes at once: an exclusive file lock serialises installs of the
    same folder, and the stamp is re-checked under the lock.

    Args:
        directory: Folder holding ``package.json`` and the committed ``package-lock.json``.

    Raises:
        FileNotFoundError: The folder has no ``package-lock.json``.
        subprocess.CalledProcessError: ``npm ci`` failed (its output is attached).

    """
    directory = Path(directory)
    if not (directory / "package-lock.json").is_file():
        raise FileNotFoundError(f"no package-lock.json in {directory} (run `npm install` there once)")
    stamp = directory / "node_modules" / _STAMP_NAME
    with _install_lock_path(directory).open("a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            digest = _lock_digest(directory)
            if stamp.is_file() and stamp.read_text().strip() == digest:
                return
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=directory,
                check=True,
                capture_output=True,
                text=True,
                timeout=_NPM_CI_TIMEOUT_S,
            )
            stamp.write_text(digest + "\n")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def run_node_json(
    directory: Path,
    script: str,
    args: Sequence[str] = (),
    *,
    payload: object = None,
    timeout: float = 120,
) -> Any:
    """Run ``node <script> <args...>`` in ``directory`` and return its stdout parsed as JSON.

    Args:
        directory: Working directory (the npm project folder, so ``require`` finds ``node_modules``).
        script: Script file name relative to ``directory``.
        args: Extra command-line arguments.
        payload: If not ``None``, serialised as JSON and written to the script's stdin.
        timeout: Seconds before the script is killed.

    Returns:
        The decoded JSON value the script printed.

    Raises:
        NodeScriptError: Non-zero exit status or non-JSON output (stderr is included in the message).

    """
    stdin = orjson.dumps(payload) if payload is not None else b""
    proc = subprocess.run(
        ["node", script, *args],
        cwd=directory,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    if proc.returncode != 0:
        raise NodeScriptError(
            f"node {script} {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    try:
        return orjson.loads(proc.stdout)
    except orjson.JSONDecodeError as exc:
        raise NodeScriptError(
            f"node {script} printed non-JSON output: {proc.stdout[:200]!r} (stderr: {proc.stderr[:200]!r})"
        ) from exc
