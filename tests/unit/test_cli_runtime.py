"""The service commands of the ``arvo`` CLI without Kafka or Redis (CliRunner; I/O seams replaced).

``arvo run``, ``publish``, ``inspect``, ``instances list`` and ``dlq list/replay`` against fakes of the
service, the broker round trip, the memory and the Kafka client (the in-memory cluster of
``tests/unit/test_client.py``); plus the logging setup
and the entry-event builder behind ``arvo publish``. ``tests/integration/test_cli_runtime.py`` runs
the same commands against the real broker and Redis.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import structlog
import uvloop
from opentelemetry.sdk.trace import TracerProvider
from typer.testing import CliRunner

import service.cli as cli
from service.apps import EntryEventError, build_entry_event, build_handlers, entry_contract
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.memory import InMemoryMemory, InstanceStatus
from service.arvo.subject import ArvoOrchestrationSubject
from service.runtime.binding import RecordDecodeError
from service.runtime.dlq import DeadLetter
from service.runtime.logging import configure_logging, uses_json
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings
from tests.unit.test_client import FakeCluster

app = cli.app
DEFAULT_APP = "service.examples:default_app"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> CliRunner:
    # No developer .env and no ARVO_* variables leak into the commands.
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("ARVO_"):
            monkeypatch.delenv(name)
    return CliRunner()


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr.strip()


# ----------------------------------------------------------------------------------------- arvo run


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the service and the logging setup; record what ``arvo run`` hands them."""
    seen: dict[str, Any] = {"result": None}

    async def run_service(settings: ServiceSettings) -> BaseException | None:
        seen["settings"] = settings
        seen["loop"] = asyncio.get_running_loop()
        if isinstance(seen.get("raise"), BaseException):
            raise seen["raise"]
        result: BaseException | None = seen["result"]
        return result

    def configure(**kwargs: Any) -> None:
        seen["logging"] = kwargs

    monkeypatch.setattr("service.runtime.app.run_service", run_service)
    monkeypatch.setattr("service.runtime.logging.configure_logging", configure)
    return seen


def test_run_starts_the_service_on_uvloop_and_exits_0_after_a_graceful_stop(
    runner: CliRunner, fake_service: dict[str, Any]
) -> None:
    result = runner.invoke(app, ["run"], env={"ARVO_LOG_FORMAT": "json", "ARVO_LOG_LEVEL": "debug"})
    assert result.exit_code == 0, result.output
    assert isinstance(fake_service["loop"], uvloop.Loop)
    assert fake_service["settings"].app == DEFAULT_APP
    assert fake_service["logging"] == {"log_format": "json", "log_level": "DEBUG"}


def test_run_app_option_overrides_the_configured_app(runner: CliRunner, fake_service: dict[str, Any]) -> None:
    result = runner.invoke(
        app, ["run", "--app", "service.examples:bench_app"], env={"ARVO_APP": "service.examples:demo_app"}
    )
    assert result.exit_code == 0, result.output
    assert fake_service["settings"].app == "service.examples:bench_app"


def test_run_exits_1_when_the_consumer_loop_fails(runner: CliRunner, fake_service: dict[str, Any]) -> None:
    fake_service["result"] = RuntimeError("fetch task died")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1
    assert _one_line(result.stderr) == "arvo: consumer loop failed: RuntimeError: fetch task died"


def test_run_exits_1_with_one_line_when_the_service_cannot_start(
    runner: CliRunner, fake_service: dict[str, Any]
) -> None:
    fake_service["raise"] = ConnectionError("Unable to bootstrap from 127.0.0.1:9092")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1
    assert _one_line(result.stderr) == (
        "arvo: service failed: ConnectionError: Unable to bootstrap from 127.0.0.1:9092"
    )


def test_run_reports_an_invalid_setting_as_the_loader_words_it(
    runner: CliRunner, fake_service: dict[str, Any]
) -> None:
    result = runner.invoke(app, ["run"], env={"ARVO_LEASE_TTL_MS": "soon"})
    assert result.exit_code == 1
    line = _one_line(result.stderr)
    assert line.startswith("invalid setting ARVO_LEASE_TTL_MS='soon': ")
    assert "settings" not in fake_service


@pytest.mark.parametrize("other", ["ARVO_SESSION_TIMEOUT_MS", "ARVO_FETCH_MAX_WAIT_MS"])
def test_run_refuses_a_request_timeout_that_joins_or_fetches_would_always_exceed(
    runner: CliRunner, fake_service: dict[str, Any], other: str
) -> None:
    # aiokafka sends JoinGroup and fetches with the plain request timeout: a consumer configured
    # like this would never be assigned a partition.
    env = {
        "ARVO_KAFKA_REQUEST_TIMEOUT_MS": "2000",
        "ARVO_SESSION_TIMEOUT_MS": "2000",
        "ARVO_HEARTBEAT_INTERVAL_MS": "500",
    }
    if other == "ARVO_FETCH_MAX_WAIT_MS":
        env |= {"ARVO_SESSION_TIMEOUT_MS": "1500", other: "2500"}
    result = runner.invoke(app, ["run"], env=env)
    assert result.exit_code == 1
    assert _one_line(result.stderr).startswith(
        f"invalid settings: ARVO_KAFKA_REQUEST_TIMEOUT_MS=2000 must be greater than {other}="
    )
    assert "settings" not in fake_service


def _do_init_pid() -> None:
    """Named like aiokafka's producer-id handshake (``Sender._do_init_pid``), where Tansu's refusal surfaces."""
    from aiokafka.errors import UnknownError

    raise UnknownError


def _refused_idempotence() -> Exception:
    try:
        _do_init_pid()
    except Exception as error:
        return error
    raise AssertionError("unreachable")


IDEMPOTENCE_LINE = (
    "arvo: the broker refused the idempotent producer (UnknownError: [Error -1] UnknownError on"
    " InitProducerId): set ARVO_PRODUCER_IDEMPOTENCE=false for this broker (Tansu, some Kafka-compatible"
    " services, ACLs without IdempotentWrite need it). What it costs: a producer retry after a lost ack can"
    " write a record twice; such a duplicate keeps its event id, and orchestrators and resumables drop or"
    " replay an id they already consumed, so workflows still advance once (consumers with side effects"
    " should deduplicate by event id)"
)


def test_run_names_the_idempotence_setting_when_the_broker_refuses_the_idempotent_producer(
    runner: CliRunner, fake_service: dict[str, Any]
) -> None:
    fake_service["raise"] = _refused_idempotence()
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 1
    assert _one_line(result.stderr) == IDEMPOTENCE_LINE


def test_run_reports_the_same_error_plainly_when_idempotence_is_already_off(
    runner: CliRunner, fake_service: dict[str, Any]
) -> None:
    fake_service["raise"] = _refused_idempotence()
    result = runner.invoke(
        app, ["run"], env={"ARVO_PRODUCER_IDEMPOTENCE": "false", "ARVO_PRODUCER_ACKS": "1"}
    )
    assert result.exit_code == 1
    assert _one_line(result.stderr) == "arvo: service failed: UnknownError: [Error -1] UnknownError"


def test_publish_names_the_idempotence_setting_when_the_broker_refuses_the_idempotent_producer(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def publish_event(*args: Any, **kwargs: Any) -> None:
        try:
            _do_init_pid()
        except Exception as error:
            raise ConnectionError("producer did not start") from error

    monkeypatch.setattr(cli, "_publish_event", publish_event)
    result = runner.invoke(app, ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}'])
    assert result.exit_code == 1
    assert _one_line(result.stderr) == IDEMPOTENCE_LINE


def test_run_logs_each_variable_that_is_not_a_setting_with_the_closest_one(
    runner: CliRunner, fake_service: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"ARVO_CONSUMERGROUP": "orders", "ARVO_TEST_KAFKA_BOOTSTRAP": "k:9092", "ARVO_APP": DEFAULT_APP}
    result = runner.invoke(app, ["run"], env=env)
    assert result.exit_code == 0, result.output
    logged = result.output + capsys.readouterr().out
    assert "not a setting: ignored (ARVO_STRICT_SETTINGS=true refuses it)" in logged
    assert "variable=ARVO_CONSUMERGROUP" in logged
    assert "did_you_mean=ARVO_CONSUMER_GROUP" in logged
    assert "ARVO_TEST_KAFKA_BOOTSTRAP" not in logged
    assert "variable=ARVO_APP" not in logged
    strict = runner.invoke(app, ["run"], env=env | {"ARVO_STRICT_SETTINGS": "true"})
    assert strict.exit_code == 1
    assert _one_line(strict.stderr) == (
        "invalid settings: ARVO_CONSUMERGROUP (in the environment) is not a setting; did you mean"
        " ARVO_CONSUMER_GROUP? (ARVO_STRICT_SETTINGS=true)"
    )


def test_run_with_an_unloadable_app_exits_1_before_connecting(
    runner: CliRunner, fake_service: dict[str, Any]
) -> None:
    result = runner.invoke(app, ["run", "--app", "no_such_module:app"])
    assert result.exit_code == 1
    assert _one_line(result.stderr).startswith("arvo: cannot import app module 'no_such_module'")
    assert "settings" not in fake_service


# ------------------------------------------------------------------------------------- arvo publish


@pytest.fixture
def fake_broker(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the broker round trip of ``arvo publish``; ``reply`` builds the answer to the event."""
    seen: dict[str, Any] = {"reply": None}

    async def publish_event(
        settings: ServiceSettings,
        router: TopicRouter,
        event: ArvoEvent,
        *,
        reply_topics: list[str],
        timeout_s: float,
        on_published: Any,
        on_tick: Any = None,
    ) -> ArvoEvent | None:
        seen.update(
            event=event,
            reply_topics=reply_topics,
            timeout_s=timeout_s,
            topic=router.route_event(event),
            ticking=on_tick is not None,
        )
        on_published()
        if "published" in seen:
            seen["published"](event)
        if on_tick is not None:
            on_tick(0.0)
            on_tick(1.2)
        reply = seen["reply"]
        return reply(event) if reply is not None else None

    monkeypatch.setattr(cli, "_publish_event", publish_event)
    return seen


def _completion(event: ArvoEvent) -> ArvoEvent:
    return create_arvo_event(
        source=event.type,
        type=f"{event.type}.done",
        subject=event.subject,
        data={"result": 42},
        to=event.source,
        parentid=event.id,
    )


def _system_error(event: ArvoEvent) -> ArvoEvent:
    return create_arvo_event(
        source=event.type,
        type=f"sys.{event.type}.error",
        subject=event.subject,
        data={"errorName": "Boom", "errorMessage": "it broke", "errorStack": None},
        to=event.source,
        parentid=event.id,
    )


def _published_lines(stdout: str) -> tuple[str, str, str]:
    id_line, subject_line, rest = stdout.split("\n", 2)
    assert id_line.startswith("id: ")
    assert subject_line.startswith("subject: ")
    return id_line.removeprefix("id: "), subject_line.removeprefix("subject: "), rest


def test_publish_builds_the_init_event_through_the_orchestrator_contract(
    runner: CliRunner, fake_broker: dict[str, Any]
) -> None:
    result = runner.invoke(
        app, ["publish", "arvo.orc.bench", "--data", '{"a": 2, "b": 3}'], env={"ARVO_TOPIC_PREFIX": "stg."}
    )
    assert result.exit_code == 0, result.output
    event: ArvoEvent = fake_broker["event"]
    event_id, subject, rest = _published_lines(result.stdout)
    assert (event_id, subject, rest) == (event.id, event.subject, "")
    assert event.type == "arvo.orc.bench"
    assert event.source == "com.arvo.cli"
    assert event.data == {"parentSubject$$": None, "a": 2, "b": 3}
    assert event.dataschema == "#/bench/orchestrator/1.0.0"
    assert ArvoOrchestrationSubject.parse(event.subject).initiator == "com.arvo.cli"
    assert fake_broker["topic"] == "stg.arvo.orc.bench"
    assert fake_broker["reply_topics"] == []  # nothing to wait for without --wait


def test_publish_builds_a_services_accepted_event_with_the_given_attributes(
    runner: CliRunner, fake_broker: dict[str, Any]
) -> None:
    result = runner.invoke(
        app,
        [
            "publish",
            "com.bench.add",
            "--data",
            '{"a": 1, "b": 1, "extra": "stripped"}',
            "--source",
            "com.my.client",
            "--redirectto",
            "com.my.sink",
            "--domain",
            "ext",
        ],
    )
    assert result.exit_code == 0, result.output
    event: ArvoEvent = fake_broker["event"]
    assert (event.type, event.source, event.redirectto, event.domain) == (
        "com.bench.add",
        "com.my.client",
        "com.my.sink",
        "ext",
    )
    assert event.data == {"a": 1, "b": 1}
    assert fake_broker["topic"] == "ext-com.bench.add"


def test_publish_wait_prints_the_completion_as_json_and_exits_0(
    runner: CliRunner, fake_broker: dict[str, Any]
) -> None:
    fake_broker["reply"] = _completion
    result = runner.invoke(
        app, ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}', "--wait", "--timeout", "5"]
    )
    assert result.exit_code == 0, result.output
    event_id, _, rest = _published_lines(result.stdout)
    reply = json.loads(rest)
    assert (reply["type"], reply["parentid"], reply["data"]) == (
        "arvo.orc.bench.done",
        event_id,
        {"result": 42},
    )
    assert fake_broker["reply_topics"] == ["com.arvo.cli"]
    assert fake_broker["timeout_s"] == 5.0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_publish_wait_shows_a_progress_display_only_when_stderr_is_a_terminal(
    runner: CliRunner, fake_broker: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_broker["reply"] = _completion
    args = ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}', "--wait"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert fake_broker["ticking"] is False
    assert result.stderr == ""

    terminal = _Terminal()
    monkeypatch.setattr(cli, "sys", SimpleNamespace(stdin=sys.stdin, stdout=sys.stdout, stderr=terminal))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert fake_broker["ticking"] is True
    assert json.loads(_published_lines(result.stdout)[2])["type"] == "arvo.orc.bench.done"


def test_publish_wait_exits_1_on_a_system_error(runner: CliRunner, fake_broker: dict[str, Any]) -> None:
    fake_broker["reply"] = _system_error
    result = runner.invoke(app, ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}', "--wait"])
    assert result.exit_code == 1
    _, _, rest = _published_lines(result.stdout)
    assert json.loads(rest)["type"] == "sys.arvo.orc.bench.error"


class RecordingMemory(InMemoryMemory):
    """An in-process memory whose ``inspect`` answers ``record`` (or raises ``error``) for any key."""

    def __init__(self, record: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        super().__init__()
        self.record = record
        self.error = error
        self.inspected: list[str] = []

    async def inspect(self, key: str) -> dict[str, Any] | None:
        self.inspected.append(key)
        if self.error is not None:
            raise self.error
        return self.record


@pytest.fixture
def timed_out(monkeypatch: pytest.MonkeyPatch, fake_broker: dict[str, Any]) -> dict[str, Any]:
    """``arvo publish --wait`` that gets no reply, with an in-process memory and dead-letter topic."""
    cluster = FakeCluster()
    memory = RecordingMemory()
    monkeypatch.setattr(cli, "_open_memory", lambda settings: memory)
    monkeypatch.setattr(
        cli, "_open_client", lambda settings, router=None: cluster.client(settings, router=router)
    )
    fake_broker.update(cluster=cluster, memory=memory)
    return fake_broker


def _publish_and_time_out(runner: CliRunner) -> tuple[str, str, str]:
    """Run ``arvo publish arvo.orc.bench --wait`` that times out: the id, the instance key, the stderr line."""
    result = runner.invoke(
        app, ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}', "--wait", "--timeout", "0.5"]
    )
    assert result.exit_code == 2, result.output
    event_id, subject, rest = _published_lines(result.stdout)
    assert rest == ""
    return event_id, ArvoOrchestrationSubject.parse(subject).instance_key, _one_line(result.stderr)


def test_publish_wait_timeout_says_when_no_service_consumed_the_event(
    runner: CliRunner, timed_out: dict[str, Any]
) -> None:
    event_id, key, line = _publish_and_time_out(runner)
    assert timed_out["memory"].inspected == [key]
    assert line == (
        f"arvo: no completion or system error of {event_id} within 0.5 s; Redis has no instance {key}"
        " (key prefix 'arvo'): nothing consumed the event from arvo.orc.bench yet; is 'arvo run' or"
        " 'arvo dev' running with this app on 127.0.0.1:9092 (same ARVO_TOPIC_PREFIX and ARVO_REDIS_URL)?"
    )


def test_publish_wait_timeout_shows_an_active_instance_and_what_it_waits_for(
    runner: CliRunner, timed_out: dict[str, Any]
) -> None:
    timed_out["memory"].record = {
        "kind": "orchestrator",
        "status": "active",
        "executionStatus": "normal",
        "value": "adding",
        "events": {
            "consumed": {"type": "arvo.orc.bench", "id": "init-1"},
            "produced": [{"type": "com.bench.add", "id": "add-1", "to": "com.bench.add"}],
        },
    }
    _, key, line = _publish_and_time_out(runner)
    assert line.endswith(
        f'within 0.5 s; instance {key} is active (machine value "adding"; last consumed arvo.orc.bench'
        f" (id init-1); waiting for the replies to com.bench.add); 'arvo inspect {key}' shows it"
    )


def test_publish_wait_timeout_shows_a_parked_instance_and_the_dead_letters_of_its_subject(
    runner: CliRunner, timed_out: dict[str, Any]
) -> None:
    cluster: FakeCluster = timed_out["cluster"]
    timed_out["memory"].record = {
        "kind": "orchestrator",
        "status": "parked",
        "executionStatus": "normal",
        "value": "adding",
        "parkedReason": "retries exhausted: TimeoutError in com.bench.add",
    }

    def dead_letter_it(event: ArvoEvent) -> None:
        # The orchestrator's call to com.bench.add (same subject) failed for good; another subject's
        # letter is not this workflow's.
        for subject, message in ((event.subject, "add timed out 5 times"), ("other", "not ours")):
            letter = DeadLetter.from_error(
                key=subject.encode(),
                value=b"{}",
                headers=[],
                topic="com.bench.add",
                partition=2,
                offset=4,
                timestamp=None,
                reason="parked",
                error=TimeoutError(message),
            )
            cluster.append(
                "arvo.dlq",
                key=letter.record_key,
                value=letter.value,
                headers=letter.headers_out(),
                partition=0,
            )

    timed_out["published"] = dead_letter_it
    _, key, line = _publish_and_time_out(runner)
    assert f"; instance {key} is parked (parked: retries exhausted: TimeoutError in com.bench.add;" in line
    assert line.endswith(
        "; dead letter 0:0 of com.bench.add (parked: add timed out 5 times); see 'arvo dlq list --wide',"
        " replay with 'arvo dlq replay --offset P:N'"
    )
    assert "not ours" not in line


def test_publish_wait_timeout_still_exits_2_when_redis_cannot_be_read(
    runner: CliRunner, timed_out: dict[str, Any]
) -> None:
    timed_out["memory"].error = ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    event_id, key, line = _publish_and_time_out(runner)
    assert line == (
        f"arvo: no completion or system error of {event_id} within 0.5 s; cannot read the instance {key}"
        " from Redis (ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["arvo.orc.nope", "--data", "{}"],
            "arvo: no handler of the app consumes 'arvo.orc.nope' (known types: ",
        ),
        (["arvo.orc.bench", "--data", "{not json"], "arvo: --data is not JSON: "),
        (["arvo.orc.bench", "--data", "[1, 2]"], "arvo: --data must be a JSON object, got list"),
        (
            ["arvo.orc.bench", "--data", '{"a": "x", "b": 1}'],
            "arvo: cannot build 'arvo.orc.bench' 1.0.0: Init Event data validation failed: ",
        ),
        (
            ["arvo.orc.bench", "--data", '{"a": 1, "b": 1}', "--version", "9.9.9"],
            "arvo: 'arvo.orc.bench' has no version '9.9.9' (versions: 1.0.0)",
        ),
        (["arvo.orc.bench", "--data", "{}", "--app", "nope:app"], "arvo: cannot import app module 'nope'"),
    ],
)
def test_publish_rejects_bad_input_with_one_line_and_publishes_nothing(
    runner: CliRunner, fake_broker: dict[str, Any], args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["publish", *args])
    assert result.exit_code == 1
    assert _one_line(result.stderr).startswith(message)
    assert "event" not in fake_broker


def test_publish_wait_goes_through_the_client_and_prints_the_reply_it_waited_for(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real round trip of `arvo publish --wait` on an in-memory cluster that answers every init.
    cluster = FakeCluster()

    def respond(cluster: FakeCluster, record: Any) -> None:
        if record.topic == "arvo.orc.bench":
            cluster.publish(_completion(ArvoEvent.from_json(record.value)), "com.arvo.cli")

    cluster.responders.append(respond)
    monkeypatch.setattr(
        cli, "_open_client", lambda settings, router=None: cluster.client(settings, router=router)
    )
    result = runner.invoke(app, ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}', "--wait"])
    assert result.exit_code == 0, result.output
    event_id, subject, rest = _published_lines(result.stdout)
    assert json.loads(rest)["parentid"] == event_id
    [init] = cluster.records("arvo.orc.bench")
    assert init.key == subject.encode()
    assert ["arvo.orc.bench", "com.arvo.cli"] in cluster.ensured

    result = runner.invoke(app, ["publish", "arvo.orc.bench", "--data", '{"a": 1, "b": 2}'])
    assert result.exit_code == 0, result.output
    assert len(cluster.records("arvo.orc.bench")) == 2


# ------------------------------------------------------------------------------- entry events (apps)


def test_entry_events_use_the_latest_version_unless_one_is_named() -> None:
    handlers = build_handlers(DEFAULT_APP, InMemoryMemory())
    contract, is_init = entry_contract(handlers, "arvo.orc.bench.resumable")
    assert (contract.version, is_init) == ("1.0.0", True)
    contract, is_init = entry_contract(handlers, "com.payment.charge", version="1.0.0")
    assert (contract.accepts.type, is_init) == ("com.payment.charge", False)
    with pytest.raises(EntryEventError, match=r"'com.payment.charge' has no version '2.0.0'"):
        entry_contract(handlers, "com.payment.charge", version="2.0.0")


def test_an_init_event_keeps_an_explicit_parent_subject() -> None:
    handlers = build_handlers(DEFAULT_APP, InMemoryMemory())
    parent = ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.order", initiator="com.arvo.cli", version="1.0.0"
    )
    event = build_entry_event(
        handlers,
        "arvo.orc.shipment",
        data={"parentSubject$$": parent, "orderId": "o", "country": "NL", "weightKg": 1.5},
        source="arvo.orc.order",
    )
    assert event.data["parentSubject$$"] == parent
    assert ArvoOrchestrationSubject.parse(event.subject).initiator == "arvo.orc.order"


# ----------------------------------------------------------------------- arvo inspect and instances


class ClosingMemory(InMemoryMemory):
    """The in-process memory, counting its ``close`` calls."""

    closed = 0

    async def close(self) -> None:
        ClosingMemory.closed += 1


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> ClosingMemory:
    store = ClosingMemory()
    ClosingMemory.closed = 0
    monkeypatch.setattr(cli, "_open_memory", lambda settings: store)
    return store


async def _store(memory: InMemoryMemory, key: str, record: dict[str, Any], status: InstanceStatus) -> None:
    grant = await memory.lease_and_read(key, ttl_ms=1_000)
    assert grant.lease is not None
    await memory.commit_and_release(grant.lease, record, status=status)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _bench_record(subject: str) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "kind": "orchestrator",
        "executionStatus": "normal",
        "status": "done",
        "completed": True,
        "subject": subject,
        "parentSubject": None,
        "value": "done",
        "state": {"status": "done", "value": "done", "context": {"a": 1}},
        "events": {
            "consumed": {"type": "evt.bench.double.success", "id": "reply-2"},
            "produced": [{"type": "arvo.orc.bench.done", "id": "done-1", "to": "com.arvo.cli"}],
        },
        "consumedIds": ["/init-1", "/reply-1", "/reply-2"],
        "updatedAt": "2026-01-02T03:04:05.000+00:00",
    }


@pytest.fixture
def bench_subject() -> str:
    return ArvoOrchestrationSubject.new(
        orchestrator="arvo.orc.bench", initiator="com.arvo.cli", version="1.0.0"
    )


def test_inspect_prints_status_state_and_the_last_events_of_an_instance(
    runner: CliRunner, memory: ClosingMemory, bench_subject: str
) -> None:
    key = ArvoOrchestrationSubject.parse(bench_subject).instance_key
    _run(_store(memory, key, _bench_record(bench_subject), InstanceStatus.DONE))
    result = runner.invoke(app, ["inspect", bench_subject])
    assert result.exit_code == 0, result.output
    lines = {
        label.strip(): value.strip()
        for label, _, value in (line.partition(":") for line in result.stdout.splitlines())
    }
    assert lines["instance"].startswith("arvo.orc.bench")
    assert (lines["status"], lines["executionStatus"], lines["completed"]) == ("done", "normal", "true")
    assert lines["machine value"] == '"done"'
    assert lines["parent subject"] == "-"
    assert lines["last consumed"] == "evt.bench.double.success (id reply-2)"
    assert "arvo.orc.bench.done (id done-1) to com.arvo.cli" in result.stdout
    assert ClosingMemory.closed == 1


def test_inspect_shows_the_deadline_and_the_pending_timers(
    runner: CliRunner, memory: ClosingMemory, bench_subject: str
) -> None:
    key = ArvoOrchestrationSubject.parse(bench_subject).instance_key
    record = _bench_record(bench_subject) | {"status": "active", "completed": False}
    record["timers"] = [
        {"id": "xstate.after.1000.bench.adding#1", "dueMs": 1_767_323_045_000, "kind": "machine"},
        {"id": "arvo.deadline", "dueMs": 1_767_323_345_000, "kind": "deadline"},
    ]
    _run(_store(memory, key, record, InstanceStatus.ACTIVE))
    result = runner.invoke(app, ["inspect", bench_subject])
    assert result.exit_code == 0, result.output
    [deadline] = [line for line in result.stdout.splitlines() if line.startswith("deadline")]
    assert deadline.endswith("2026-01-02T03:09:05.000+00:00")
    [timers] = [line for line in result.stdout.splitlines() if line.startswith("timers")]
    assert timers.endswith("1")
    assert "xstate.after.1000.bench.adding#1 (machine) due 2026-01-02T03:04:05.000+00:00" in result.stdout


def test_inspect_of_a_timed_out_instance_says_so(
    runner: CliRunner, memory: ClosingMemory, bench_subject: str
) -> None:
    key = ArvoOrchestrationSubject.parse(bench_subject).instance_key
    record = _bench_record(bench_subject) | {
        "status": "timed_out",
        "executionStatus": "cancelled",
        "completed": False,
        "cancellation": {
            "reason": "deadline 2026-01-02T03:09:05.000+00:00 passed",
            "by": "deadline",
            "eventId": "t",
            "at": "x",
        },
    }
    _run(_store(memory, key, record, InstanceStatus.TIMED_OUT))
    result = runner.invoke(app, ["inspect", bench_subject])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("timed out")]
    assert "by deadline" in line
    assert "deadline 2026-01-02T03:09:05.000+00:00 passed" in line
    listed = runner.invoke(app, ["instances", "list", "--status", "timed_out"])
    assert listed.exit_code == 0, listed.output
    assert key in listed.stdout


def test_inspect_history_lists_the_recent_events_and_says_when_none_are_kept(
    runner: CliRunner, memory: ClosingMemory, bench_subject: str
) -> None:
    key = ArvoOrchestrationSubject.parse(bench_subject).instance_key
    record = _bench_record(bench_subject)
    record["history"] = [
        {
            "dir": "consumed",
            "type": "arvo.orc.bench",
            "id": "init-1",
            "source": "com.arvo.cli",
            "outcome": "ok",
            "time": "2026-01-02T03:04:01.000+00:00",
            "traceId": "0af7651916cd43dd8448eb211c80319c",
        },
        {
            "dir": "produced",
            "type": "com.bench.add",
            "id": "call-1",
            "source": "arvo.orc.bench",
            "outcome": "emitted",
            "time": "2026-01-02T03:04:01.001+00:00",
            "traceId": None,
        },
    ]
    _run(_store(memory, key, record, InstanceStatus.ACTIVE))
    result = runner.invoke(app, ["inspect", bench_subject, "--history"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "DIR", "TYPE", "ID", "SOURCE", "OUTCOME", "TRACE"]
    assert lines[1].split() == [
        "2026-01-02T03:04:01.000+00:00",
        "in",
        "arvo.orc.bench",
        "init-1",
        "com.arvo.cli",
        "ok",
        "0af7651916cd43dd8448eb211c80319c",
    ]
    assert lines[2].split()[1:4] == ["out", "com.bench.add", "call-1"]
    as_json = runner.invoke(app, ["inspect", bench_subject, "--history", "--json"])
    assert json.loads(as_json.stdout) == record["history"]

    _run(_store(memory, "arvo.orc.bench:no-history", _bench_record(bench_subject), InstanceStatus.DONE))
    missing = runner.invoke(app, ["inspect", "arvo.orc.bench:no-history", "--history"])
    assert missing.exit_code == 1
    assert "keeps no history" in missing.output


def test_inspect_json_prints_the_whole_record_and_accepts_an_instance_key(
    runner: CliRunner, memory: ClosingMemory, bench_subject: str
) -> None:
    key = ArvoOrchestrationSubject.parse(bench_subject).instance_key
    _run(_store(memory, key, _bench_record(bench_subject), InstanceStatus.DONE))
    result = runner.invoke(app, ["inspect", key, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == _bench_record(bench_subject)


def test_inspect_shows_the_resumable_context_the_error_of_a_failure_and_a_parking(
    runner: CliRunner, memory: ClosingMemory
) -> None:
    key = "arvo.orc.bench.resumable:exec-1"
    failed = {
        "kind": "resumable",
        "executionStatus": "failure",
        "status": "failed",
        "completed": False,
        "error": {"errorName": "ValueError", "errorMessage": "bad input", "errorStack": "..."},
        "previous": {"kind": "resumable", "state$$": {"a": 1, "b": 2}},
        "parentSubject": "parent-subject",
        "events": {"consumed": {"type": "evt.x", "id": "e1"}, "produced": []},
    }
    _run(_store(memory, key, failed, InstanceStatus.FAILED))
    _run(memory.set_status(key, InstanceStatus.PARKED, reason="redis down"))
    result = runner.invoke(app, ["inspect", key])
    assert result.exit_code == 0, result.output
    assert "status:          parked" in result.stdout
    assert 'state:           {"a":1,"b":2}' in result.stdout
    assert "error:           ValueError: bad input" in result.stdout
    assert "parked reason:   redis down" in result.stdout
    assert "parent subject:  parent-subject" in result.stdout
    assert "produced:        none" in result.stdout


def test_inspect_of_an_unknown_instance_or_a_bad_subject_exits_1_with_one_line(
    runner: CliRunner, memory: ClosingMemory, bench_subject: str
) -> None:
    result = runner.invoke(app, ["inspect", bench_subject])
    assert result.exit_code == 1
    key = ArvoOrchestrationSubject.parse(bench_subject).instance_key
    assert _one_line(result.stderr) == f"arvo: no instance {key!r} in Redis (key prefix 'arvo')"
    result = runner.invoke(app, ["inspect", "not-a-subject"])
    assert result.exit_code == 1
    assert _one_line(result.stderr).startswith("arvo: invalid subject: ")
    result = runner.invoke(app, ["inspect", "arvo.orc.bench:"])
    assert result.exit_code == 1
    assert _one_line(result.stderr).startswith("arvo: instance key is not")


def test_instances_list_prints_tab_separated_rows_filtered_by_orchestrator_and_status(
    runner: CliRunner, memory: ClosingMemory
) -> None:
    _run(_store(memory, "arvo.orc.bench:1", {"status": "done"}, InstanceStatus.DONE))
    _run(_store(memory, "arvo.orc.bench:2", {"status": "active"}, InstanceStatus.ACTIVE))
    _run(_store(memory, "arvo.orc.order:3", {"status": "done"}, InstanceStatus.DONE))
    result = runner.invoke(app, ["instances", "list", "--orchestrator", "bench", "--status", "done"])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["INSTANCE", "STATUS", "UPDATED"]
    assert [row.split("\t")[:2] for row in rows] == [["arvo.orc.bench:1", "done"]]
    result = runner.invoke(app, ["instances", "list", "--limit", "2"])
    assert len(result.stdout.splitlines()) == 3
    result = runner.invoke(app, ["instances", "list", "--status", "sleeping"])
    assert result.exit_code == 2


# ------------------------------------------------------------------------------------------ arvo dlq


def _write_letter(
    cluster: FakeCluster, partition: int, offset: int, *, reason: str = "not_json", dropped: bool = False
) -> None:
    """A dead letter at ``partition:offset`` of ``arvo.dlq``, as the consumer loop writes them."""
    letter = DeadLetter.from_error(
        key=f"{partition}:{offset}".encode(),
        value=b"garbage",
        headers=[],
        topic="arvo.orc.bench",
        partition=1,
        offset=7 + offset,
        timestamp=None,
        reason=reason,
        error=RecordDecodeError("not_json", "record value is not JSON: " + "x" * 200),
    )
    if dropped:
        letter = letter.without_payload()
    cluster.append(
        "arvo.dlq", key=letter.key, value=letter.value, headers=letter.headers_out(), partition=partition
    )
    assert cluster.logs["arvo.dlq"][partition][-1].offset == offset


@pytest.fixture
def dead_letters(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """The dead-letter topic on an in-memory cluster: 0:0, 0:1 (contract), 1:0, 1:1 (payload dropped)."""
    cluster = FakeCluster()
    _write_letter(cluster, 0, 0)
    _write_letter(cluster, 0, 1, reason="contract")
    _write_letter(cluster, 1, 0)
    _write_letter(cluster, 1, 1, dropped=True)
    monkeypatch.setattr(
        cli, "_open_client", lambda settings, router=None: cluster.client(settings, router=router)
    )
    return cluster


def _replayed(cluster: FakeCluster) -> list[str]:
    """The dead letters sent back to their topic, in order (their keys are ``partition:offset``)."""
    return [(record.key or b"").decode() for record in cluster.written if record.topic == "arvo.orc.bench"]


def test_dlq_list_prints_where_each_dead_letter_came_from_and_why(
    runner: CliRunner, dead_letters: FakeCluster
) -> None:
    result = runner.invoke(app, ["dlq", "list", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert [row.split("\t")[:3] for row in result.stdout.splitlines()[1:]] == [
        ["0", "0", "not_json"],
        ["0", "1", "contract"],
        ["1", "0", "not_json"],
    ]
    result = runner.invoke(app, ["dlq", "list", "--limit", "3", "--reason", "contract"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split("\t") == ["PARTITION", "OFFSET", "REASON", "ERROR", "ORIGIN", "MESSAGE", "REPLAYED"]
    cells = row.split("\t")
    assert cells[:5] == ["0", "1", "contract", "RecordDecodeError", "arvo.orc.bench/1@8"]
    assert cells[5].endswith("…")
    assert len(cells[5]) == 60
    assert cells[6] == "-"


def test_dlq_list_json_prints_one_object_per_letter_with_every_field(
    runner: CliRunner, dead_letters: FakeCluster
) -> None:
    result = runner.invoke(app, ["dlq", "list", "--json"])
    assert result.exit_code == 0, result.output
    letters = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(letter["partition"], letter["offset"]) for letter in letters] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    first = letters[0]
    assert first["errorMessage"] == "[not_json] record value is not JSON: " + "x" * 200  # not shortened
    assert {key: first[key] for key in ("topic", "reason", "errorClass", "originTopic", "originOffset")} == {
        "topic": "arvo.dlq",
        "reason": "not_json",
        "errorClass": "RecordDecodeError",
        "originTopic": "arvo.orc.bench",
        "originOffset": 7,
    }
    assert (first["key"], first["value"], first["replayable"], first["replays"]) == (
        "0:0",
        "garbage",
        True,
        [],
    )
    assert first["deadLetteredAt"].endswith("+00:00")
    dropped = letters[3]
    assert (dropped["replayable"], dropped["value"]) == (False, None)
    assert dropped["payloadDroppedBytes"] == len(b"garbage")
    assert "lost its payload" in dropped["replayProblem"]


def test_dlq_list_wide_prints_whole_messages_and_refuses_json_with_it(
    runner: CliRunner, dead_letters: FakeCluster
) -> None:
    result = runner.invoke(app, ["dlq", "list", "--wide", "--limit", "1"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split("\t") == [
        "PARTITION", "OFFSET", "DEAD-LETTERED", "REASON", "ERROR", "ATTEMPTS", "ORIGIN", "REPLAYED", "MESSAGE"
    ]  # fmt: skip
    cells = row.split("\t")
    assert cells[8] == "[not_json] record value is not JSON: " + "x" * 200
    assert (cells[5], cells[7]) == ("1", "-")
    both = runner.invoke(app, ["dlq", "list", "--wide", "--json"])
    assert both.exit_code == 2
    assert _one_line(both.stderr) == "arvo: --json and --wide exclude each other"


def test_a_replayed_letter_is_listed_as_replayed_when_and_where_by_later_invocations(
    runner: CliRunner, dead_letters: FakeCluster
) -> None:
    assert runner.invoke(app, ["dlq", "replay", "--offset", "0:1"]).exit_code == 0
    assert runner.invoke(app, ["dlq", "replay", "--offset", "0:1"]).exit_code == 0
    # Each replay is a record on arvo.dlq.replayed: a later `arvo dlq list` (a new process) joins them.
    [marker, _] = dead_letters.records("arvo.dlq.replayed")
    assert json.loads(marker.value or b"")["replayedTo"] == "arvo.orc.bench"
    result = runner.invoke(app, ["dlq", "list"])
    assert result.exit_code == 0, result.output
    replayed = {tuple(row.split("\t")[:2]): row.split("\t")[6] for row in result.stdout.splitlines()[1:]}
    assert replayed[("0", "0")] == "-"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 to arvo\.orc\.bench \(2 replays\)", replayed[("0", "1")]
    )
    wide = runner.invoke(app, ["dlq", "list", "--wide", "--reason", "contract"])
    assert wide.stdout.splitlines()[1].split("\t")[7].count(" to arvo.orc.bench") == 2
    as_json = runner.invoke(app, ["dlq", "list", "--json", "--reason", "contract"])
    [letter] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [replay["to"] for replay in letter["replays"]] == ["arvo.orc.bench", "arvo.orc.bench"]
    assert all(replay["at"].endswith("+00:00") and "@" in replay["by"] for replay in letter["replays"])


def test_dlq_replay_replays_the_named_offsets(runner: CliRunner, dead_letters: FakeCluster) -> None:
    result = runner.invoke(app, ["dlq", "replay", "--offset", "0:1", "--offset", "1:0"])
    assert result.exit_code == 0, result.output
    assert _replayed(dead_letters) == ["0:1", "1:0"]
    assert result.stdout.splitlines() == ["replayed 0:1 to arvo.orc.bench", "replayed 1:0 to arvo.orc.bench"]


def test_dlq_replay_all_reports_letters_without_payload_and_exits_1(
    runner: CliRunner, dead_letters: FakeCluster
) -> None:
    result = runner.invoke(app, ["dlq", "replay", "--all"])
    assert result.exit_code == 1
    assert _replayed(dead_letters) == ["0:0", "0:1", "1:0"]
    assert _one_line(result.stderr).startswith("arvo: skipped 1:1: dead letter arvo.dlq/1@1 lost its payload")


def test_dlq_replay_all_with_a_reason_replays_only_those(
    runner: CliRunner, dead_letters: FakeCluster
) -> None:
    result = runner.invoke(app, ["dlq", "replay", "--all", "--reason", "contract"])
    assert result.exit_code == 0, result.output
    assert _replayed(dead_letters) == ["0:1"]


def test_dlq_replay_of_an_empty_selection_says_so(runner: CliRunner, dead_letters: FakeCluster) -> None:
    result = runner.invoke(app, ["dlq", "replay", "--all", "--reason", "no_handler"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "nothing to replay\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "arvo: name the dead letters to replay: --offset N (repeatable) or --all"),
        (["--all", "--offset", "1"], 2, "arvo: name the dead letters to replay"),
        (["--offset", "x"], 2, "arvo: --offset 'x' must be N or PARTITION:N"),
        (["--offset", "9"], 1, "arvo: no dead letter at offset 9 (see 'arvo dlq list')"),
        (
            ["--offset", "0"],
            1,
            "arvo: offset 0 exists in several partitions (0:0, 1:0); name one as PARTITION:N",
        ),
    ],
)
def test_dlq_replay_refuses_unclear_selections_before_replaying_anything(
    runner: CliRunner, dead_letters: FakeCluster, args: list[str], code: int, message: str
) -> None:
    result = runner.invoke(app, ["dlq", "replay", *args])
    assert result.exit_code == code
    assert _one_line(result.stderr).startswith(message)
    assert _replayed(dead_letters) == []


# ------------------------------------------------------------------------------------------ logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_logging_writes_one_object_per_line_and_holds_libraries_at_warning(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", log_level="info", stream=stream)
    log = structlog.get_logger("arvo.test.json")
    log.info("record processed", topic="t", partition=1)
    log.debug("not shown")
    logging.getLogger("aiokafka.consumer").info("chatty library line")
    logging.getLogger("aiokafka.consumer").warning("library warning %d", 7)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        log.warning("inside a span")
        trace_id = format(span.get_span_context().trace_id, "032x")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["record processed", "library warning 7", "inside a span"]
    first = lines[0]
    assert (first["level"], first["logger"], first["topic"], first["partition"]) == (
        "info",
        "arvo.test.json",
        "t",
        1,
    )
    assert first["timestamp"].endswith("Z")
    assert lines[1]["logger"] == "aiokafka.consumer"
    assert lines[2]["trace_id"] == trace_id
    assert "trace_id" not in first


def test_console_logging_renders_readable_lines_and_auto_picks_json_when_piped(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(log_format="console", log_level="DEBUG", stream=stream)
    structlog.get_logger("arvo.test.console").debug("hello", n=1)
    line = stream.getvalue()
    assert "hello" in line
    assert "n=1" in line
    assert not line.startswith("{")
    assert uses_json("auto", io.StringIO()) is True
    assert uses_json("console", io.StringIO()) is False
    with pytest.raises(ValueError, match="is not a level name"):
        configure_logging(log_level="LOUD", stream=stream)
