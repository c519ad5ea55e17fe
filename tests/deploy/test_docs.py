"""The documentation stays true to the code: the generated configuration reference is current, every
setting the docs name exists, the rules they list are enforced, links resolve, and the demo's
Mermaid diagram is what ``arvo graph order`` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.runtime.settings import SettingsError, load_settings
from tests.deploy._deployfiles import REPO_ROOT, arvo_variables
from tools import gen_config_docs

DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [REPO_ROOT / "README.md", *DOCS]
DEPLOY_FILES = [
    REPO_ROOT / "docker-compose.yml",
    REPO_ROOT / "deploy" / "Dockerfile",
    *sorted((REPO_ROOT / "deploy" / "k8s").rglob("*.yaml")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SETTING = re.compile(r"\bARVO_[A-Z0-9_]*[A-Z0-9]\b")
# Placeholders and test switches that are not settings.
NOT_SETTINGS = {"ARVO_TEST_KAFKA_BOOTSTRAP", "ARVO_TEST_REDIS_URL"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading (underscores, e.g. in code spans, are kept)."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def test_configuration_reference_is_generated_from_the_current_settings() -> None:
    committed = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == gen_config_docs.render(), "docs/configuration.md is out of date: run `make docs`"


def test_every_setting_is_documented_with_a_description() -> None:
    docs = gen_config_docs.setting_docs()
    assert {doc.variable for doc in docs} == arvo_variables()
    undocumented = [doc.variable for doc in docs if not doc.description]
    assert not undocumented, f"settings without an attribute docstring in settings.py: {undocumented}"


def test_the_generator_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    assert gen_config_docs.main(["--check", "--output", str(stale)]) == 1
    assert gen_config_docs.main(["--output", str(stale)]) == 0
    assert gen_config_docs.main(["--check", "--output", str(stale)]) == 0


@pytest.mark.parametrize("path", PAGES + DEPLOY_FILES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_arvo_variable_named_in_docs_and_deploy_files_is_a_setting(path: Path) -> None:
    named = set(SETTING.findall(path.read_text())) - NOT_SETTINGS
    unknown = sorted(name for name in named if name not in arvo_variables() and not name.endswith("_"))
    assert not unknown, f"{path.name} names variables that are not settings: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        assert linked.exists(), f"{page.name}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page.name}: no heading for #{anchor} in {linked.name}"


def test_the_demo_diagram_in_the_docs_is_what_arvo_graph_prints() -> None:
    result = CliRunner().invoke(app, ["graph", "order"])
    assert result.exit_code == 0, result.output
    text = (REPO_ROOT / "docs" / "writing-workflows.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", text, flags=re.DOTALL)
    assert blocks == [result.output]


RULES = [
    ({"heartbeat_interval_ms": 10_000, "session_timeout_ms": 10_000}, "ARVO_SESSION_TIMEOUT_MS"),
    ({"handler_timeout_s": 30, "lease_ttl_ms": 30_000}, "ARVO_LEASE_TTL_MS"),
    ({"retry_initial_ms": 500, "retry_max_ms": 100}, "ARVO_RETRY_INITIAL_MS"),
    ({"kafka_request_timeout_ms": 10_000, "session_timeout_ms": 10_000}, "ARVO_SESSION_TIMEOUT_MS"),
    (
        {
            "kafka_request_timeout_ms": 5_000,
            "fetch_max_wait_ms": 5_000,
            "session_timeout_ms": 3_000,
            "heartbeat_interval_ms": 1_000,
        },
        "ARVO_FETCH_MAX_WAIT_MS",
    ),
    ({"kafka_security_protocol": "SASL_SSL"}, "ARVO_KAFKA_SASL_PASSWORD"),
    ({"producer_idempotence": True, "producer_acks": "1"}, "ARVO_PRODUCER_ACKS"),
    ({"kafka_ssl_keyfile": "/tmp/client.key"}, "ARVO_KAFKA_SSL_CERTFILE"),
]


@pytest.mark.parametrize(("values", "other"), RULES)
def test_each_rule_between_settings_in_operating_md_is_enforced(
    values: dict[str, object], other: str
) -> None:
    section = (REPO_ROOT / "docs" / "operating.md").read_text().split("## Rules between settings")[1]
    section = section.split("\n## ")[0]
    with pytest.raises(SettingsError) as raised:
        load_settings(env_file=None, **values)
    assert other in str(raised.value)
    for field in values:
        variable = f"ARVO_{field.upper()}"
        assert variable in section, f"{variable} takes part in a rule that operating.md does not list"
    assert other in section


def test_the_metrics_table_in_operating_md_lists_exactly_the_service_metrics() -> None:
    from service.runtime.metrics import ServiceMetrics

    metrics = ServiceMetrics(process_metrics=False)
    metrics.bind(loop=None, orchestrators=["arvo.orc.example"])  # type: ignore[arg-type]
    exposed = {
        family.name + ("_total" if family.type == "counter" else "") for family in metrics.registry.collect()
    }
    section = (REPO_ROOT / "docs" / "operating.md").read_text().split("## Metrics")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `(arvo_[a-z_]+)` \|", section, flags=re.MULTILINE))
    assert documented == exposed
