"""Crash test: bench workflows across two worker processes while workers are ``kill -9``-ed and restarted.

``python -m tests.fault.crash_test --workflows 300 --kills 5`` (``make fault-test``):

1. starts its own Tansu broker (free port) and a private ``redis-server`` (or uses ``--redis-url``
   with a unique key prefix, deleted at the end), creates the topics with 4 partitions;
2. starts two workers (``python -m tests.fault.worker``: the full bench app — orchestrator,
   resumable and both services — as ``arvo run`` runs it), one after the other;
3. publishes the bench init events (orchestrator and resumable variants, ``a``/``b`` drawn from the
   seed) in bursts, and after each burst ``kill -9``-s a random worker at a random moment, restarts
   it and waits until it has rejoined the group;
4. waits until every workflow's record is ``done`` (or ``--timeout``), stops the workers, then reads
   every topic from the beginning (manual assignment) and checks:

   * **lost**: a workflow without a ``done`` record or without its completion event on the client
     topic;
   * **divergent**: a record whose consumed-id ring repeats, whose state or result is wrong
     (``value`` ``done``, result ``2·(a+b)``), whose produced events differ from what is on the topic,
     whose history disagrees with the topics (more than one distinct service call or completion per
     workflow, consumed ids not those on the orchestrator's topic), and any stray instance record;
   * **duplicates**: every event id seen more than once across the topics (dead-letter topic aside);
     **nonidentical_duplicates**: those whose copies' record values are not byte-identical.

It ends with one line on stdout::

    completed=<n> lost=<n> divergent=<n> duplicates=<n> nonidentical_duplicates=<n>

and exits 1 unless ``lost``, ``divergent`` and ``nonidentical_duplicates`` are 0 (2 when the set-up
itself failed). Progress and diagnostics go to stderr; worker and broker logs stay in ``--workdir``
(a temporary directory, kept when the run fails or with ``--keep-logs``). Children are always killed
on exit, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
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
from pathlib import Path
from typing import Any

import orjson

from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.subject import ArvoOrchestrationSubject
from service.examples import bench_app
from service.runtime.client import ArvoClient
from service.runtime.redis_memory import RedisMemory
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings, env_var_name, load_settings
from tests.integration._kafka import start_tansu
from tests.integration._redis import PrivateRedisServer

__all__ = ["CrashReport", "main", "run_crash_test"]

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT = "com.crash.client"
APP = "service.examples:bench_app"
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


async def start_private_redis(children: Children, workdir: Path) -> str | None:
    if shutil.which("redis-server") is None:
        return None
    server = PrivateRedisServer(directory=workdir / "redis")
    server.start()
    assert server.process is not None
    children.adopt(server.process)
    return server.url


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
    """One published bench workflow."""

    kind: str
    a: int
    b: int
    init: ArvoEvent
    instance_key: str

    @property
    def expected(self) -> int:
        return 2 * (self.a + self.b)


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


def service_values(*, bootstrap: str, redis_url: str, prefix: str, names: str) -> dict[str, Any]:
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
        "retry_max_ms": 1_000,
        "retry_max_attempts": 8,
        "lease_ttl_ms": 6_000,  # outlives the ~3 s until a dead member's partitions move
        "handler_timeout_s": 4.0,
        "auto_offset_reset": "earliest",
        "redis_url": redis_url,
        "redis_key_prefix": prefix,
        "app": APP,
        "health_port": 0,
        "log_format": "json",
    }


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
    dead_letters: int = 0
    kills: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.divergent == 0 and self.nonidentical_duplicates == 0

    def line(self) -> str:
        return (
            f"completed={self.completed} lost={self.lost} divergent={self.divergent} "
            f"duplicates={self.duplicates} nonidentical_duplicates={self.nonidentical_duplicates}"
        )


async def publish(client: ArvoClient, workflows: Sequence[Workflow]) -> None:
    """Publish the workflows' init events as one batch (routed and keyed as the service does)."""
    await client.publish([workflow.init for workflow in workflows])


async def count_done(memory: RedisMemory, workflows: Sequence[Workflow]) -> int:
    keys = [memory.instance_keys(workflow.instance_key).state for workflow in workflows]
    done = 0
    for start in range(0, len(keys), 500):
        for raw in await memory.client.mget(keys[start : start + 500]):
            if raw is not None and orjson.loads(raw).get("status") == "done":
                done += 1
    return done


async def wait_all_done(memory: RedisMemory, workflows: Sequence[Workflow], deadline: float) -> int:
    last_report = 0.0
    while True:
        done = await count_done(memory, workflows)
        if done == len(workflows) or time.monotonic() > deadline:
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


async def storm(
    *,
    workers: list[Worker],
    client: ArvoClient,
    workflows: list[Workflow],
    kills: int,
    rng: random.Random,
) -> None:
    """Publish the workflows in ``kills + 1`` waves; during each but the last, kill and restart a worker.

    Each wave trickles in over ``BURST_S`` seconds and the kill lands at a random moment within
    ``KILL_WITHIN_S`` of its start, while the workers work through it: records are in flight (leases
    held, emissions half published, offsets uncommitted) when it hits.
    """
    waves = kills + 1
    size = -(-len(workflows) // waves)
    for wave in range(waves):
        batch = workflows[wave * size : (wave + 1) * size]
        publishing = asyncio.create_task(trickle(client, batch, duration_s=BURST_S))
        if wave == kills:
            await publishing
            break
        await asyncio.sleep(rng.uniform(0.05, KILL_WITHIN_S))
        victim = rng.choice(workers)
        victim.kill()
        log(f"kill -9 #{wave + 1}: worker {victim.index} (generation {victim.generation})")
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        victim.start()
        await publishing
        if not await victim.wait_joined():
            log(f"worker {victim.index} did not get partitions within {JOIN_TIMEOUT_S} s; carrying on")
        else:
            log(f"worker {victim.index} rejoined (generation {victim.generation})")


async def read_all_topics(client: ArvoClient, prefix: str) -> dict[str, list[Any]]:
    """Every record of every topic starting with ``prefix``, read to the end with manual assignment."""
    return await client.read_topics(await client.list_topics(prefix), timeout_s=120)


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

    # Duplicates: every copy of an event id must carry the same bytes (the DLQ keeps originals aside).
    copies: dict[str, list[bytes]] = defaultdict(list)
    decoded: dict[str, dict[str, Any]] = {}
    by_topic_subject: dict[tuple[str, str], list[str]] = defaultdict(list)
    for topic, items in records.items():
        if topic == dlq_topic:
            report.dead_letters += len(items)
            continue
        for record in items:
            try:
                event = orjson.loads(record.value)
                event_id = event["id"]
            except (orjson.JSONDecodeError, TypeError, KeyError):
                problem(f"undecodable record on {topic}/{record.partition}@{record.offset}")
                continue
            copies[event_id].append(bytes(record.value))
            decoded.setdefault(event_id, event)
            ids = by_topic_subject[(topic, event["subject"])]
            if event_id not in ids:
                ids.append(event_id)
    for event_id, values in copies.items():
        if len(values) > 1:
            report.duplicates += len(values) - 1
            if any(value != values[0] for value in values[1:]):
                report.nonidentical_duplicates += 1
                problem(f"event {event_id} has {len(values)} copies that are not byte-identical")

    client_topic = router.handler_topic(CLIENT)
    add_topic = router.handler_topic("com.bench.add")
    double_topic = router.handler_topic("com.bench.double")
    for workflow in workflows:
        subject = workflow.init.subject
        own_topic = router.route_event(workflow.init)
        completions = by_topic_subject.get((client_topic, subject), [])
        record = states.get(workflow.instance_key)
        if record is None or record.get("status") != "done" or record.get("completed") is not True:
            report.lost += 1
            status = None if record is None else record.get("status")
            problem(f"lost: {workflow.kind} {workflow.instance_key} record status {status!r}")
            continue
        if not completions:
            report.lost += 1
            problem(
                f"lost: {workflow.kind} {workflow.instance_key} is done but its completion was never published"
            )
            continue
        report.completed += 1
        issues: list[str] = []
        ring: list[str] = record.get("consumedIds") or []
        if len(ring) != len(set(ring)):
            issues.append(f"consumedIds repeat: {ring}")
        consumed_on_topic = by_topic_subject.get((own_topic, subject), [])
        if [key.partition("/")[2] for key in ring] != consumed_on_topic:
            issues.append(f"consumedIds {ring} are not the events on {own_topic}: {consumed_on_topic}")
        if len(consumed_on_topic) != ORCHESTRATOR_TOPIC_EVENTS:
            issues.append(f"{len(consumed_on_topic)} distinct events on {own_topic} (expected 3)")
        for service_topic in (add_topic, double_topic):
            calls = by_topic_subject.get((service_topic, subject), [])
            if len(calls) != 1:
                issues.append(f"{len(calls)} distinct calls on {service_topic} (expected 1)")
        if len(completions) != 1:
            issues.append(f"{len(completions)} distinct completion events (expected 1)")
        if record.get("executionStatus") != "normal":
            issues.append(f"executionStatus {record.get('executionStatus')!r}")
        if workflow.kind == "orchestrator":
            state = record.get("state") or {}
            if record.get("value") != "done" or state.get("value") != "done":
                issues.append(f"machine value {record.get('value')!r}")
            if (state.get("context") or {}).get("result") != workflow.expected:
                issues.append(f"context result {(state.get('context') or {}).get('result')!r}")
        elif record.get("state$$") != {"a": workflow.a, "b": workflow.b}:
            issues.append(f"resumable state {record.get('state$$')!r}")
        produced: list[dict[str, Any]] = (record.get("events") or {}).get("produced") or []
        complete_type = f"{workflow.init.type}.done"
        if (
            len(produced) != 1
            or produced[0].get("type") != complete_type
            or produced[0].get("data") != {"result": workflow.expected}
            or produced[0].get("parentid") != workflow.init.id
        ):
            issues.append(
                f"produced events {produced!r} are not the one completion with result {workflow.expected}"
            )
        else:
            published = decoded.get(produced[0]["id"])
            if published is None or published != produced[0]:
                issues.append("the stored completion differs from the published one (or was never published)")
        if completions and decoded[completions[0]].get("data") != {"result": workflow.expected}:
            issues.append(f"published result {decoded[completions[0]].get('data')!r} != {workflow.expected}")
        if issues:
            report.divergent += 1
            problem(f"divergent: {workflow.kind} {workflow.instance_key}: " + "; ".join(issues))
    if stray_instances:
        report.divergent += stray_instances
        problem(f"{stray_instances} instance records that belong to no published workflow")


async def run_crash_test(options: argparse.Namespace, children: Children, workdir: Path) -> CrashReport:
    """The whole scenario; raises on set-up failures (the caller kills the children)."""
    rng = random.Random(options.seed)
    started = time.monotonic()
    deadline = started + options.timeout
    bootstrap = await start_broker(children, workdir)
    private_redis = None if options.redis_url else await start_private_redis(children, workdir)
    redis_url = options.redis_url or private_redis or "redis://127.0.0.1:6379/0"
    names = f"crash{uuid.uuid4().hex[:10]}"
    prefix = f"arvocrash:{names}"
    values = service_values(bootstrap=bootstrap, redis_url=redis_url, prefix=prefix, names=names)
    settings: ServiceSettings = load_settings(env_file=None, **values)
    router = TopicRouter.from_settings(settings)
    log(
        f"broker {bootstrap}, redis {'private ' if private_redis else ''}{redis_url} (prefix {prefix}), "
        f"topics {settings.topic_prefix}*, seed {options.seed}, workdir {workdir}"
    )
    sources = [handler.source for handler in bench_app(InMemoryMemory())]
    topics = [router.handler_topic(source) for source in [*sources, CLIENT]]
    client = ArvoClient(settings, router=router)  # topic_partitions is PARTITIONS
    await client.ensure_topics([*topics, settings.dead_letter_topic_name])

    memory = RedisMemory.from_url(redis_url, key_prefix=prefix)
    workers = [
        Worker(index=index, env=worker_env(values), children=children, workdir=workdir)
        for index in range(1, WORKERS + 1)
    ]
    report = CrashReport(workflows=options.workflows)
    try:
        for worker in workers:  # one at a time: Tansu mis-assigns members joining together
            worker.start()
            if not await worker.wait_joined():
                raise RuntimeError(f"worker {worker.index} got no partitions within {JOIN_TIMEOUT_S} s")
        log(f"{WORKERS} workers up after {time.monotonic() - started:.1f} s")
        workflows = make_workflows(options.workflows, rng)
        await storm(
            workers=workers,
            client=client,
            workflows=workflows,
            kills=options.kills,
            rng=rng,
        )
        report.kills = sum(worker.kills for worker in workers)
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
            f"{total} records on {len(records)} topics, {report.dead_letters} dead letters, "
            f"{report.kills} kills, {time.monotonic() - started:.1f} s"
        )
    finally:
        await client.stop()
        if private_redis is None:
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
    parser.add_argument("--workflows", type=int, default=300, help="bench workflows to run (default 300)")
    parser.add_argument("--kills", type=int, default=5, help="kill -9 + restart cycles (default 5)")
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
    if options.workflows < 1 or options.kills < 0 or options.timeout <= 0:
        parser.error("--workflows must be >= 1, --kills >= 0 and --timeout > 0")
    return options


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
