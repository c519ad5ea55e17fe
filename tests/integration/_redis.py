"""Redis fixtures and helpers for integration, contract and fault tests.

* The shared Redis (``127.0.0.1:6379``, or ``$ARVO_TEST_REDIS_URL``) is used with a unique key prefix
  per test; its keys are deleted afterwards. Never FLUSHALL/FLUSHDB it and never stop it.
* :class:`PrivateRedisServer` starts a throw-away ``redis-server`` on a free port (no persistence) for
  tests that stop, restart or reconfigure Redis (restart, ACL, TLS, cluster mode).
* :class:`CountingRedis` counts the commands a client sends, to pin round trips per call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from service.runtime.redis_memory import RedisMemory

__all__ = [
    "CountingRedis",
    "PrivateRedisServer",
    "delete_keys_with_prefix",
    "free_port",
    "private_redis",
    "redis_key_prefix",
    "redis_memory",
    "redis_server_binary",
    "require_redis_server",
    "require_shared_redis",
    "shared_redis_url",
    "unique_prefix",
]

SHARED_REDIS_URL = os.environ.get("ARVO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers_ping(url: str, **kwargs: Any) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, **kwargs)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def require_shared_redis() -> str:
    """Return the shared Redis URL, or skip the test when it does not answer PING."""
    if not _answers_ping(SHARED_REDIS_URL):
        pytest.skip(f"shared Redis at {SHARED_REDIS_URL} is not reachable (start it as .ci/run does)")
    return SHARED_REDIS_URL


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"arvotest:{uuid.uuid4().hex}"


async def delete_keys_with_prefix(client: redis.asyncio.Redis, prefix: str) -> int:
    """Delete every key starting with ``prefix:`` (SCAN + UNLINK); return how many."""
    pattern = "".join(f"[{ch}]" if ch in "*?[]\\" else ch for ch in prefix) + ":*"
    keys = [key async for key in client.scan_iter(match=pattern, count=500)]
    if keys:
        await client.unlink(*keys)
    return len(keys)


class CountingRedis(redis.asyncio.Redis):
    """A client that counts the commands it sends (pipelines not included).

    Every ``execute_command`` is one request/reply exchange with the server, i.e. one round trip.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands: Counter[str] = Counter()

    @classmethod
    def for_url(cls, url: str) -> CountingRedis:
        """A counting client for ``url``."""
        client = cls.from_url(url)
        assert isinstance(client, cls)
        return client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands[str(args[0]).upper()] += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    @property
    def round_trips(self) -> int:
        """Commands sent since the last :meth:`reset_counts`."""
        return sum(self.commands.values())

    def reset_counts(self) -> None:
        """Forget the commands counted so far."""
        self.commands.clear()


def free_port(*, below: int = 55_536) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Ports stay below 55536 by default: a cluster-enabled Redis also listens on ``port + 10000``.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < below:
            return port
    raise RuntimeError(f"no free port below {below} found")


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` on PATH, if any."""
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """Return the ``redis-server`` path or skip the test."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server); private-server test skipped")
    return binary


class PrivateRedisServer:
    """A ``redis-server`` subprocess on a fixed free port, in its own directory, without persistence.

    Stop and start it as often as needed; it keeps its port. ``extra_args`` are appended to the
    command line (e.g. ``["--cluster-enabled", "yes"]``). ``tls=True`` serves ``port`` as
    ``--tls-port`` only (plain port off); pass the ``--tls-*`` file arguments in ``extra_args`` and the
    client TLS options for the readiness PING in ``ready_kwargs``.
    """

    def __init__(
        self,
        *,
        directory: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        tls: bool = False,
        ready_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self.tls = tls
        self.ready_kwargs = ready_kwargs or {}
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """``redis://`` (or ``rediss://``) URL of the server."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> Path:
        """Where the server logs."""
        return self.directory / "redis.log"

    def command_line(self) -> list[str]:
        """The argv the server is started with."""
        ports = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        return [
            self.binary,
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.logfile),
            *self.extra_args,
        ]

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.process = subprocess.Popen(
            self.command_line(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.directory
        )
        deadline = time.monotonic() + timeout_s
        while not _answers_ping(self.url, **self.ready_kwargs):
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.logfile.read_text() if self.logfile.exists() else ""
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {stderr}{log[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.stop(sig=signal.SIGKILL)
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {timeout_s} s")
            time.sleep(0.02)

    def stop(self, *, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Stop the server with ``sig`` and wait for the process to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> None:
        """SIGTERM the server and start it again on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> PrivateRedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------
# Fixtures (re-exported by tests/integration/conftest.py)


@pytest.fixture(scope="session")
def shared_redis_url() -> str:
    """URL of the shared Redis; skips when it is down."""
    return require_shared_redis()


@pytest.fixture
async def redis_key_prefix(shared_redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix on the shared Redis; its keys are deleted after the test."""
    prefix = unique_prefix()
    yield prefix
    client = redis.asyncio.Redis.from_url(shared_redis_url)
    try:
        await delete_keys_with_prefix(client, prefix)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_memory(shared_redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisMemory]:
    """A :class:`RedisMemory` on the shared Redis with a unique key prefix."""
    memory = RedisMemory.from_url(shared_redis_url, key_prefix=redis_key_prefix)
    try:
        yield memory
    finally:
        await memory.close()


@contextlib.contextmanager
def running_single_node_cluster(directory: Path) -> Iterator[PrivateRedisServer]:
    """A one-node Redis Cluster owning all 16384 slots (cross-slot rules apply as in a real cluster).

    Reaching ``cluster_state:ok`` takes about two seconds; stopped on exit.
    """
    server = PrivateRedisServer(
        directory=directory,
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
    )
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while admin.cluster("INFO").get("cluster_state") != "ok":
            if time.monotonic() > deadline:
                pytest.fail("single-node cluster did not reach cluster_state:ok")
            time.sleep(0.02)
        admin.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedisServer]:
    """A private, running ``redis-server`` (skips when the binary is missing); stopped afterwards."""
    server = PrivateRedisServer(directory=tmp_path / "redis")
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        server.start()
        yield server
