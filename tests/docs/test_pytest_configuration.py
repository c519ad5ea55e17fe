"""The pytest configuration testing-workflows.md gives works for a new project, run with plain ``pytest``.

A project laid out as the docs lay it out (``my_workflows/`` with the app, ``tests/`` without
``__init__.py``) gets the page's ``toml`` block as its ``pyproject.toml``; ``pytest`` (the console
script, from the project root, with a clean environment) must run its ``async def`` test and pass,
without a deprecation warning on every run. Without the block's ``pythonpath`` line, the page says
what fails: that is checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "testing-workflows.md"
PYTEST = Path(sys.executable).with_name("pytest")

APP = "from service.examples import bench_app as app\n"
TEST = """from contracts.bench import bench_machine_contract
from my_workflows.app import app
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.testing import InMemoryBroker, InMemoryMemory


async def test_the_bench_workflow():
    factory = create_arvo_orchestrator_event_factory(bench_machine_contract.version("1.0.0"))
    init = factory.init(source="com.my.tests", data={"parentSubject$$": None, "a": 1, "b": 2})
    final = await InMemoryBroker(app(InMemoryMemory())).resolve(init, require_reply=True)
    assert final.data == {"result": 6}
"""


def documented_configuration() -> str:
    """The ``toml`` block of the page's "pytest configuration" section."""
    section = PAGE.read_text(encoding="utf-8").split("## pytest configuration", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"^```toml\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return str(block)


def run_pytest(project: Path) -> subprocess.CompletedProcess[str]:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return subprocess.run(
        [str(PYTEST), "-q", "-p", "no:cacheprovider", "-W", "error::pytest.PytestDeprecationWarning"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def new_project(directory: Path, configuration: str) -> Path:
    (directory / "my_workflows").mkdir(parents=True)
    (directory / "my_workflows" / "__init__.py").write_text("")
    (directory / "my_workflows" / "app.py").write_text(APP)
    (directory / "tests").mkdir()
    (directory / "tests" / "test_flow.py").write_text(TEST)
    (directory / "pyproject.toml").write_text(configuration)
    return directory


def test_the_documented_configuration_runs_a_new_projects_async_tests_with_plain_pytest(
    tmp_path: Path,
) -> None:
    configuration = documented_configuration()
    assert 'asyncio_mode = "auto"' in configuration
    result = run_pytest(new_project(tmp_path / "project", configuration))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "warning" not in result.stdout.lower()


def test_without_its_pythonpath_line_the_project_package_is_not_found_as_the_page_says(
    tmp_path: Path,
) -> None:
    configuration = "".join(
        line for line in documented_configuration().splitlines(keepends=True) if "pythonpath" not in line
    )
    result = run_pytest(new_project(tmp_path / "project", configuration))
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'my_workflows'" in result.stdout
    assert "ModuleNotFoundError: No module named 'my_workflows'" in PAGE.read_text(encoding="utf-8")
