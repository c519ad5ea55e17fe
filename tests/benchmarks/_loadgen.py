"""The Kafka-path benchmarks' client, in a process of its own so the service process measures only itself.

It publishes bench workflow init events (half orchestrator, half resumable) with at most
``concurrency`` in flight — a new init leaves when a completion comes back — and reads the completions
from the client topic. It is driven over stdin/stdout, one JSON object per line:

* it prints ``{"ready": true}`` once its producer and collector are running;
* for ``{"count": n, "offset": o, "concurrency": c}`` it builds ``n`` inits (untimed), runs them and
  prints ``{"elapsed": seconds, "latencies": [seconds, ...]}`` — each latency from an init's publish to
  its completion's arrival;
* for ``{"rate": r, "duration": s, "offset": o, "timeout": t}`` (open loop) it publishes ``r`` inits per
  second for ``s`` seconds whatever the completions do (built as they leave, published every 5 ms),
  waits up to ``t`` seconds for every completion and prints ``{"sent": [...], "done": [...]}``: each
  init's publish time and its completion's arrival (``null``: none), in seconds from the start;
* an empty line or end of input stops it.

It publishes and reads through :class:`~service.runtime.client.ArvoClient`, so the inits are routed,
keyed and encoded exactly as the service's own emissions. Run by :class:`LoadGenerator`
(``python -m tests.benchmarks._loadgen <bootstrap> <topic prefix>``).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from typing import Any

import orjson

from contracts.bench import bench_machine_contract, bench_resumable_contract
from service.arvo.event import ArvoEvent
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.runtime.client import ArvoClient, Tail
from service.runtime.settings import load_settings

__all__ = ["CLIENT", "LoadGenerator", "bench_inits"]

CLIENT = "com.bench.kafka.client"
FETCH_MAX_WAIT_MS = 10
RUN_TIMEOUT_S = 180.0


@functools.cache
def _factories() -> list[Any]:
    """The init factories of the two bench orchestrators (built once: the open loop builds as it goes)."""
    return [
        create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0")),
        create_arvo_orchestrator_event_factory(bench_resumable_contract.version("1.0.0")),
    ]


def bench_inits(count: int, offset: int) -> list[ArvoEvent]:
    """``count`` bench workflow init events, alternately orchestrator and resumable, ``a`` from ``offset``."""
    factories = _factories()
    return [
        factories[index % 2].init(source=CLIENT, data={"a": offset + index, "b": 1, "parentSubject$$": None})
        for index in range(count)
    ]


async def _run(
    client: ArvoClient,
    completions: asyncio.Queue[tuple[str, int, float]],
    inits: list[ArvoEvent],
    concurrency: int,
    collecting: asyncio.Task[None],
) -> tuple[float, list[float]]:
    window = asyncio.Semaphore(concurrency)
    published: dict[str, tuple[float, int]] = {}
    latencies: list[float] = []
    started = time.perf_counter()

    async def publish_all() -> None:
        # One task per init: up to `concurrency` publishes in flight, none waits for another's ack.
        sends: list[asyncio.Task[None]] = []
        for init in inits:
            await window.acquire()
            published[init.id] = (time.perf_counter(), init.data["a"])
            sends.append(asyncio.create_task(client.publish([init])))
        await asyncio.gather(*sends)

    publisher = asyncio.create_task(publish_all())
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while len(latencies) < len(inits):
                parent_id, result, received = await _next(completions, collecting, publisher)
                sent = published.pop(parent_id, None)
                if sent is None:
                    continue  # a duplicate completion or another phase's
                if result != 2 * (sent[1] + 1):
                    raise SystemExit(
                        f"bench workflow {parent_id} returned {result}, expected {2 * (sent[1] + 1)}"
                    )
                latencies.append(received - sent[0])
                window.release()
        await publisher
    except TimeoutError:
        raise SystemExit(
            f"{len(published)} of {len(inits)} bench workflows without a completion after {RUN_TIMEOUT_S} s"
            f" (publisher {'done' if publisher.done() else 'still publishing'}): {sorted(published)[:5]}"
        ) from None
    finally:
        publisher.cancel()
    return time.perf_counter() - started, latencies


async def _next(
    completions: asyncio.Queue[tuple[str, int, float]],
    collecting: asyncio.Task[None],
    publisher: asyncio.Task[None],
) -> tuple[str, int, float]:
    """The next completion; raises what stopped the collector or failed the publisher, if that came first.

    A lost init (its publish failed) or a dead collector would otherwise only show as a time-out.
    """
    getting = asyncio.ensure_future(completions.get())
    while True:
        watched = [getting, collecting] if publisher.done() else [getting, collecting, publisher]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            return getting.result()
        if collecting.done() or (publisher.done() and publisher.exception() is not None):
            getting.cancel()
            (collecting if collecting.done() else publisher).result()  # raises what stopped it
            raise SystemExit("the completion collector stopped")


async def _collect(tail: Tail, completions: asyncio.Queue[tuple[str, int, float]]) -> None:
    while True:
        records = await tail.poll(0.1)
        received = time.perf_counter()
        for record in records:
            event = orjson.loads(record.value)
            result = event.get("data", {}).get("result")
            if not isinstance(result, int):  # a system error: the run fails, naming it
                raise SystemExit(f"bench workflow {event.get('parentid')} ended with {event!r:.600}")
            completions.put_nowait((event["parentid"], result, received))


_TICK_S = 0.005
_STALL_S = 180.0


async def _run_open(
    client: ArvoClient,
    completions: asyncio.Queue[tuple[str, int, float]],
    command: dict[str, Any],
    collecting: asyncio.Task[None],
) -> dict[str, Any]:
    """Publish at a fixed rate, whatever the completions do; every init's publish and completion time."""
    rate, duration = float(command["rate"]), float(command["duration"])
    offset, timeout_s = int(command["offset"]), float(command["timeout"])
    total = int(rate * duration)
    sent: list[float] = []
    done: list[float | None] = []
    waiting: dict[str, tuple[int, int]] = {}  # init id -> (index, a)
    sends: list[asyncio.Task[None]] = []
    started = time.perf_counter()

    async def publish_all() -> None:
        while len(sent) < total:
            now = time.perf_counter() - started
            due = min(total, int(now * rate) + 1)
            if due > len(sent):
                inits = bench_inits(due - len(sent), offset + len(sent))
                for init in inits:
                    waiting[init.id] = (len(sent), init.data["a"])
                    sent.append(now)
                    done.append(None)
                sends.append(asyncio.create_task(client.publish(inits)))
            await asyncio.sleep(_TICK_S)
        await asyncio.gather(*sends)

    publisher = asyncio.create_task(publish_all())
    try:
        async with asyncio.timeout(duration + timeout_s):
            while len(sent) < total or waiting:
                # Once everything is published, completions that stopped coming for _STALL_S are
                # reported missing (on Tansu a tailing reader can skip a record: a hole in the log).
                # Generous: in strict offset order an overload's completions pause for tens of seconds.
                stall_s = _STALL_S if publisher.done() else None
                parent_id, result, received = await asyncio.wait_for(
                    _next(completions, collecting, publisher), stall_s
                )
                entry = waiting.pop(parent_id, None)
                if entry is None:
                    continue  # a duplicate completion or another phase's
                index, a = entry
                if result != 2 * (a + 1):
                    raise SystemExit(f"bench workflow {parent_id} returned {result}, expected {2 * (a + 1)}")
                done[index] = received - started
        await publisher
    except TimeoutError:
        pass  # reported: the workflows without a completion have ``null``
    finally:
        publisher.cancel()
    return {"sent": sent, "done": done}


def _write(payload: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(payload) + b"\n")
    sys.stdout.buffer.flush()


async def _main(bootstrap: str, topic_prefix: str) -> None:
    settings = load_settings(
        env_file=None,
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        producer_idempotence=False,  # Tansu's memory storage refuses InitProducerId
        producer_acks="all",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        create_topics=False,  # the benchmark created them
    )
    # The tail follows the client topic from its end now, before anything is published.
    async with ArvoClient(settings) as client, client.tail([client.router.handler_topic(CLIENT)]) as tail:
        completions: asyncio.Queue[tuple[str, int, float]] = asyncio.Queue()
        collecting = asyncio.create_task(_collect(tail, completions))
        try:
            _write({"ready": True})
            while True:
                line = await asyncio.to_thread(sys.stdin.buffer.readline)
                if not line.strip():
                    break
                command = orjson.loads(line)
                if "rate" in command:
                    _write(await _run_open(client, completions, command, collecting))
                    continue
                inits = bench_inits(int(command["count"]), int(command["offset"]))
                elapsed, latencies = await _run(
                    client, completions, inits, int(command["concurrency"]), collecting
                )
                _write({"elapsed": elapsed, "latencies": latencies})
        finally:
            collecting.cancel()


class LoadGenerator:
    """Drives the load generator child process from a benchmark's event loop."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        """The child's process id (its CPU time is the client's)."""
        return self._process.pid

    @classmethod
    async def start(cls, bootstrap: str, topic_prefix: str) -> LoadGenerator:
        """Start the child (topics under ``topic_prefix``) and wait until it publishes and collects."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.benchmarks._loadgen",
            bootstrap,
            topic_prefix,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=256 * 1024 * 1024,  # an open-loop run answers with one line per run (~20 bytes per init)
        )
        generator = cls(process)
        ready = await generator._read()
        if not ready.get("ready"):
            raise SystemExit(f"load generator did not start: {ready!r}")
        return generator

    async def _read(self, timeout_s: float = RUN_TIMEOUT_S + 60) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout_s)
        if not line:
            raise SystemExit(f"load generator exited with {await self._process.wait()}")
        result: dict[str, Any] = orjson.loads(line)
        return result

    async def run(self, count: int, offset: int, concurrency: int) -> tuple[float, list[float]]:
        """Run ``count`` workflows with ``concurrency`` in flight; return elapsed seconds and latencies."""
        assert self._process.stdin is not None
        self._process.stdin.write(
            orjson.dumps({"count": count, "offset": offset, "concurrency": concurrency}) + b"\n"
        )
        await self._process.stdin.drain()
        result = await self._read()
        return float(result["elapsed"]), [float(value) for value in result["latencies"]]

    async def run_open(
        self, rate: float, duration_s: float, offset: int, timeout_s: float
    ) -> tuple[list[float], list[float | None]]:
        """Publish ``rate`` inits/s for ``duration_s`` (open loop); wait ``timeout_s`` more for completions.

        Returns each init's publish time and its completion's arrival (``None``: none), in seconds from
        the start.
        """
        assert self._process.stdin is not None
        command = {"rate": rate, "duration": duration_s, "offset": offset, "timeout": timeout_s}
        self._process.stdin.write(orjson.dumps(command) + b"\n")
        await self._process.stdin.drain()
        result = await self._read(duration_s + timeout_s + 60)
        return [float(value) for value in result["sent"]], [
            None if value is None else float(value) for value in result["done"]
        ]

    async def stop(self) -> None:
        """Ask the child to stop; kill it if it does not within 30 s."""
        if self._process.returncode is not None:
            return
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(b"\n")
            await self._process.stdin.drain()
            self._process.stdin.close()
            await asyncio.wait_for(self._process.wait(), 30)
        except (TimeoutError, ConnectionError):
            self._process.kill()
            await self._process.wait()


if __name__ == "__main__":
    from tests.benchmarks._rig import run_on_uvloop

    run_on_uvloop(_main(sys.argv[1], sys.argv[2]))
