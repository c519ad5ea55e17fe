"""Every Python code block of README.md and docs/*.md runs, so a snippet cannot rot (issue 12).

The conventions, for whoever writes the docs:

* A block is Python when its fence's info string starts with ``python`` or ``py``. Other blocks
  (``sh``, ``toml``, ``json``, ``mermaid``, none) are not run.
* The Python blocks of one page run in order, as one module: a block may use what the blocks above it
  on the same page defined (imports, contracts, handlers). Every page starts from a fresh module, and
  nothing outside the repository is needed: no Kafka, no Redis, no network.
* A block that is not meant to run is a **fragment**: write ``<!-- fragment -->`` or
  ``<!-- fragment: why -->`` as the last non-blank line before its fence (GitHub does not render
  it). Fragments are not run but must still be valid Python (they are compiled). Use them for code
  that needs the broker, Redis or the network, and for shapes with placeholders.
* A block may ``await`` at top level; it runs in the test's event loop.
* After a page's blocks ran, every ``test*`` function the page defined is called as pytest with
  ``asyncio_mode = "auto"`` would: ``async def`` tests are awaited, ``@pytest.mark.parametrize`` is
  expanded (other fixtures are not available: a test that asks for one fails here).
* Code is compiled with the page's file name and line numbers: a traceback names the page and the
  Markdown line (``File "docs/writing-workflows.md", line 120``).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import linecache
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
FRAGMENT = re.compile(r"^\s*<!--\s*fragment\b.*-->\s*$")
PYTHON_INFO = {"python", "py", "python3"}

# Blocks of pages this test's authors do not own, that need the broker or Redis and are not marked yet:
# (page, first code line) -> why. They are handled as fragments until their page marks them
# ``<!-- fragment -->``; then the entry can go. Nothing else may be listed here.
PENDING_FRAGMENTS: dict[tuple[str, str], str] = {
    ("docs/operating.md", "async with ArvoClient(load_settings()) as client:"): "needs the Kafka broker",
    ("docs/operating.md", "import asyncio"): "needs Redis",
}


@dataclass(frozen=True)
class Block:
    """One fenced Python block: its first code line (1-based, in the page) and its code."""

    page: str
    line: int
    code: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(text: str, page: str) -> list[Block]:
    """The Python blocks of the Markdown ``text`` of ``page``, fragments included (marked, or pending)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip().split(maxsplit=1)
        end = index + 1
        while end < len(lines) and not re.match(rf"^[ \t]*{fence[0]}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        if info and info[0].lower() in PYTHON_INFO:
            body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
            previous = next((lines[at] for at in range(index - 1, -1, -1) if lines[at].strip()), "")
            first = next((line for line in body if line.strip()), "")
            marked = bool(FRAGMENT.match(previous)) or (page, first.strip()) in PENDING_FRAGMENTS
            blocks.append(Block(page, index + 2, "\n".join(body) + "\n", marked))
        index = end + 1
    return blocks


def page_blocks(path: Path) -> list[Block]:
    return python_blocks(path.read_text(encoding="utf-8"), path.relative_to(REPO_ROOT).as_posix())


PAGES_WITH_PYTHON = [page for page in PAGES if page_blocks(page)]


def _padded(block: Block) -> str:
    """The block's code preceded by blank lines, so line numbers are the page's."""
    return "\n" * (block.line - 1) + block.code


def _register_source(page: str, blocks: list[Block]) -> None:
    """Let tracebacks (and ``inspect``) show the page's code lines: a linecache entry for the page name.

    The entry holds the page with every line outside the blocks that run blanked out, so it is Python
    that parses as a whole (what the machine definition check reads to find emitted event types).
    """
    total = max(block.line + block.code.count("\n") for block in blocks)
    lines = ["\n"] * total
    for block in blocks:
        for offset, text in enumerate(block.code.splitlines()):
            lines[block.line - 1 + offset] = text + "\n"
    linecache.cache[page] = (sum(map(len, lines)), None, lines, page)


def _parametrized_calls(function: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    """The keyword arguments of each call pytest would make of ``function`` (parametrize only)."""
    axes: list[list[dict[str, Any]]] = []
    for mark in getattr(function, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [name.strip() for name in names.split(",")] if isinstance(names, str) else list(names)
        axis = []
        for value in values:
            row = value.values if hasattr(value, "values") and hasattr(value, "marks") else value
            axis.append(dict(zip(names, row if len(names) > 1 else (row,), strict=True)))
        axes.append(axis)
    for combination in itertools.product(*axes):
        merged: dict[str, Any] = {}
        for part in combination:
            merged.update(part)
        yield merged


async def _run_tests(module: types.ModuleType, page: str) -> int:
    ran = 0
    for name, function in list(vars(module).items()):
        if not (name.startswith("test") and inspect.isfunction(function)):
            continue
        for arguments in _parametrized_calls(function):
            missing = [p for p in inspect.signature(function).parameters if p not in arguments]
            assert not missing, (
                f"{page}: {name} asks for fixtures {missing}; the docs harness only expands parametrize"
            )
            try:
                outcome = function(**arguments)
                if inspect.isawaitable(outcome):
                    await outcome
            except BaseException as error:
                error.add_note(f"in {name}({arguments}) defined in {page}")
                raise
            ran += 1
    return ran


async def run_page(blocks: list[Block]) -> int:
    """Compile every block, run the ones that are not fragments, then the tests they defined.

    Returns:
        How many test calls ran.

    """
    for block in blocks:  # fragments too must at least be Python
        try:
            compile(_padded(block), block.page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as error:
            pytest.fail(f"{block.where}: the block is not valid Python: {error}")
    runnable = [block for block in blocks if not block.fragment]
    if not runnable:
        return 0
    page = runnable[0].page
    _register_source(page, runnable)
    module = types.ModuleType("docs_snippets_" + re.sub(r"\W", "_", page))
    module.__file__ = page
    sys.modules[module.__name__] = module
    try:
        for block in runnable:
            code = compile(_padded(block), page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            try:
                if code.co_flags & inspect.CO_COROUTINE:
                    await eval(code, vars(module))
                else:
                    exec(code, vars(module))
            except BaseException as error:
                error.add_note(f"in the Python block at {block.where}")
                raise
        return await _run_tests(module, page)
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("path", PAGES_WITH_PYTHON, ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
async def test_python_blocks_of_the_page_run(path: Path) -> None:
    await run_page(page_blocks(path))


def test_the_conventions_are_recognised() -> None:
    text = (
        "# Probe\n\n```python\nx = 1\n```\n\n<!-- fragment: needs Kafka -->\n\n```py\nawait consume()\n```\n\n"
        "```sh\nexit 1\n```\n\n- list item:\n\n  ```python\n  y = x + 1\n  ```\n\n````python\n```\n````\n"
    )
    blocks = python_blocks(text, "docs/probe.md")
    assert [(block.line, block.code, block.fragment) for block in blocks] == [
        (4, "x = 1\n", False),
        (10, "await consume()\n", True),
        (20, "y = x + 1\n", False),
        (24, "```\n", False),
    ]


PROBE = """\
# Probe

```python
import asyncio
import pytest

await asyncio.sleep(0)
calls = []
```

```python
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(("a", "b"), [(10, 20), pytest.param(30, 40, id="named")])
async def test_sums(n, a, b):
    calls.append(n + a + b)


def test_sync():
    calls.append(0)
```
"""


async def test_the_harness_runs_top_level_await_async_tests_and_parametrize() -> None:
    assert await run_page(python_blocks(PROBE, "docs/probe.md")) == 5
    probe = sys.modules.get("docs_snippets_docs_probe_md")
    assert probe is None  # the page's module is gone once it ran


async def test_a_failing_block_names_the_page_and_its_line() -> None:
    page = PROBE + "\n```python\nassert calls == ['x'], 'said no'\n```\n"
    with pytest.raises(AssertionError, match="said no") as caught:
        await run_page(python_blocks(page, "docs/probe.md"))
    assert caught.value.__notes__ == ["in the Python block at docs/probe.md:23"]
    assert (str(caught.traceback[-1].path), caught.traceback[-1].lineno + 1) == ("docs/probe.md", 23)
    assert linecache.getline("docs/probe.md", 23).startswith("assert calls == ['x']")
