"""Crash test: bench workflows across two worker processes while a fault hits them, again and again.

``python -m tests.fault.crash_test --fault worker-kill --workflows 300 --faults 5``
(``make fault-test``, ``make fault-test FAULT=redis-restart``, ``FAULT=redis-outage``, ``FAULT=timers``):

1. starts its own Tansu broker (free port) and a private ``redis-server`` (or, for ``worker-kill``
   and ``timers`` only, uses ``--redis-url`` with a unique key prefix, deleted at the end), creates
   the topics with 4 partitions;
2. starts two workers (``python -m tests.fault.worker``: the full bench app — orchestrator,
   resumable and both services — as ``arvo run`` runs it; for ``timers`` the timer app,
   ``service.examples.timers:timers_app``), one after the other;
3. publishes the bench init events (orchestrator and resumable variants, ``a``/``b`` drawn from the
   seed; for ``timers`` the timer workflows, see below) in waves, and during each wave but the last,
   at a random moment, the fault (``--fault``):

   * ``worker-kill`` (the default): ``kill -9`` a random worker, restart it, wait until it has
     rejoined the group;
   * ``redis-restart``: ``kill -9`` the private Redis — run with ``appendonly yes`` and
     ``appendfsync always`` (``--redis-persistence``: ``everysec`` or ``none`` to measure what those
     lose) — under load, and restart it on the same port after a random moment of down time;
   * ``redis-outage``: ``SIGSTOP`` the private Redis for longer than a record's whole retry budget
     (``--outage-s``, by default the budget computed from the workers' settings + 5 s), then
     ``SIGCONT``: records must wait the outage out, none may be parked or dead-lettered;
   * ``timers``: ``kill -9`` workers as ``worker-kill`` does, under workflows whose path depends on a
     durable timer (``arvo.orc.bench.timeout``, ``{a, b, timeoutMs}``: it calls ``com.bench.maybe``,
     which answers only when ``b`` is odd, and gives up after ``timeoutMs``). Half the workflows have
     an even ``b`` and a ``timeoutMs`` drawn from ``TIMED_OUT_MS`` (1–8 s after their init event is
     published, so that their timers come due while workers are killed and partitions move): they
     must complete ``{result: -1, timedOut: true}``. The other half have an odd ``b`` and a
     ``timeoutMs`` of ``ANSWERED_MS`` (60–90 s), far beyond any delay the faults cause, so that the
     answer always wins and the expectation stays deterministic: ``{result: a+b, timedOut: false}``
     (their timers are cancelled by the answer; their stale hints are left in the schedule and
     normally come due only after the run — any that fire earlier must be ignored). Each init
     event's ``time`` — from which its timer counts — is stamped when it is published;

4. waits until every workflow's record is ``done`` (or ``--timeout``, counted without the outages),
   stops the workers, then reads every topic from the beginning (manual assignment) and checks:

   * **lost**: a workflow without a ``done`` record or without its completion event on the client
     topic;
   * **divergent**: a record whose consumed-id ring repeats, whose state or result is wrong
     (``value`` ``done``, result ``2·(a+b)``), whose produced events differ from what is on the topic,
     whose history disagrees with the topics (more than one distinct service call or completion per
     workflow, consumed ids not those on the orchestrator's topic), and any stray instance record.
     For ``timers``: a workflow that timed out although answered or the reverse (final state
     ``answered``/``timed_out``, completion data), a timed-out workflow whose history is not
     init + one timer event (due at the init's ``time`` + ``timeoutMs``), an answered one whose
     consumed ids are not init + the answer, a done record still listing pending timers, and any
     timer event published before its due time;
   * **duplicates**: every event id seen more than once across the topics (dead-letter topic aside);
     **nonidentical_duplicates**: those whose copies' record values are not byte-identical;
   * **parked**: dead letters with reason ``parked`` (a record whose retries ran out);
     **dead_lettered**: every other dead letter (``no_state`` — an event for an instance whose state
     vanished —, ``unpublishable``, ...). None is expected: nothing here is the events' fault.

It ends with one line on stdout::

    completed=<n> lost=<n> divergent=<n> duplicates=<n> nonidentical_duplicates=<n> parked=<n> dead_lettered=<n>

to which ``timers`` adds `` late_timers_p99_ms=<n>``: how late the timers fired, measured on the
broker — the Kafka timestamp of a timer event's record (when the scheduler produced it) minus its
``data.dueMs`` — as the 99th percentile (nearest rank) over the timers of the workflows that timed
out, each timer counted once, by its first copy (later copies of the same event are republications:
counted as duplicates, not as lateness). The stale timers of answered workflows are excluded (they
normally do not come due during the run). The p50, the maximum and how many timers were armed only
after their due time (their init step was itself delayed by a fault) go to stderr.

and exits 1 unless ``lost``, ``divergent``, ``nonidentical_duplicates``, ``parked`` and
``dead_lettered`` are 0 (2 when the set-up itself failed). Progress and diagnostics go to stderr
(dead letters by reason, and how many workflows they hit); worker, broker and Redis logs stay in
``--workdir`` (a temporary directory, kept when the run fails or with ``--keep-logs``). Children are
always killed on exit, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from contracts.bench import bench_machine_contract, bench_resumable_contract, bench_timeout_contract
from service.arvo.event import ArvoEvent, create_timestamp
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestration.timers import TIMER_EVENT_TYPE
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples import bench_app
from service.examples.timers import timers_app
from service.runtime.client import ArvoClient
from service.runtime.dlq import DeadLetterEntry
from service.runtime.redis_memory import DEFAULT_SOCKET_TIMEOUT_S, RedisMemory
from service.runtime.retry import RetryPolicy
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings, env_var_name, load_settings
from tests.integration._kafka import start_tansu
from tests.integration._redis import PrivateRedisServer

__all__ = [
    "FAULTS",
    "RESULT_LINE",
    "CrashReport",
    "CrashRun",
    "main",
    "retry_budget_s",
    "run_crash_test",
    "run_in_subprocess",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT_LINE = re.compile(
    r"^completed=(?P<completed>\d+) lost=(?P<lost>\d+) divergent=(?P<divergent>\d+) "
    r"duplicates=(?P<duplicates>\d+) nonidentical_duplicates=(?P<nonidentical_duplicates>\d+) "
    r"parked=(?P<parked>\d+) dead_lettered=(?P<dead_lettered>\d+)"
    r"(?: late_timers_p99_ms=(?P<late_timers_p99_ms>\d+))?$"
)
"""The last line on stdout (``late_timers_p99_ms`` with ``--fault timers`` only)."""
CLIENT = "com.crash.client"
APP = "service.examples:bench_app"
TIMERS_APP = "service.examples.timers:timers_app"
"""The app of ``--fault timers``: the ``arvo.orc.bench.timeout`` orchestrator and ``com.bench.maybe``."""
TIMED_OUT_MS = (1_000, 8_000)
"""``timers``: the range of ``timeoutMs`` of the workflows that time out (even ``b``), counted from the
moment their init event is published — it spans a wave's kill, restart and rejoin and the next wave's."""
ANSWERED_MS = (60_000, 90_000)
"""``timers``: the range of ``timeoutMs`` of the workflows that are answered (odd ``b``): far beyond any
delay a kill causes (a session time-out plus a lease TTL, seconds), so the answer always wins."""
WORKER_FAULTS = frozenset({"worker-kill", "timers"})
"""The fault modes that kill workers only (they may use ``--redis-url``; no AOF needed)."""
PARTITIONS = 4
WORKERS = 2
JOIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
BURST_S = 0.5
"""How long each wave of init events trickles in."""
KILL_WITHIN_S = 1.0
"""A kill lands at a random moment within this long after a wave started (the workers are busy then)."""
ORCHESTRATOR_TOPIC_EVENTS = 3
"""Distinct events an instance consumes: init, add reply, double reply."""
FAULTS = {"worker-kill": 5, "redis-restart": 5, "redis-outage": 2, "timers": 5}
"""The fault modes and how many faults each injects by default (an outage lasts tens of seconds)."""
PERSISTENCE = {
    "always": ["--appendonly", "yes", "--appendfsync", "always"],
    "everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
    "none": [],  # PrivateRedisServer's own: --save "" --appendonly no
}
"""``--redis-persistence``: the private Redis's extra command-line arguments."""
STALL_S = 60.0
"""Stop waiting for the workflows when none finished for this long (parked ones never will)."""
REDIS_DOWN_S = (0.2, 1.5)
"""``redis-restart``: how long Redis stays down between the ``kill -9`` and the restart."""


def log(message: str) -> None:
    """Progress and diagnostics (stderr, so stdout carries only the result line)."""
    print(f"[crash-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Child processes


class Children:
    """Every process this test starts, killed on exit whatever happens."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], *, stdout: Path, stderr: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with stdout.open("ab") as out, stderr.open("ab") as err:
            process = subprocess.Popen(
                list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT
            )
        self._processes.append(process)
        return process

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        """Kill ``process`` on exit too (started elsewhere)."""
        self._processes.append(process)

    def kill_all(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self._processes.clear()


async def start_broker(children: Children, workdir: Path) -> str:
    bootstrap, process = start_tansu(workdir / "tansu.log")
    children.adopt(process)
    return bootstrap


async def start_private_redis(
    children: Children, workdir: Path, persistence: str
) -> PrivateRedisServer | None:
    if shutil.which("redis-server") is None:
        return None
    server = PrivateRedisServer(directory=workdir / "redis", extra_args=PERSISTENCE[persistence])
    start_redis(server, children)
    return server


def start_redis(server: PrivateRedisServer, children: Children) -> None:
    """(Re)start ``server`` on its port and directory (an AOF is loaded before it answers PING)."""
    server.start(timeout_s=60)
    assert server.process is not None
    children.adopt(server.process)


@dataclass
class Worker:
    """One worker slot; every (re)start is a new process with its own log files."""

    index: int
    env: dict[str, str]
    children: Children
    workdir: Path
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"worker{self.index}-{self.generation}.out"

    def start(self) -> None:
        self.generation += 1
        env = {**self.env, env_var_name("kafka_client_id"): f"crash-worker{self.index}-{self.generation}"}
        self.process = self.children.spawn(
            [sys.executable, "-m", "tests.fault.worker"],
            stdout=self.stdout_path,
            stderr=self.workdir / f"worker{self.index}-{self.generation}.log",
            env=env,
        )

    def kill(self) -> None:
        """``kill -9``: no drain, no commit, no lease release."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.kills += 1

    def assigned(self) -> int | None:
        """Partitions reported by the running process's last ``ASSIGNED`` line (``None`` if none yet)."""
        try:
            lines = self.stdout_path.read_text().splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            if line.startswith("ASSIGNED "):
                return int(line.split()[1])
        return None

    async def wait_joined(self, timeout_s: float = JOIN_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"worker {self.index} exited with {self.process.returncode}; see {self.stdout_path}"
                )
            count = self.assigned()
            if count:
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        """SIGTERM (graceful drain and commit), SIGKILL after a bound."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.poll() is None:
            log(f"worker {self.index} ignored SIGTERM for {STOP_TIMEOUT_S} s; killing it")
            process.kill()
            process.wait(timeout=10)


# --------------------------------------------------------------------------------------------------
# Workflows and settings


@dataclass(frozen=True)
class Workflow:
    """One published workflow: a bench one (``kind`` ``orchestrator`` or ``resumable``) or a timer one
    (``kind`` ``timeout``, with its ``timeout_ms``)."""

    kind: str
    a: int
    b: int
    init: ArvoEvent
    instance_key: str
    timeout_ms: int = 0

    @property
    def expected(self) -> int:
        """A bench workflow's result."""
        return 2 * (self.a + self.b)

    @property
    def times_out(self) -> bool:
        """A timer workflow that nobody answers (``com.bench.maybe`` answers an odd ``b`` only)."""
        return self.b % 2 == 0

    @property
    def expected_completion(self) -> dict[str, Any]:
        """The completion event's data."""
        if self.kind != "timeout":
            return {"result": self.expected}
        if self.times_out:
            return {"result": -1, "timedOut": True}
        return {"result": self.a + self.b, "timedOut": False}

    def to_publish(self) -> ArvoEvent:
        """The init event as published: a timer workflow's ``time`` — the start of its timer — is now."""
        if self.kind == "timeout":
            return self.init.replace(time=create_timestamp())
        return self.init


def make_workflows(count: int, rng: random.Random) -> list[Workflow]:
    factories = {
        "orchestrator": create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")),
        "resumable": create_arvo_orchestrator_event_factory(bench_resumable_contract.version("1.0.0")),
    }
    workflows: list[Workflow] = []
    for index in range(count):
        kind = "orchestrator" if index % 2 == 0 else "resumable"
        if rng.random() < 0.2:  # an uneven mix, still both kinds
            kind = "resumable" if kind == "orchestrator" else "orchestrator"
        a, b = rng.randint(-1000, 1000), rng.randint(0, 1000)
        init = factories[kind].init(source=CLIENT, data={"a": a, "b": b, "parentSubject$$": None})
        key = ArvoOrchestrationSubject.parse(init.subject).instance_key
        workflows.append(Workflow(kind=kind, a=a, b=b, init=init, instance_key=key))
    return workflows


def make_timer_workflows(count: int, rng: random.Random) -> list[Workflow]:
    """Timer workflows: every other one times out (even ``b``, ``TIMED_OUT_MS``), the rest are answered
    (odd ``b``, ``ANSWERED_MS``)."""
    factory = create_arvo_orchestrator_event_factory(bench_timeout_contract.version("1.0.0"))
    workflows: list[Workflow] = []
    for index in range(count):
        times_out = index % 2 == 0
        a = rng.randint(-1000, 1000)
        b = 2 * rng.randint(0, 500) + (0 if times_out else 1)
        timeout_ms = rng.randint(*(TIMED_OUT_MS if times_out else ANSWERED_MS))
        init = factory.init(
            source=CLIENT, data={"a": a, "b": b, "timeoutMs": timeout_ms, "parentSubject$$": None}
        )
        key = ArvoOrchestrationSubject.parse(init.subject).instance_key
        workflows.append(
            Workflow(kind="timeout", a=a, b=b, init=init, instance_key=key, timeout_ms=timeout_ms)
        )
    return workflows


def service_values(
    *,
    bootstrap: str,
    redis_url: str,
    prefix: str,
    names: str,
    retry_max_attempts: int = 8,
    retry_max_ms: int = 1_000,
    lease_ttl_ms: int = 6_000,
    app: str = APP,
) -> dict[str, Any]:
    """The workers' settings (also exported to them as ``ARVO_*`` variables)."""
    return {
        "kafka_bootstrap_servers": bootstrap,
        "consumer_group": f"{names}-group",
        "topic_prefix": f"{names}.",
        "topic_partitions": PARTITIONS,
        "create_topics": True,
        "producer_idempotence": False,  # Tansu's memory storage refuses InitProducerId
        "producer_acks": "all",
        "producer_linger_ms": 0,
        "fetch_max_wait_ms": 20,
        "session_timeout_ms": 2_000,
        "heartbeat_interval_ms": 300,
        "commit_interval_ms": 50,
        "drain_timeout_s": 5.0,
        "retry_initial_ms": 20,
        "retry_max_ms": retry_max_ms,
        "retry_max_attempts": retry_max_attempts,
        "lease_ttl_ms": lease_ttl_ms,  # 6 s outlives the ~3 s until a dead member's partitions move
        "handler_timeout_s": min(4.0, lease_ttl_ms / 1_500),  # below the lease TTL
        "auto_offset_reset": "earliest",
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "app": app,
        "health_port": 0,
        "log_format": "json",
    }


def retry_budget_s(settings: ServiceSettings) -> float:
    """How long a record retries a failing Redis before it would be parked, were failures counted.

    Every attempt against a stopped Redis lasts the client's socket time-out (or the handler
    time-out, whichever is shorter); between attempts the backoff caps. Lease denials are waited out
    without counting for twice the lease TTL; the larger of the two is the budget an outage must
    outlast to prove that an outage never spends it.
    """
    policy = RetryPolicy.from_settings(settings)
    attempt_s = min(DEFAULT_SOCKET_TIMEOUT_S, settings.handler_timeout_s)
    backoff_s = sum(policy.cap_ms(retry) for retry in range(policy.max_attempts - 1)) / 1000
    return max(policy.max_attempts * attempt_s + backoff_s, 2 * settings.lease_ttl_ms / 1000)


def worker_env(values: dict[str, Any]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ARVO_")}
    for name, value in values.items():
        env[env_var_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class CrashReport:
    """Counts of the final check (and diagnostics)."""

    workflows: int
    completed: int = 0
    lost: int = 0
    divergent: int = 0
    duplicates: int = 0
    nonidentical_duplicates: int = 0
    parked: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason (``parked`` included)."""
    dead_lettered_workflows: dict[str, set[str]] = field(default_factory=dict)
    """Per reason, the instance keys of the published workflows its dead letters belong to."""
    lost_kinds: Counter[str] = field(default_factory=Counter)
    """The lost workflows by what is left of them (record status, completion published or not)."""
    faults: int = 0
    problems: list[str] = field(default_factory=list)
    late_timers_ms: list[int] | None = None
    """``timers``: how late each timed-out workflow's timer fired (ms, sorted); ``None`` in other modes."""
    timers_armed_late: int = 0
    """``timers``: timers armed only after they were due (their init step was delayed by a fault)."""
    stale_timers: int = 0
    """``timers``: timer events of answered workflows that were published (ignored by the instances)."""

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.divergent or self.nonidentical_duplicates or self.parked or self.dead_lettered
        )

    def late_timers_percentile(self, percent: float) -> int:
        """A nearest-rank percentile of :attr:`late_timers_ms` (0 without any)."""
        late = self.late_timers_ms or []
        if not late:
            return 0
        return late[max(0, math.ceil(percent / 100 * len(late)) - 1)]

    def line(self) -> str:
        line = (
            f"completed={self.completed} lost={self.lost} divergent={self.divergent} "
            f"duplicates={self.duplicates} nonidentical_duplicates={self.nonidentical_duplicates} "
            f"parked={self.parked} dead_lettered={self.dead_lettered}"
        )
        if self.late_timers_ms is not None:
            line += f" late_timers_p99_ms={max(0, self.late_timers_percentile(99))}"
        return line

    def timer_summary(self) -> str:
        """How late the timers fired (stderr)."""
        late = self.late_timers_ms or []
        return (
            f"{len(late)} timers of timed-out workflows fired, late by p50 {self.late_timers_percentile(50)} ms, "
            f"p99 {self.late_timers_percentile(99)} ms, max {late[-1] if late else 0} ms; "
            f"{self.timers_armed_late} armed after their due time (a delayed init step); "
            f"{self.stale_timers} stale timer events of answered workflows published"
        )

    def dead_letter_summary(self) -> str:
        """``no_state: 12 dead letters, 7 workflows; parked: ...`` (or ``none``)."""
        return (
            "; ".join(
                f"{reason}: {count} dead letters, {len(self.dead_lettered_workflows.get(reason, ()))} workflows"
                for reason, count in sorted(self.dead_letter_reasons.items())
            )
            or "none"
        )


async def publish(client: ArvoClient, workflows: Sequence[Workflow]) -> None:
    """Publish the workflows' init events as one batch (routed and keyed as the service does)."""
    await client.publish([workflow.to_publish() for workflow in workflows])


async def count_done(memory: RedisMemory, workflows: Sequence[Workflow]) -> int | None:
    """Workflows whose record is ``done``; ``None`` while Redis does not answer (a fault mode)."""
    keys = [memory.instance_keys(workflow.instance_key).state for workflow in workflows]
    done = 0
    try:
        for start in range(0, len(keys), 500):
            for raw in await memory.client.mget(keys[start : start + 500]):
                if raw is not None and orjson.loads(raw).get("status") == "done":
                    done += 1
    except Exception as error:  # Redis stopped or restarting: ask again later
        log(f"cannot count the done workflows now: {error!r}")
        return None
    return done


async def wait_all_done(
    memory: RedisMemory, workflows: Sequence[Workflow], deadline: float, *, stall_s: float = STALL_S
) -> int:
    """Wait until every workflow is done, the deadline passed, or nothing finished for ``stall_s``."""
    last_report = 0.0
    done = 0
    progress_at = time.monotonic()
    while True:
        counted = await count_done(memory, workflows)
        if counted is not None and counted != done:
            done, progress_at = counted, time.monotonic()
        if done == len(workflows) or time.monotonic() > deadline:
            return done
        if time.monotonic() - progress_at > stall_s:
            log(f"no workflow finished for {stall_s:g} s; the rest will not (see the problems below)")
            return done
        if time.monotonic() - last_report > 5:
            log(f"{done}/{len(workflows)} workflows done")
            last_report = time.monotonic()
        await asyncio.sleep(0.25)


async def trickle(client: ArvoClient, workflows: Sequence[Workflow], *, duration_s: float) -> None:
    """Publish ``workflows`` in small groups spread over ``duration_s`` (work keeps arriving)."""
    groups = max(1, min(len(workflows), int(duration_s / 0.05)))
    size = -(-len(workflows) // groups)
    for start in range(0, len(workflows), size):
        await publish(client, workflows[start : start + size])
        await asyncio.sleep(duration_s / groups)


class Fault:
    """One fault mode: :meth:`inject` hits the system once (and undoes the damage), :meth:`settled`
    waits until it has recovered; ``downtime_s`` adds up the time the fault kept the work stopped."""

    downtime_s: float = 0.0
    strike_within_s: float = BURST_S * 0.8
    """The fault lands at a random moment this long after a wave started (by default while the wave
    is still being published, so records keep arriving while Redis cannot serve them)."""

    async def inject(self, number: int, rng: random.Random) -> None:
        raise NotImplementedError

    async def settled(self) -> None:
        """Wait until the system has recovered from the last :meth:`inject` (default: nothing to wait for)."""


class WorkerKill(Fault):
    """``kill -9`` a random worker, restart it a random moment later; settled once it has rejoined."""

    strike_within_s = KILL_WITHIN_S

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.victim: Worker | None = None

    async def inject(self, number: int, rng: random.Random) -> None:
        victim = self.victim = rng.choice(self.workers)
        victim.kill()
        log(f"kill -9 #{number}: worker {victim.index} (generation {victim.generation})")
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        victim.start()

    async def settled(self) -> None:
        victim = self.victim
        if victim is None:
            return
        if not await victim.wait_joined():
            log(f"worker {victim.index} did not get partitions within {JOIN_TIMEOUT_S} s; carrying on")
        else:
            log(f"worker {victim.index} rejoined (generation {victim.generation})")


class RedisRestart(Fault):
    """``kill -9`` the private Redis under load; restart it (same port, same AOF) after a random moment."""

    def __init__(self, server: PrivateRedisServer, children: Children) -> None:
        self.server = server
        self.children = children

    async def inject(self, number: int, rng: random.Random) -> None:
        await asyncio.to_thread(self.server.stop, sig=signal.SIGKILL)
        down_s = rng.uniform(*REDIS_DOWN_S)
        log(f"kill -9 #{number}: redis-server (down for {down_s:.2f} s)")
        started = time.monotonic()
        await asyncio.sleep(down_s)
        await asyncio.to_thread(start_redis, self.server, self.children)
        self.downtime_s += time.monotonic() - started
        log(f"redis-server restarted after {time.monotonic() - started:.2f} s")


class RedisOutage(Fault):
    """``SIGSTOP`` the private Redis for ``outage_s`` (it accepts connections, answers nothing), then
    ``SIGCONT``."""

    def __init__(self, server: PrivateRedisServer, outage_s: float) -> None:
        self.server = server
        self.outage_s = outage_s

    async def inject(self, number: int, rng: random.Random) -> None:
        process = self.server.process
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        log(f"SIGSTOP #{number}: redis-server for {self.outage_s:.1f} s")
        try:
            await asyncio.sleep(self.outage_s)
        finally:
            process.send_signal(signal.SIGCONT)
        self.downtime_s += self.outage_s
        log("SIGCONT: redis-server runs again")


async def storm(
    *,
    fault: Fault,
    client: ArvoClient,
    workflows: list[Workflow],
    faults: int,
    rng: random.Random,
) -> None:
    """Publish the workflows in ``faults + 1`` waves; during each but the last, inject the fault once.

    Each wave trickles in over ``BURST_S`` seconds and the fault lands at a random moment within
    ``fault.strike_within_s`` of its start, while the workers work through it: records are in flight
    (leases held, emissions half published, offsets uncommitted) when it hits.
    """
    waves = faults + 1
    size = -(-len(workflows) // waves)
    for wave in range(waves):
        batch = workflows[wave * size : (wave + 1) * size]
        publishing = asyncio.create_task(trickle(client, batch, duration_s=BURST_S))
        if wave == faults:
            await publishing
            break
        await asyncio.sleep(rng.uniform(0.05, fault.strike_within_s))
        await fault.inject(wave + 1, rng)
        await publishing
        await fault.settled()


async def read_all_topics(client: ArvoClient, prefix: str) -> dict[str, list[Any]]:
    """Every record of every topic starting with ``prefix``, read to the end with manual assignment."""
    return await client.read_topics(await client.list_topics(prefix), timeout_s=120)


def consumed_event_id(key: str) -> str:
    """The event id in an instance's consumed-ids ring entry: ``@<source>/<domain>/<id>`` (the source
    percent-escaped) or, written by older versions, ``<domain>/<id>``."""
    if key.startswith("@"):
        return key.split("/", 2)[2]
    return key.partition("/")[2]


@dataclass
class TopicContents:
    """What :func:`read_events` gathered from the topics (dead letters aside)."""

    decoded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each event id's first decoded copy."""
    by_topic_subject: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    """The distinct event ids per topic and subject, in the order they were read."""
    first_timestamp: dict[str, int] = field(default_factory=dict)
    """Each event id's earliest Kafka record timestamp (ms) over its copies."""


def read_events(
    report: CrashReport,
    *,
    workflows: Sequence[Workflow],
    records: dict[str, list[Any]],
    dlq_topic: str,
) -> TopicContents:
    """Count the dead letters and the duplicates in ``report``; index the other events."""

    def problem(text: str) -> None:
        report.problems.append(text)

    # Duplicates: every copy of an event id must carry the same bytes (the DLQ keeps originals aside).
    copies: dict[str, list[bytes]] = defaultdict(list)
    seen = TopicContents()
    by_subject = {workflow.init.subject: workflow.instance_key for workflow in workflows}
    for topic, items in records.items():
        if topic == dlq_topic:
            for record in items:
                letter = DeadLetterEntry.from_record(
                    topic=topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=record.headers,
                )
                report.dead_letter_reasons[letter.reason] += 1
                if letter.reason == "parked":
                    report.parked += 1
                else:
                    report.dead_lettered += 1
                instance = by_subject.get((letter.key or b"").decode("utf-8", errors="replace"))
                if instance is not None:
                    report.dead_lettered_workflows.setdefault(letter.reason, set()).add(instance)
                if len(report.dead_letter_reasons) <= 5 and report.dead_letter_reasons[letter.reason] <= 3:
                    problem(
                        f"dead letter {letter.reason} ({letter.error_class}: {letter.error_message[:200]}) "
                        f"from {letter.origin_topic}/{letter.origin_partition}@{letter.origin_offset}"
                    )
            continue
        for record in items:
            try:
                event = orjson.loads(record.value)
                event_id = event["id"]
            except (orjson.JSONDecodeError, TypeError, KeyError):
                problem(f"undecodable record on {topic}/{record.partition}@{record.offset}")
                continue
            copies[event_id].append(bytes(record.value))
            seen.decoded.setdefault(event_id, event)
            timestamp = int(record.timestamp)
            seen.first_timestamp[event_id] = min(seen.first_timestamp.get(event_id, timestamp), timestamp)
            ids = seen.by_topic_subject[(topic, event["subject"])]
            if event_id not in ids:
                ids.append(event_id)
    for event_id, values in copies.items():
        if len(values) > 1:
            report.duplicates += len(values) - 1
            if any(value != values[0] for value in values[1:]):
                report.nonidentical_duplicates += 1
                problem(f"event {event_id} has {len(values)} copies that are not byte-identical")
    return seen


def check(
    report: CrashReport,
    *,
    workflows: Sequence[Workflow],
    states: dict[str, dict[str, Any] | None],
    stray_instances: int,
    records: dict[str, list[Any]],
    router: TopicRouter,
    dlq_topic: str,
) -> None:
    """Fill ``report`` from the final Redis records and the topics' contents."""

    def problem(text: str) -> None:
        report.problems.append(text)

    seen = read_events(report, workflows=workflows, records=records, dlq_topic=dlq_topic)
    client_topic = router.handler_topic(CLIENT)
    timers = TimerChecks()
    for workflow in workflows:
        subject = workflow.init.subject
        completions = seen.by_topic_subject.get((client_topic, subject), [])
        record = states.get(workflow.instance_key)
        if record is None or record.get("status") != "done" or record.get("completed") is not True:
            report.lost += 1
            status = None if record is None else record.get("status")
            outcome = "completion published" if completions else "never completed"
            report.lost_kinds[f"record {status or 'missing'}, {outcome}"] += 1
            problem(f"lost: {workflow.kind} {workflow.instance_key} record status {status!r}, {outcome}")
            continue
        if not completions:
            report.lost += 1
            report.lost_kinds["record done, completion never published"] += 1
            problem(
                f"lost: {workflow.kind} {workflow.instance_key} is done but its completion was never published"
            )
            continue
        report.completed += 1
        issues = _history_issues(workflow, record, completions, seen, router)
        if workflow.kind == "timeout":
            issues += _timer_issues(workflow, record, seen, router, timers)
        else:
            issues += _bench_issues(workflow, record, seen, router)
        if issues:
            report.divergent += 1
            problem(f"divergent: {workflow.kind} {workflow.instance_key}: " + "; ".join(issues))
    if stray_instances:
        report.divergent += stray_instances
        problem(f"{stray_instances} instance records that belong to no published workflow")
    if any(workflow.kind == "timeout" for workflow in workflows):
        report.late_timers_ms = sorted(timers.late_ms)
        report.timers_armed_late = timers.armed_late
        report.stale_timers = timers.stale


def _history_issues(
    workflow: Workflow,
    record: dict[str, Any],
    completions: list[str],
    seen: TopicContents,
    router: TopicRouter,
) -> list[str]:
    """What every kind of workflow must satisfy: the consumed-id ring, one completion as stored."""
    issues: list[str] = []
    ring: list[str] = record.get("consumedIds") or []
    if len(ring) != len(set(ring)):
        issues.append(f"consumedIds repeat: {ring}")
    if len(completions) != 1:
        issues.append(f"{len(completions)} distinct completion events (expected 1)")
    if record.get("executionStatus") != "normal":
        issues.append(f"executionStatus {record.get('executionStatus')!r}")
    expected = workflow.expected_completion
    produced: list[dict[str, Any]] = (record.get("events") or {}).get("produced") or []
    complete_type = f"{workflow.init.type}.done"
    if (
        len(produced) != 1
        or produced[0].get("type") != complete_type
        or produced[0].get("data") != expected
        or produced[0].get("parentid") != workflow.init.id
    ):
        issues.append(f"produced events {produced!r} are not the one completion with data {expected}")
    else:
        published = seen.decoded.get(produced[0]["id"])
        if published is None or published != produced[0]:
            issues.append("the stored completion differs from the published one (or was never published)")
    if completions and seen.decoded[completions[0]].get("data") != expected:
        issues.append(f"published data {seen.decoded[completions[0]].get('data')!r} != {expected}")
    return issues


def _bench_issues(
    workflow: Workflow, record: dict[str, Any], seen: TopicContents, router: TopicRouter
) -> list[str]:
    """A bench workflow: init, add reply, double reply consumed; one call of each service; its state."""
    issues: list[str] = []
    subject = workflow.init.subject
    own_topic = router.route_event(workflow.init)
    ring: list[str] = record.get("consumedIds") or []
    consumed_on_topic = seen.by_topic_subject.get((own_topic, subject), [])
    if [consumed_event_id(key) for key in ring] != consumed_on_topic:
        issues.append(f"consumedIds {ring} are not the events on {own_topic}: {consumed_on_topic}")
    if len(consumed_on_topic) != ORCHESTRATOR_TOPIC_EVENTS:
        issues.append(f"{len(consumed_on_topic)} distinct events on {own_topic} (expected 3)")
    for service in ("com.bench.add", "com.bench.double"):
        service_topic = router.handler_topic(service)
        calls = seen.by_topic_subject.get((service_topic, subject), [])
        if len(calls) != 1:
            issues.append(f"{len(calls)} distinct calls on {service_topic} (expected 1)")
    if workflow.kind == "orchestrator":
        state = record.get("state") or {}
        if record.get("value") != "done" or state.get("value") != "done":
            issues.append(f"machine value {record.get('value')!r}")
        if (state.get("context") or {}).get("result") != workflow.expected:
            issues.append(f"context result {(state.get('context') or {}).get('result')!r}")
    elif record.get("state$$") != {"a": workflow.a, "b": workflow.b}:
        issues.append(f"resumable state {record.get('state$$')!r}")
    return issues


@dataclass
class TimerChecks:
    """What the timer workflows' checks gather for the report."""

    late_ms: list[int] = field(default_factory=list)
    """Per timed-out workflow: its timer event's first record timestamp minus its ``dueMs``."""
    armed_late: int = 0
    """Timers whose call (emitted in the same step that armed them) was published after their due time."""
    stale: int = 0
    """Timer events of answered workflows that were published (and must have been ignored)."""


def _timer_issues(
    workflow: Workflow,
    record: dict[str, Any],
    seen: TopicContents,
    router: TopicRouter,
    timers: TimerChecks,
) -> list[str]:
    """A timer workflow: the path its ``b`` dictates, its one call, its timer's due time and firing."""
    issues: list[str] = []
    subject = workflow.init.subject
    own_topic = router.route_event(workflow.init)
    on_topic = seen.by_topic_subject.get((own_topic, subject), [])
    timer_ids = [event_id for event_id in on_topic if seen.decoded[event_id].get("type") == TIMER_EVENT_TYPE]
    others = [event_id for event_id in on_topic if event_id not in timer_ids]
    ring = [consumed_event_id(key) for key in record.get("consumedIds") or []]
    calls = seen.by_topic_subject.get((router.handler_topic("com.bench.maybe"), subject), [])
    if len(calls) != 1:
        issues.append(f"{len(calls)} distinct calls of com.bench.maybe (expected 1)")
    state = record.get("state") or {}
    context = state.get("context") or {}
    final = "timed_out" if workflow.times_out else "answered"
    if record.get("value") != final or state.get("value") != final:
        issues.append(f"machine value {record.get('value')!r} (expected {final!r})")
    expected = workflow.expected_completion
    if {"result": context.get("result"), "timedOut": context.get("timedOut")} != expected:
        issues.append(f"context {context!r} does not hold {expected}")
    if record.get("timers"):
        issues.append(f"the done record still lists timers {record.get('timers')!r}")
    published_init = seen.decoded.get(workflow.init.id)
    if published_init is None:
        return [*issues, "its init event is not on its topic"]
    due_ms = datetime.fromisoformat(published_init["time"]).timestamp() * 1000 + workflow.timeout_ms
    for event_id in timer_ids:
        data = seen.decoded[event_id].get("data") or {}
        fired_at = seen.first_timestamp[event_id]
        if not isinstance(data.get("dueMs"), int) or abs(data["dueMs"] - due_ms) > 1:
            issues.append(f"timer event {event_id} due {data.get('dueMs')!r}, expected {due_ms:.0f}")
        elif fired_at < data["dueMs"]:
            issues.append(f"timer event {event_id} published {data['dueMs'] - fired_at} ms before it was due")
    if workflow.times_out:
        if others != [workflow.init.id] or len(timer_ids) != 1:
            issues.append(f"events on {own_topic} {on_topic} are not the init event and one timer event")
        elif ring != [workflow.init.id, timer_ids[0]]:
            issues.append(f"consumedIds {ring} are not the init event and the timer event")
        else:
            timer = seen.decoded[timer_ids[0]]["data"]
            timers.late_ms.append(seen.first_timestamp[timer_ids[0]] - int(timer["dueMs"]))
            if calls and seen.first_timestamp[calls[0]] > timer["dueMs"]:
                timers.armed_late += 1
    else:
        timers.stale += len(timer_ids)
        if len(others) != 2 or others[0] != workflow.init.id or len(timer_ids) > 1:
            issues.append(
                f"events on {own_topic} {on_topic} are not the init event, the answer (and a timer)"
            )
        elif ring != others:
            issues.append(f"consumedIds {ring} are not the init event and the answer {others}")
    return issues


async def run_crash_test(options: argparse.Namespace, children: Children, workdir: Path) -> CrashReport:
    """The whole scenario; raises on set-up failures (the caller kills the children)."""
    rng = random.Random(options.seed)
    started = time.monotonic()
    bootstrap = await start_broker(children, workdir)
    server = (
        None if options.redis_url else await start_private_redis(children, workdir, options.redis_persistence)
    )
    if server is None and options.fault not in WORKER_FAULTS:
        raise RuntimeError(f"--fault {options.fault} needs redis-server on PATH (a private Redis)")
    redis_url = options.redis_url or (server.url if server else None) or "redis://127.0.0.1:6379/0"
    names = f"crash{uuid.uuid4().hex[:10]}"
    prefix = f"arvocrash:{names}"
    values = service_values(
        bootstrap=bootstrap,
        redis_url=redis_url,
        prefix=prefix,
        names=names,
        retry_max_attempts=options.retry_max_attempts,
        retry_max_ms=options.retry_max_ms,
        lease_ttl_ms=options.lease_ttl_ms,
        app=TIMERS_APP if options.fault == "timers" else APP,
    )
    settings: ServiceSettings = load_settings(env_file=None, **values)
    router = TopicRouter.from_settings(settings)
    persistence = f"persistence {options.redis_persistence}" if server else "shared"
    log(
        f"fault {options.fault} x{options.faults}, broker {bootstrap}, redis {redis_url} ({persistence}, "
        f"prefix {prefix}), topics {settings.topic_prefix}*, seed {options.seed}, workdir {workdir}"
    )
    app = timers_app if options.fault == "timers" else bench_app
    sources = [handler.source for handler in app(InMemoryMemory())]
    topics = [router.handler_topic(source) for source in [*sources, CLIENT]]
    client = ArvoClient(settings, router=router)  # topic_partitions is PARTITIONS
    await client.ensure_topics([*topics, settings.dead_letter_topic_name])

    memory = RedisMemory.from_url(redis_url, key_prefix=prefix)
    workers = [
        Worker(index=index, env=worker_env(values), children=children, workdir=workdir)
        for index in range(1, WORKERS + 1)
    ]
    fault: Fault
    if options.fault in WORKER_FAULTS:
        fault = WorkerKill(workers)
    elif options.fault == "redis-restart":
        assert server is not None
        fault = RedisRestart(server, children)
    else:
        assert server is not None
        budget_s = retry_budget_s(settings)
        outage_s = options.outage_s if options.outage_s is not None else budget_s + 5.0
        if outage_s <= budget_s:
            raise RuntimeError(f"--outage-s {outage_s:g} must outlast the retry budget ({budget_s:.1f} s)")
        log(f"a record's retry budget is {budget_s:.1f} s; each outage lasts {outage_s:.1f} s")
        fault = RedisOutage(server, outage_s)
    report = CrashReport(workflows=options.workflows)
    try:
        for worker in workers:  # one at a time: Tansu mis-assigns members joining together
            worker.start()
            if not await worker.wait_joined():
                raise RuntimeError(f"worker {worker.index} got no partitions within {JOIN_TIMEOUT_S} s")
        log(f"{WORKERS} workers up after {time.monotonic() - started:.1f} s")
        make = make_timer_workflows if options.fault == "timers" else make_workflows
        workflows = make(options.workflows, rng)
        await storm(fault=fault, client=client, workflows=workflows, faults=options.faults, rng=rng)
        report.faults = options.faults
        deadline = started + options.timeout + fault.downtime_s
        done = await wait_all_done(memory, workflows, deadline)
        log(
            f"{done}/{len(workflows)} workflows done after {time.monotonic() - started:.1f} s; stopping workers"
        )
        await asyncio.sleep(0.5)  # let the last commits and replays land
        await asyncio.gather(*(worker.stop() for worker in workers))
        states: dict[str, dict[str, Any] | None] = {}
        for workflow in workflows:
            states[workflow.instance_key] = await memory.inspect(workflow.instance_key)
        known = {workflow.instance_key for workflow in workflows}
        listed = await memory.list_instances(limit=10 * len(workflows) + 100)
        stray = sum(1 for row in listed if row.key not in known)
        records = await read_all_topics(client, settings.topic_prefix)
        check(
            report,
            workflows=workflows,
            states=states,
            stray_instances=stray,
            records=records,
            router=router,
            dlq_topic=settings.dead_letter_topic_name,
        )
        total = sum(len(items) for items in records.values())
        log(
            f"{total} records on {len(records)} topics, {report.faults} faults ({options.fault}), "
            f"{time.monotonic() - started:.1f} s; dead letters: {report.dead_letter_summary()}"
        )
        if report.late_timers_ms is not None:
            log(report.timer_summary())
    finally:
        await client.stop()
        if server is None:
            with contextlib.suppress(Exception):
                await _delete_prefix(memory.client, prefix)
        await memory.close()
    return report


async def _delete_prefix(client: Any, prefix: str) -> None:
    pattern = "".join(f"[{ch}]" if ch in "*?[]\\" else ch for ch in prefix) + ":*"
    keys = [key async for key in client.scan_iter(match=pattern, count=500)]
    for start in range(0, len(keys), 500):
        await client.unlink(*keys[start : start + 500])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fault.crash_test", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workflows", type=int, default=300, help="workflows to run (default 300)")
    parser.add_argument(
        "--fault",
        choices=sorted(FAULTS),
        default="worker-kill",
        help="what hits the system: kill -9 a worker (default), kill -9 Redis, SIGSTOP Redis, or "
        "kill -9 a worker under timer workflows (timers)",
    )
    parser.add_argument(
        "--faults",
        "--kills",
        dest="faults",
        type=int,
        default=None,
        help="how many times (default: "
        + ", ".join(f"{name} {count}" for name, count in FAULTS.items())
        + ")",
    )
    parser.add_argument(
        "--redis-persistence",
        choices=sorted(PERSISTENCE),
        default=None,
        help="the private Redis's durability: AOF with fsync always, AOF everysec, or none "
        "(default: none for worker-kill and timers, always for the Redis faults)",
    )
    parser.add_argument(
        "--outage-s",
        type=float,
        default=None,
        help="redis-outage: how long Redis is stopped (default: the retry budget + 5 s)",
    )
    parser.add_argument(
        "--retry-max-attempts", type=int, default=8, help="the workers' ARVO_RETRY_MAX_ATTEMPTS (default 8)"
    )
    parser.add_argument(
        "--retry-max-ms", type=int, default=1_000, help="the workers' ARVO_RETRY_MAX_MS (default 1000)"
    )
    parser.add_argument(
        "--lease-ttl-ms",
        type=int,
        default=6_000,
        help="the workers' ARVO_LEASE_TTL_MS (default 6000; the handler time-out is 2/3 of it, at most 4 s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of inputs, kill timing and victims")
    parser.add_argument(
        "--timeout", type=float, default=240.0, help="seconds until unfinished workflows count as lost"
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis (unique key prefix, cleaned) instead of a private one",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where logs go (default: a temporary directory)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs even when the run passes")
    options = parser.parse_args(argv)
    if options.faults is None:
        options.faults = FAULTS[options.fault]
    if options.redis_persistence is None:
        options.redis_persistence = "none" if options.fault in WORKER_FAULTS else "always"
    if options.workflows < 1 or options.faults < 0 or options.timeout <= 0:
        parser.error("--workflows must be >= 1, --faults >= 0 and --timeout > 0")
    if options.redis_url and options.fault not in WORKER_FAULTS:
        parser.error(
            f"--fault {options.fault} restarts or stops Redis: it needs the private one, not --redis-url"
        )
    if options.retry_max_attempts < 1 or options.retry_max_ms < 20 or options.lease_ttl_ms < 1_500:
        parser.error("--retry-max-attempts must be >= 1, --retry-max-ms >= 20 and --lease-ttl-ms >= 1500")
    return options


@dataclass(frozen=True)
class CrashRun:
    """A finished ``python -m tests.fault.crash_test`` run (:func:`run_in_subprocess`)."""

    counts: dict[str, int]
    """The result line's numbers by name (empty when there was no result line)."""
    returncode: int
    stdout: str
    stderr: str

    def worker_log_count(self, what: str) -> int:
        """A number of the ``worker logs:`` summary line on stderr, e.g. ``dependency outages met``."""
        found = re.search(rf"{re.escape(what)}: (\d+)", self.stderr)
        return int(found.group(1)) if found else 0


def run_in_subprocess(args: Sequence[str], *, timeout_s: float) -> CrashRun:
    """Run the crash test with ``args`` in a child process (as CI does) and parse its result line."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.fault.crash_test", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    match = RESULT_LINE.match(lines[-1]) if lines else None
    counts = (
        {name: int(value) for name, value in match.groupdict().items() if value is not None} if match else {}
    )
    return CrashRun(
        counts=counts, returncode=completed.returncode, stdout=completed.stdout, stderr=completed.stderr
    )


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    def raise_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_log_summary(workdir: Path) -> str:
    """What the workers' logs say about the recoveries (lease waits, retries, parked records, drains)."""
    counts: Counter[str] = Counter()
    for path in workdir.glob("worker*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "transient failure" in line:
                counts["lease waits" if "LeaseDeniedViolation" in line else "other retries"] += 1
            elif "dependency unavailable" in line:
                counts["dependency outages met"] += 1
            elif "event for an instance without state" in line:
                counts["no-state events"] += 1
            elif "record dead-lettered" in line:
                counts["dead-lettered"] += 1
            elif "drain timed out" in line:
                counts["drain time-outs"] += 1
            elif "partitions revoked" in line:
                counts["revokes"] += 1
    return ", ".join(f"{name}: {counts[name]}" for name in sorted(counts)) or "nothing notable"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the crash test; print the result line; 0 when nothing was lost, diverged or differed."""
    options = parse_args(argv)
    workdir: Path = options.workdir or Path(tempfile.mkdtemp(prefix="arvo-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        with _terminate_on_sigterm():
            report = asyncio.run(run_crash_test(options, children, workdir))
    except Exception:
        log(f"the crash test could not run:\n{traceback.format_exc()}logs kept in {workdir}")
        return 2
    finally:
        children.kill_all()
    log(f"worker logs: {worker_log_summary(workdir)}")
    if report.lost_kinds:
        log("lost workflows: " + ", ".join(f"{kind}: {n}" for kind, n in sorted(report.lost_kinds.items())))
    for text in report.problems[:30]:
        log(text)
    if len(report.problems) > 30:
        log(f"... and {len(report.problems) - 30} more problems")
    if report.ok and not options.keep_logs and options.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"logs kept in {workdir}")
    print(report.line(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
