"""docker-compose.yml, checked without a Docker engine: the Compose specification JSON schema (the copy
vendored by the pinned check-jsonschema) and the topology the issue asks for."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from importlib import resources
from typing import Any

import jsonschema
import pytest

from service.apps import build_entry_event, build_handlers
from service.arvo.memory import InMemoryMemory
from service.runtime.routing import TopicRouter
from service.runtime.settings import ServiceSettings
from tests.deploy._deployfiles import compose, compose_command, compose_environment, settings_from_environment

ARVO_SERVICES = ("orchestrator", "services", "publisher")
LONG_RUNNING = ("orchestrator", "services")
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
"""sha256 of compose-spec.json as vendored by check-jsonschema 0.39.0 (the pin in constraints.txt)."""


def compose_schema() -> dict[str, Any]:
    raw = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_bytes()
    )
    assert hashlib.sha256(raw).hexdigest() == COMPOSE_SCHEMA_SHA256, (
        "the vendored Compose schema changed with the check-jsonschema pin: review, then update the hash"
    )
    schema: dict[str, Any] = json.loads(raw)
    return schema


def settings_of(service: str) -> ServiceSettings:
    return settings_from_environment(compose_environment(service))


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


def test_compose_file_satisfies_the_compose_specification_schema() -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema, format_checker=validator_class.FORMAT_CHECKER).iter_errors(compose()),
        key=lambda error: list(error.absolute_path),
    )
    assert not errors, "\n".join(f"{list(error.absolute_path)}: {error.message}" for error in errors)


def test_the_schema_check_rejects_a_misspelt_depends_on_condition() -> None:
    """Guard against a schema that accepts anything."""
    broken = json.loads(json.dumps(compose()))
    broken["services"]["publisher"]["depends_on"]["orchestrator"]["condition"] = "service_ready"
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert not validator.is_valid(broken)


def test_images_are_official_and_pinned() -> None:
    services = compose()["services"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", services["redis"]["image"])
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", services["jaeger"]["image"])
    for name in ARVO_SERVICES:
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["image"] == services["orchestrator"]["image"], (
            "one image for every arvo container"
        )


def test_kafka_is_a_single_kraft_node_with_a_health_check() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false", "topics come from kafka-init only"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    # The containers reach it on the advertised in-network listener.
    for name in ARVO_SERVICES:
        host_port = settings_of(name).kafka_bootstrap_servers
        assert f"PLAINTEXT://{host_port}" in env["KAFKA_ADVERTISED_LISTENERS"]


def _init_topics() -> tuple[list[str], int]:
    env = compose_environment("kafka-init")
    return env["TOPICS"].split(), int(env["PARTITIONS"])


def test_kafka_init_creates_every_topic_of_the_topology_with_several_partitions() -> None:
    topics, partitions = _init_topics()
    assert partitions > 1, "several partitions, so that replicas share the work"
    init = compose()["services"]["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["restart"] == "no"
    script = "\n".join(compose_command("kafka-init"))
    assert "--if-not-exists" in script
    assert '--partitions "${PARTITIONS}"' in script
    needed: set[str] = set()
    for name in ARVO_SERVICES:
        settings = settings_of(name)
        router = TopicRouter.from_settings(settings)
        needed.add(settings.dead_letter_topic_name)
        if name in LONG_RUNNING:
            handlers = build_handlers(settings.app, InMemoryMemory())
            needed.update(router.handler_topic(handler.source) for handler in handlers)
    # The publisher's replies come back on the topic of its --source (com.arvo.cli by default).
    needed.add(TopicRouter().route("com.arvo.cli", None))
    assert sorted(set(topics)) == sorted(needed)
    assert len(topics) == len(set(topics))


def test_arvo_services_create_no_topics_so_kafka_init_owns_the_partition_count() -> None:
    for name in ARVO_SERVICES:
        assert settings_of(name).create_topics is False


def test_producer_idempotence_stays_on_for_real_kafka() -> None:
    for name in ARVO_SERVICES:
        settings = settings_of(name)
        assert settings.producer_idempotence is True
        assert settings.producer_acks == "all"


def test_orchestrators_and_services_run_separate_apps_in_separate_groups() -> None:
    orchestrator, services = settings_of("orchestrator"), settings_of("services")
    assert orchestrator.app == "service.examples.topology:orchestrators_app"
    assert services.app == "service.examples.topology:services_app"
    assert orchestrator.consumer_group != services.consumer_group


def test_the_example_services_run_several_replicas() -> None:
    assert compose()["services"]["services"]["deploy"]["replicas"] >= 2


def test_long_running_services_are_health_checked_on_readyz_and_start_in_order() -> None:
    for name in LONG_RUNNING:
        service = compose()["services"][name]
        port = settings_of(name).health_port
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe
        assert service["healthcheck"]["test"][:2] == ["CMD", "python"], "no curl in the image"
        depends = service["depends_on"]
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert "jaeger" in depends


def test_stop_grace_period_covers_the_drain_timeout() -> None:
    for name in LONG_RUNNING:
        grace = _seconds(compose()["services"][name]["stop_grace_period"])
        assert grace >= settings_of(name).drain_timeout_s + 10


def test_publisher_waits_for_healthy_services_and_publishes_with_wait() -> None:
    publisher = compose()["services"]["publisher"]
    for name in LONG_RUNNING:
        assert publisher["depends_on"][name]["condition"] == "service_healthy"
    assert publisher["restart"] == "no"
    assert publisher["healthcheck"] == {"disable": True}
    lines = [line for line in compose_command("publisher")[-1].splitlines() if line.strip()]
    assert len(lines) >= 2
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["arvo", "publish"]
        assert "--wait" in argv


def _publish_invocations() -> list[tuple[str, dict[str, Any]]]:
    script = compose_command("publisher")[-1]
    found = []
    for line in script.splitlines():
        argv = shlex.split(line)
        if argv[:2] == ["arvo", "publish"]:
            found.append((argv[2], json.loads(argv[argv.index("--data") + 1])))
    return found


@pytest.mark.parametrize("invocation", range(4))
def test_every_demo_event_of_the_publisher_is_valid_for_its_contract(invocation: int) -> None:
    event_type, data = _publish_invocations()[invocation]
    handlers = build_handlers(settings_of("publisher").app, InMemoryMemory())
    event = build_entry_event(handlers, event_type, data=data, source="com.arvo.cli")
    assert event.type == event_type
    served = {
        handler.source
        for name in LONG_RUNNING
        for handler in build_handlers(settings_of(name).app, InMemoryMemory())
    }
    assert event_type in served, f"no container consumes {event_type}"


def test_traces_go_to_jaeger_over_otlp_with_one_service_name_per_container() -> None:
    jaeger_ports = {str(port).split(":")[-1] for port in compose()["services"]["jaeger"]["ports"]}
    assert {"16686", "4317", "4318"} <= jaeger_ports
    names = set()
    for name in ARVO_SERVICES:
        env = compose_environment(name)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert env["OTEL_TRACES_EXPORTER"] == "otlp"
        names.add(env["OTEL_SERVICE_NAME"])
    assert len(names) == len(ARVO_SERVICES)
