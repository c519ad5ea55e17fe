"""docker-compose.yml's topology on this machine: its arvo containers as processes, its publisher's demo.

No Docker engine runs here, so each arvo container of ``docker-compose.yml`` becomes a process started
the way the container starts it: the same argv (the service's ``entrypoint``/``command``, else the
image's ``ENTRYPOINT``/``CMD``) and the same environment (the image's ``ENV`` plus the service's
``environment``), with ``deploy.replicas`` processes per service. ``kafka-init``'s job (its ``TOPICS``
with ``PARTITIONS`` partitions) is done with the admin client. Then the publisher's script runs and
every demo workflow it starts must complete.

Only what differs between a compose network and one test machine is overridden:

* ``ARVO_KAFKA_BOOTSTRAP_SERVERS``: the session's test broker (Tansu) instead of ``kafka:19092``;
* ``ARVO_PRODUCER_IDEMPOTENCE=false``: Tansu cannot grant producer ids (``InitProducerId``); compose
  keeps idempotence on for Apache Kafka;
* ``ARVO_REDIS_URL``: the shared Redis on 127.0.0.1:6379, with a unique ``ARVO_REDIS_KEY_PREFIX``
  (deleted afterwards);
* ``ARVO_TOPIC_PREFIX`` and ``ARVO_CONSUMER_GROUP`` (compose's group plus a suffix): unique per run,
  so the shared broker never mixes runs;
* ``ARVO_HEALTH_PORT``: a free port per process (containers each have their own 8080);
* ``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``, no OTLP endpoint: there is no Jaeger.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.runtime.kafka_admin import ensure_topics
from service.runtime.settings import load_settings
from tests.deploy._deployfiles import compose, compose_command, compose_environment, dockerfile
from tests.integration._redis import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

BIN = Path(sys.executable).parent
ARVO = BIN / "arvo"
READY_LINE = "partitions assigned"
JOIN_TIMEOUT_S = 20.0
PUBLISH_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 30.0
HEALTH_SERVER = importlib.util.find_spec("service.runtime.health") is not None
"""The /healthz and /readyz server arrives with the observability work; once it exists it must answer."""


@dataclass
class Member:
    """One process standing in for one container."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    health_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.text().splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    lines.append(parsed)
        return lines


def _long_running() -> list[str]:
    """The compose services that run ``arvo run`` (the image's default command), in file order."""
    return [
        name
        for name, spec in compose()["services"].items()
        if spec.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
        and compose_command(name) == ["arvo", "run"]
    ]


def _container_environment(service: str, overrides: dict[str, str], home: Path) -> dict[str, str]:
    image_env = {name: value for name, value in dockerfile().envs.items() if name != "PATH"}
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **image_env,
        **compose_environment(service),
        **overrides,
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return env


async def _wait_until_assigned(member: Member) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while READY_LINE not in member.text():
        if member.process.returncode is not None:
            raise AssertionError(
                f"{member.name} exited with {member.process.returncode}:\n{member.text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{member.name}: {READY_LINE!r} not logged in {JOIN_TIMEOUT_S} s:\n{member.text()[-3000:]}"
            )
        await asyncio.sleep(0.05)


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@contextlib.asynccontextmanager
async def _started(name: str, argv: list[str], env: dict[str, str], tmp_path: Path) -> AsyncIterator[Member]:
    log = tmp_path / f"{name}.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    member = Member(name=name, process=process, log=log, health_port=int(env["ARVO_HEALTH_PORT"]))
    try:
        yield member
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _replies(stdout: str) -> list[dict[str, Any]]:
    """The JSON completions ``arvo publish --wait`` printed, in order."""
    decoder = json.JSONDecoder()
    replies, position = [], 0
    while (start := stdout.find("\n{", position)) != -1:
        reply, position = decoder.raw_decode(stdout, start + 1)
        replies.append(reply)
    return replies


def _assignment(member: Member) -> set[str]:
    assigned = [line for line in member.json_lines() if line.get("event") == READY_LINE]
    assert assigned, member.text()[-2000:]
    return set(assigned[-1]["partitions"])


async def test_the_compose_topology_completes_the_publishers_demo_workflows(
    kafka_bootstrap: str, shared_redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex[:10]
    prefix = f"compose{run_id}."
    common = {
        "ARVO_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ARVO_PRODUCER_IDEMPOTENCE": "false",
        "ARVO_REDIS_URL": shared_redis_url,
        "ARVO_REDIS_KEY_PREFIX": redis_key_prefix,
        "ARVO_TOPIC_PREFIX": prefix,
        "OTEL_SDK_DISABLED": "true",
        "OTEL_TRACES_EXPORTER": "none",
    }

    def overrides(service: str) -> dict[str, str]:
        group = compose_environment(service).get("ARVO_CONSUMER_GROUP", "arvo-service")
        return {**common, "ARVO_CONSUMER_GROUP": f"{group}-{run_id}", "ARVO_HEALTH_PORT": str(free_port())}

    # kafka-init: the same topics and partition count, under this run's prefix.
    init = compose_environment("kafka-init")
    admin = load_settings(env_file=None, kafka_bootstrap_servers=kafka_bootstrap)
    await ensure_topics(
        admin, [f"{prefix}{topic}" for topic in init["TOPICS"].split()], partitions=int(init["PARTITIONS"])
    )

    services = _long_running()
    assert services == ["orchestrator", "services"]
    async with contextlib.AsyncExitStack() as stack:
        members: list[Member] = []
        for service in services:
            replicas = compose()["services"][service].get("deploy", {}).get("replicas", 1)
            for replica in range(1, replicas + 1):
                env = _container_environment(service, overrides(service), tmp_path)
                member = await stack.enter_async_context(
                    _started(f"{service}-{replica}", compose_command(service), env, tmp_path)
                )
                # One member at a time: the test broker mis-assigns members that join simultaneously.
                await _wait_until_assigned(member)
                members.append(member)

        publisher_env = _container_environment("publisher", overrides("publisher"), tmp_path)
        publisher = await asyncio.create_subprocess_exec(
            *compose_command("publisher"),
            env=publisher_env,
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(publisher.communicate(), timeout=PUBLISH_TIMEOUT_S)
        except TimeoutError:
            publisher.kill()
            await publisher.wait()
            logs = "\n".join(f"--- {member.name}\n{member.text()[-2000:]}" for member in members)
            pytest.fail(f"the publisher did not finish in {PUBLISH_TIMEOUT_S} s\n{logs}")
        output = stdout.decode()
        assert publisher.returncode == 0, output + stderr.decode()

        replies = _replies(output)
        assert [reply["type"] for reply in replies] == [
            "arvo.orc.order.done",
            "arvo.orc.order.done",
            "arvo.orc.bench.done",
            "arvo.orc.bench.resumable.done",
        ], output
        fulfilled, declined, bench, resumable = (reply["data"] for reply in replies)
        assert fulfilled["status"] == "fulfilled"
        assert fulfilled["trackingId"] == "TRK-demo-1"
        assert declined["status"] == "payment_declined"
        assert bench == {"result": 10}
        assert resumable == {"result": 42}

        # The instances are stored as done in Redis (the order that shipped has its shipment child).
        listing = await asyncio.create_subprocess_exec(
            "arvo",
            "instances",
            "list",
            "--status",
            "done",
            env=_container_environment("orchestrator", overrides("orchestrator"), tmp_path),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        listed, listing_errors = await asyncio.wait_for(listing.communicate(), timeout=30)
        assert listing.returncode == 0, listing_errors.decode()
        orchestrators = sorted(line.split("\t")[0].split(":")[0] for line in listed.decode().splitlines()[1:])
        assert orchestrators == [
            "arvo.orc.bench",
            "arvo.orc.bench.resumable",
            "arvo.orc.order",
            "arvo.orc.order",
            "arvo.orc.shipment",
        ], listed.decode()

        # The replicas of the example services share the partitions of their topics.
        replicas = [member for member in members if member.name.startswith("services-")]
        assert len(replicas) >= 2
        assignments = [_assignment(member) for member in replicas]
        assert all(assignments), assignments
        assert not set.intersection(*assignments), "a partition is assigned to two replicas"

        if HEALTH_SERVER:
            for member in members:
                assert _http_status(member.health_port, "/healthz") == 200, member.name
                assert _http_status(member.health_port, "/readyz") == 200, member.name

        # docker compose stop / Kubernetes: SIGTERM, then the drain; every process exits 0.
        for member in members:
            member.process.send_signal(signal.SIGTERM)
        codes = await asyncio.wait_for(
            asyncio.gather(*(member.process.wait() for member in members)), timeout=STOP_TIMEOUT_S
        )
        assert codes == [0] * len(members), {member.name: member.text()[-1500:] for member in members}
        for member in members:
            levels = {line.get("level") for line in member.json_lines()}
            assert not levels & {"error", "critical"}, member.text()[-3000:]
