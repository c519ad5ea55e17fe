"""Every variable the deployment files set is one the service (or the OpenTelemetry SDK) reads.

A misspelt ``ARVO_*`` name is silently ignored by pydantic-settings (``extra="ignore"``), so the
deployment would run on a default: these tests make the typo a CI failure instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy._deployfiles import (
    arvo_variables,
    compose,
    compose_environment,
    dockerfile,
    k8s_directories,
    otel_variables,
    rendered,
    settings_from_environment,
)

ARVO_CONTAINERS = [
    name
    for name, spec in compose()["services"].items()
    if spec.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
]
IMAGE_RUNTIME_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
"""Non-ARVO, non-OTEL variables the Dockerfile may set for the Python runtime."""


def unknown_variables(names: set[str]) -> list[str]:
    arvo, otel = arvo_variables(), otel_variables()
    return sorted(
        name
        for name in names
        if not (name.startswith("ARVO_") and name in arvo) and not (name.startswith("OTEL_") and name in otel)
    )


def test_the_variable_lists_are_not_empty() -> None:
    assert "ARVO_KAFKA_BOOTSTRAP_SERVERS" in arvo_variables()
    assert {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"} <= otel_variables()
    assert unknown_variables({"ARVO_KAFKA_BOOTSTRAP_SERVER", "OTEL_SERVICE"}) == [
        "ARVO_KAFKA_BOOTSTRAP_SERVER",
        "OTEL_SERVICE",
    ]


@pytest.mark.parametrize("service", ARVO_CONTAINERS)
def test_compose_sets_only_settings_fields_and_standard_otel_variables(service: str) -> None:
    assert not unknown_variables(set(compose_environment(service)))


def test_dockerfile_sets_only_settings_fields_and_python_runtime_variables() -> None:
    names = set(dockerfile().envs)
    assert not unknown_variables(names - IMAGE_RUNTIME_VARIABLES)


@pytest.mark.parametrize("service", ARVO_CONTAINERS)
def test_compose_values_are_valid_settings_together_with_the_image_defaults(service: str) -> None:
    image_defaults = {name: value for name, value in dockerfile().envs.items() if name.startswith("ARVO_")}
    settings_from_environment(image_defaults | compose_environment(service))


@pytest.mark.parametrize("directory", k8s_directories(), ids=lambda path: path.name)
def test_kubernetes_sets_only_settings_fields_and_standard_otel_variables(directory: Path) -> None:
    resources = rendered(directory)
    names: set[str] = set()
    helpers: set[str] = set()
    referenced: set[str] = set()
    for resource in resources:
        if resource["kind"] == "ConfigMap":
            names.update(resource.get("data", {}))
        elif resource["kind"] == "Secret":
            names.update(resource.get("stringData", {}))
            names.update(resource.get("data", {}))
        elif resource["kind"] == "Deployment":
            for container in resource["spec"]["template"]["spec"]["containers"]:
                for item in container.get("env", []):
                    if "valueFrom" in item and "fieldRef" in item["valueFrom"]:
                        helpers.add(item["name"])  # downward-API values, only used in $(NAME) references
                    else:
                        names.add(item["name"])
                        referenced.update(re.findall(r"\$\((\w+)\)", item.get("value", "")))
    assert not unknown_variables(names)
    assert helpers <= referenced, f"downward-API variables nobody references: {sorted(helpers - referenced)}"
    assert referenced <= helpers | names, f"$(NAME) references to undefined variables: {sorted(referenced)}"
