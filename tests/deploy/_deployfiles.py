"""Loading the deployment files the way their tools read them, for the offline checks in tests/deploy.

* ``docker-compose.yml``: YAML with anchors and merge keys resolved (as Compose does); the
  environment of a service as a ``name -> string`` map; the argv a container runs (the service's
  ``entrypoint``/``command`` or the image's ``ENTRYPOINT``/``CMD``) with Compose's ``$$`` escapes undone.
* ``deploy/Dockerfile``: parsed with ``dockerfile-parse``.
* ``deploy/k8s``: the base and every overlay rendered by :mod:`tests.deploy._kustomize`.
* The variables a deployment may set: every ``ARVO_*`` field of ``ServiceSettings`` and the
  ``OTEL_*`` variables the OpenTelemetry SDK and API define (their ``environment_variables`` modules).
"""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import yaml
from dockerfile_parse import DockerfileParser

from service.runtime.settings import ServiceSettings, env_var_name, load_settings
from tests.deploy._kustomize import render

__all__ = [
    "COMPOSE_FILE",
    "DOCKERFILE",
    "HADOLINT_CONFIG",
    "K8S_BASE",
    "K8S_DIR",
    "KUBERNETES_VERSIONS",
    "REPO_ROOT",
    "arvo_variables",
    "compose",
    "compose_command",
    "compose_environment",
    "compose_unescape",
    "dockerfile",
    "dockerfile_instructions",
    "image_entrypoint_and_cmd",
    "k8s_directories",
    "k8s_overlays",
    "otel_variables",
    "rendered",
    "settings_from_environment",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
HADOLINT_CONFIG = REPO_ROOT / "deploy" / "hadolint.yaml"
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
K8S_BASE = K8S_DIR / "base"

KUBERNETES_VERSIONS = ("1.30", "1.37")
"""Kubernetes versions whose JSON schemas (bundled by kubernetes-validate) the manifests must satisfy:
the oldest release we support and the newest the pinned kubernetes-validate bundles."""

_INTERPOLATION = re.compile(r"\$(?!\$)")


@cache
def compose() -> dict[str, Any]:
    """``docker-compose.yml`` as Compose sees it (anchors and ``<<`` merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def compose_unescape(text: str) -> str:
    """Undo Compose's ``$$`` escape; any other ``$`` (an interpolation) is refused: we use none."""
    stripped = text.replace("$$", "")
    if _INTERPOLATION.search(stripped):
        raise ValueError(f"compose interpolation is not expected in {text[:80]!r}")
    return text.replace("$$", "$")


def compose_environment(service: str) -> dict[str, str]:
    """The environment variables Compose sets in ``service``'s containers."""
    raw = compose()["services"][service].get("environment") or {}
    if isinstance(raw, list):
        pairs = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    else:
        pairs = dict(raw)
    values: dict[str, str] = {}
    for name, value in pairs.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif value is None:
            text = ""
        else:
            text = str(value)
        values[name] = compose_unescape(text)
    return values


@cache
def dockerfile() -> DockerfileParser:
    """``deploy/Dockerfile``, parsed."""
    return DockerfileParser(path=str(DOCKERFILE))


def dockerfile_instructions(instruction: str) -> list[str]:
    """The values of every ``instruction`` (e.g. ``"FROM"``) in file order."""
    return [item["value"] for item in dockerfile().structure if item["instruction"] == instruction]


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(part, str) for part in parsed):
        raise ValueError(f"not an exec-form JSON array: {value!r}")
    return parsed


def image_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    """The image's ``ENTRYPOINT`` and ``CMD`` (exec form) of the final stage."""
    structure = dockerfile().structure
    last_from = max(index for index, item in enumerate(structure) if item["instruction"] == "FROM")
    final = structure[last_from:]
    entrypoints = [_exec_form(item["value"]) for item in final if item["instruction"] == "ENTRYPOINT"]
    commands = [_exec_form(item["value"]) for item in final if item["instruction"] == "CMD"]
    return (entrypoints[-1] if entrypoints else []), (commands[-1] if commands else [])


def _argv(value: Any) -> list[str]:
    parts = shlex.split(value) if isinstance(value, str) else [str(part) for part in value]
    return [compose_unescape(part) for part in parts]


def compose_command(service: str) -> list[str]:
    """The argv a container of ``service`` runs, as Docker combines entrypoint and command.

    A service's ``entrypoint`` replaces the image's and drops the image's ``CMD``; its ``command``
    replaces ``CMD``.
    """
    spec = compose()["services"][service]
    image_entrypoint, image_cmd = image_entrypoint_and_cmd()
    entrypoint = _argv(spec["entrypoint"]) if "entrypoint" in spec else image_entrypoint
    if "command" in spec:
        command = _argv(spec["command"])
    else:
        command = [] if "entrypoint" in spec else image_cmd
    return [*entrypoint, *command]


@cache
def rendered(directory: Path) -> tuple[dict[str, Any], ...]:
    """The resources a kustomization directory renders to."""
    return tuple(render(directory))


def k8s_overlays() -> list[Path]:
    """Every overlay directory under ``deploy/k8s/overlays``."""
    return sorted(path.parent for path in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))


def k8s_directories() -> list[Path]:
    """The base and every overlay."""
    return [K8S_BASE, *k8s_overlays()]


def settings_from_environment(environment: dict[str, str]) -> ServiceSettings:
    """The settings a process with exactly these ``ARVO_*`` variables loads (``SettingsError`` if invalid).

    Call it with the process environment free of other ``ARVO_*`` variables (tests/deploy/conftest.py).
    """
    fields = {
        name.removeprefix("ARVO_").lower(): value
        for name, value in environment.items()
        if name.startswith("ARVO_")
    }
    return load_settings(env_file=None, **fields)


def arvo_variables() -> frozenset[str]:
    """``ARVO_*`` names of every ``ServiceSettings`` field."""
    return frozenset(env_var_name(name) for name in ServiceSettings.model_fields)


def otel_variables() -> frozenset[str]:
    """The ``OTEL_*`` environment variables defined by the OpenTelemetry API and SDK."""
    names: set[str] = set()
    for module in (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables):
        names.update(
            value for key, value in vars(module).items() if key.startswith("OTEL_") and isinstance(value, str)
        )
    return frozenset(names)
