"""Subprocesses the Kafka-path benchmarks start: a Tansu broker and a private ``redis-server``."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.integration._kafka import start_tansu, stop_process
from tests.integration._redis import PrivateRedisServer

__all__ = ["processes", "start_broker", "start_redis"]


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to put started processes in; every one is stopped on exit, whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            stop_process(process)


def start_broker(started: list[subprocess.Popen[bytes]], workdir: Path) -> str:
    """Start a Tansu broker logging to ``workdir``; return its bootstrap string."""
    bootstrap, process = start_tansu(workdir / "tansu.log")
    started.append(process)
    return bootstrap


def start_redis(started: list[subprocess.Popen[bytes]], workdir: Path) -> str:
    """Start a private ``redis-server`` (so command counts are ours alone); return its URL."""
    if shutil.which("redis-server") is None:
        raise SystemExit("the Kafka-path benchmarks need redis-server on PATH (apt-get install redis-server)")
    server = PrivateRedisServer(directory=workdir / "redis")
    server.start()
    assert server.process is not None
    started.append(server.process)
    return server.url
