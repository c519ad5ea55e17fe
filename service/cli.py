"""The ``arvo`` command line (console script ``arvo = service.cli:main``).

Commands are grouped in sub-apps (``arvo subject ...``, ``arvo event ...``). Conventions every command
follows, so scripts can rely on them:

* exit status 0 on success, 1 when the input is invalid, 2 for usage errors (unknown option, ...);
* results go to stdout; a failure is ONE line on stderr starting with ``arvo:`` (never a traceback);
* ``arvo event validate`` is the exception to the one-line rule: it prints every problem of an invalid
  event on stdout, one per line, so the report can be piped and grepped;
* colour only when the stream is a terminal, plain text when piped.

Heavy modules (the Arvo primitives, rich) are imported inside the command functions so that
``arvo --help`` stays fast. To add a command, add a function to ``app`` or to a sub-app (or a new
``typer.Typer`` registered with ``app.add_typer``) and use the ``_fail``/``_print_*`` helpers below.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from service.arvo.errors import ValidationProblem

__all__ = ["app", "event_app", "main", "subject_app"]

app = typer.Typer(
    name="arvo",
    help="Arvo event-driven orchestration: tools for subjects, events and the service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
subject_app = typer.Typer(
    help="Encode and decode orchestration subjects (base64 of zlib-compressed JSON).",
    no_args_is_help=True,
)
event_app = typer.Typer(help="Work with ArvoEvents (CloudEvents JSON).", no_args_is_help=True)
app.add_typer(subject_app, name="subject")
app.add_typer(event_app, name="event")

# Longest error cause echoed on stderr; subjects can be 4 KiB and causes may quote them.
_MAX_ERROR_CHARS = 500
_STDIN = "-"


def main() -> None:
    """Entry point of the ``arvo`` console script."""
    from service.tuning import tune_allocator

    tune_allocator()
    app()


# --------------------------------------------------------------------------- output helpers


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 1] + "…"


def _fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``arvo: <message>`` as one line on stderr and exit with ``code``."""
    line = f"arvo: {_one_line(message)}"
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]{escape(line)}[/]", soft_wrap=True)
    else:
        typer.echo(line, err=True)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    """Print a JSON-serialisable ``value`` indented by 2 (non-ASCII kept), highlighted on a terminal."""
    import json

    text = json.dumps(value, indent=2, ensure_ascii=False)
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print_json(text, indent=2, ensure_ascii=False)
    else:
        typer.echo(text)


def _read_input(source: str, *, what: str) -> bytes:
    """Read a file, or stdin when ``source`` is ``-``; a failure exits 1 with one line."""
    if source == _STDIN:
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        _fail(f"cannot read {what} {source!r}: {exc.strerror or exc}")


def _subject_error_cause(error: BaseException) -> str:
    """The useful part of a ``SubjectError``: its ``Error -> ...`` line, else its first line.

    The message format follows the original (spec 3.2/3.3): a summary line, ``Error -> <cause>`` and
    a line repeating the subject or the content, which is not worth echoing on one line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Error ->"):
            return line.removeprefix("Error ->").strip()
    if lines:
        return lines[0]
    return repr(error.__cause__) if error.__cause__ is not None else type(error).__name__


# --------------------------------------------------------------------------- arvo subject


@subject_app.command("decode")
def subject_decode(
    subject: Annotated[str, typer.Argument(help="The subject string (base64 of zlib JSON).")],
    lenient: Annotated[
        bool,
        typer.Option(
            "--lenient",
            help="Decode like Node does (URL-safe alphabet, junk characters, missing padding, gzip).",
        ),
    ] = False,
) -> None:
    """Print the decoded content of an orchestration subject as JSON."""
    from service.arvo.subject import ArvoOrchestrationSubject

    try:
        parsed = ArvoOrchestrationSubject.parse(subject, lenient=lenient)
    except ValueError as exc:
        _fail(f"invalid subject: {_subject_error_cause(exc)}")
    _print_json(parsed.to_dict())


@subject_app.command("encode")
def subject_encode(
    content: Annotated[
        str,
        typer.Argument(
            help='Subject content as JSON, e.g. \'{"orchestrator": {...}, "execution": {...}, "meta": {}}\','
            " or - to read it from stdin.",
        ),
    ],
) -> None:
    """Validate subject content (JSON) and print the subject string."""
    import orjson

    from service.arvo.subject import ArvoOrchestrationSubject

    raw = sys.stdin.buffer.read() if content == _STDIN else content.encode("utf-8")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _fail(f"invalid subject content: not JSON: {exc}")
    if not isinstance(value, dict):
        _fail(f"invalid subject content: expected a JSON object, got {type(value).__name__}")
    try:
        subject = ArvoOrchestrationSubject.create(value)
    except ValueError as exc:
        _fail(f"invalid subject content: {_subject_error_cause(exc)}")
    typer.echo(subject)


# --------------------------------------------------------------------------- arvo event


def _event_problems(raw: bytes) -> tuple[ValidationProblem, ...]:
    """Every problem that keeps ``raw`` from being a valid ArvoEvent (empty when it is valid).

    Invalid JSON and non-object documents are one problem each, at path ``$``.
    """
    from service.arvo.errors import ArvoValidationError
    from service.arvo.event import ArvoEvent

    try:
        ArvoEvent.from_json(raw)
    except ArvoValidationError as exc:
        return exc.problems
    return ()


@event_app.command("validate")
def event_validate(
    source: Annotated[str, typer.Argument(help="File holding one event as JSON, or - for stdin.")],
) -> None:
    """Check that a file (or stdin) holds a valid ArvoEvent.

    Prints ``ok`` and exits 0 when valid. Otherwise prints every problem on stdout, one per line, as
    ``<field path>: <message> (rule=<rule>, value=<value>)``, and exits 1.
    """
    problems = _event_problems(_read_input(source, what="event file"))
    # click drops the colour codes when stdout is not a terminal.
    if not problems:
        typer.secho("ok", fg=typer.colors.GREEN)
        return
    for problem in problems:
        typer.secho(_one_line(str(problem)), fg=typer.colors.RED)
    raise typer.Exit(1)


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- workflows


_APP_HELP = "Workflow app as module:attribute (default: the embedded examples)."


@app.command("demo")
def demo() -> None:
    """Run the example workflows in memory and print every hop and each final outcome."""
    import asyncio

    from rich.console import Console

    from service.demo_runner import run_demo

    if not asyncio.run(run_demo(Console(highlight=False))):
        raise typer.Exit(1)


@app.command("graph")
def graph(
    orchestrator: Annotated[str, typer.Argument(help="Orchestrator type (arvo.orc.order) or name (order).")],
    version: Annotated[str | None, typer.Option(help="Machine version (default: every version).")] = None,
    app_spec: Annotated[str | None, typer.Option("--app", help=_APP_HELP)] = None,
) -> None:
    """Print an orchestrator's statechart as a Mermaid diagram."""
    from service.apps import DEFAULT_APP, AppLoadError, build_handlers
    from service.arvo.memory import InMemoryMemory
    from service.arvo.orchestrator import ArvoOrchestrator

    wanted = orchestrator if orchestrator.startswith("arvo.orc.") else f"arvo.orc.{orchestrator}"
    try:
        handlers = build_handlers(app_spec or DEFAULT_APP, InMemoryMemory())
    except AppLoadError as error:
        _fail(str(error))
    match = next((handler for handler in handlers if handler.source == wanted), None)
    if match is None:
        known = ", ".join(sorted(h.source for h in handlers if h.source.startswith("arvo.orc.")))
        _fail(f"no orchestrator {wanted!r} in the app (known: {known})")
    if not isinstance(match, ArvoOrchestrator):
        _fail(f"{wanted!r} is a resumable: only statechart orchestrators have a graph")
    machines = [m for m in match.registry.machines if version is None or m.version == version]
    if not machines:
        _fail(f"{wanted!r} has no machine version {version!r}")
    for machine in machines:
        if len(machines) > 1:
            typer.echo(f"%% {wanted} {machine.version}")
        typer.echo(machine.to_mermaid())
