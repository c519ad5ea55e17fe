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

Service commands (``arvo run``, ``publish``, ``inspect``, ``instances``, ``dlq``) read the service
settings (``ARVO_*`` environment variables and ``.env``); an invalid setting is reported as the
settings loader words it (one line per variable) with exit status 1. ``arvo publish --wait`` has its
own exit statuses: 0 completion, 1 system error, 2 nothing arrived in time.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from service.arvo.errors import ValidationProblem
    from service.arvo.event import ArvoEvent
    from service.arvo.memory import Memory
    from service.runtime.client import ArvoClient
    from service.runtime.dlq import DeadLetterEntry
    from service.runtime.routing import TopicRouter
    from service.runtime.settings import ServiceSettings

__all__ = ["app", "dlq_app", "event_app", "instances_app", "main", "subject_app"]

_T = TypeVar("_T")

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
instances_app = typer.Typer(help="Orchestration instances stored in Redis.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="The dead-letter topic: records that could not be processed. List and replay them.",
    no_args_is_help=True,
)
app.add_typer(subject_app, name="subject")
app.add_typer(event_app, name="event")
app.add_typer(instances_app, name="instances")
app.add_typer(dlq_app, name="dlq")

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


# --------------------------------------------------------------------------- the service


_SHORT_MESSAGE_CHARS = 60
_CLI_SOURCE = "com.arvo.cli"


class _StatusChoice(StrEnum):
    """Instance statuses accepted by ``arvo instances list --status``."""

    active = "active"
    done = "done"
    failed = "failed"
    parked = "parked"


def _service_settings(**overrides: Any) -> ServiceSettings:
    """Load the service settings (``ARVO_*``, ``.env``); exit 1 with the loader's lines when invalid."""
    from service.runtime.settings import SettingsError, load_settings

    try:
        return load_settings(**{name: value for name, value in overrides.items() if value is not None})
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


def _describe(error: BaseException) -> str:
    name = type(error).__name__
    text = str(error)
    if not text or text == name:
        return name
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


def _run_async(coroutine: Coroutine[Any, Any, _T], *, what: str) -> _T:
    """Run ``coroutine`` on uvloop; an unexpected error exits 1 with one line naming ``what``."""
    import uvloop

    try:
        return uvloop.run(coroutine)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception as error:
        _fail(f"{what} failed: {_describe(error)}")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal; tab-separated lines (header first) when piped."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers, highlight=False)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    for row in [headers, *rows]:
        typer.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))


def _shorten(text: str, limit: int = _SHORT_MESSAGE_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _time_of_ms(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _json_object(text: str, *, what: str) -> dict[str, Any]:
    import orjson

    raw = sys.stdin.buffer.read() if text == _STDIN else text.encode("utf-8")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _fail(f"{what} is not JSON: {exc}")
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- arvo run


@app.command("run")
def run(app_spec: Annotated[str | None, typer.Option("--app", help=_APP_HELP)] = None) -> None:
    """Run the service: consume the app's topics, run its handlers, produce what they emit.

    Configured by ARVO_* environment variables (and .env). SIGTERM or SIGINT stops it gracefully:
    in-flight records finish and their offsets are committed, then it exits 0. It exits 1 when it
    cannot start or its consumer loop fails.
    """
    settings = _service_settings(app=app_spec)
    from service.apps import AppLoadError, load_app_factory

    try:
        load_app_factory(settings.app)
    except AppLoadError as error:
        _fail(str(error))
    import structlog
    import uvloop

    from service.runtime.app import run_service
    from service.runtime.logging import configure_logging

    configure_logging(log_format=settings.log_format, log_level=settings.log_level)
    log = structlog.get_logger("arvo.cli")
    try:
        failure = uvloop.run(run_service(settings))
    except KeyboardInterrupt:  # before the signal handlers were installed
        _fail("interrupted while starting", code=130)
    except Exception as error:
        log.error("service failed", error=_describe(error), exc_info=True)
        _fail(f"service failed: {_describe(error)}")
    if failure is not None:
        _fail(f"consumer loop failed: {_describe(failure)}")


# --------------------------------------------------------------------------- arvo publish


def _open_client(settings: ServiceSettings, router: TopicRouter | None = None) -> ArvoClient:
    """The Kafka client of ``settings`` (replaced in unit tests)."""
    from service.runtime.client import ArvoClient

    return ArvoClient(settings, router=router)


async def _publish_event(
    settings: ServiceSettings,
    router: TopicRouter,
    event: ArvoEvent,
    *,
    reply_topics: Sequence[str],
    timeout_s: float,
    on_published: Callable[[], None],
    on_tick: Callable[[float], None] | None = None,
) -> ArvoEvent | None:
    """Publish ``event``; with ``reply_topics``, return the first completion or system error of it.

    The client follows the reply topics from their end *before* publishing, so a reply can never be
    missed. Returns ``None`` without reply topics, or when ``timeout_s`` passes.
    """
    import asyncio

    from service.runtime.otel import configure_tracing, shutdown_tracing

    async def published() -> None:
        # The publish's spans are exported before the wait, which can be long.
        await asyncio.to_thread(shutdown_tracing)
        on_published()

    async with _open_client(settings, router) as client:
        # With OTEL_* configured, the publish's `send` span is the root of the workflow's trace: set up
        # only now, after the event was built, so the init carries no factory-span context.
        configure_tracing()
        try:
            if not reply_topics:
                await client.publish([event])
                await published()
                return None
            return await client.publish_and_wait(
                event, reply_topics=reply_topics, timeout_s=timeout_s, on_published=published, on_tick=on_tick
            )
        finally:
            await asyncio.to_thread(shutdown_tracing)  # when the publish failed (a no-op otherwise)


@app.command("publish")
def publish(
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE",
            help="The type to start: an orchestrator's or resumable's init type (arvo.orc.bench) or a"
            " service's accepted type (com.bench.add).",
        ),
    ],
    *,
    data: Annotated[
        str, typer.Option("--data", help="Event data as a JSON object, or - to read it from stdin.")
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the completion (or system error) and print it as JSON.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds --wait waits; exit status 2 after that.")
    ] = 60.0,
    source: Annotated[
        str, typer.Option("--source", help="The event's source: the initiator that receives the reply.")
    ] = _CLI_SOURCE,
    redirectto: Annotated[
        str | None, typer.Option("--redirectto", help="Send the completion to this type instead.")
    ] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="The event's domain.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Contract version (default: the latest).")
    ] = None,
    app_spec: Annotated[str | None, typer.Option("--app", help=_APP_HELP)] = None,
) -> None:
    """Build an event through the app's contract for TYPE and publish it to its topic.

    Prints the event id and subject. With --wait, then prints the first completion or system error
    of it as JSON: exit status 0 for a completion, 1 for a system error, 2 when nothing arrived
    within --timeout seconds.
    """
    settings = _service_settings(app=app_spec)
    payload = _json_object(data, what="--data")
    from service.apps import AppLoadError, EntryEventError, build_entry_event, build_handlers
    from service.arvo.memory import InMemoryMemory
    from service.runtime.client import reply_topics
    from service.runtime.routing import RoutingError, TopicRouter

    try:
        # Built only to read their contracts: nothing runs, so an in-process memory will do.
        handlers = build_handlers(settings.app, InMemoryMemory())
        event = build_entry_event(
            handlers,
            event_type,
            data=payload,
            source=source,
            version=version,
            redirectto=redirectto,
            domain=domain,
        )
        router = TopicRouter.from_settings(settings)
        replies = reply_topics(router, source=source, redirectto=redirectto, domain=domain) if wait else []
        router.route_event(event)
    except (AppLoadError, EntryEventError, RoutingError) as error:
        _fail(str(error))

    def announce() -> None:
        typer.echo(f"id: {event.id}")
        typer.echo(f"subject: {event.subject}")

    if wait and sys.stderr.isatty():
        from rich.console import Console

        label = f"waiting for the completion of {event.type} {event.id}"
        with Console(stderr=True).status(label) as status:

            def tick(elapsed: float) -> None:
                status.update(f"{label} ({elapsed:.0f} s)")

            reply = _run_async(
                _publish_event(
                    settings,
                    router,
                    event,
                    reply_topics=replies,
                    timeout_s=timeout,
                    on_published=announce,
                    on_tick=tick,
                ),
                what="publish",
            )
    else:
        reply = _run_async(
            _publish_event(
                settings, router, event, reply_topics=replies, timeout_s=timeout, on_published=announce
            ),
            what="publish",
        )
    if not wait:
        return
    if reply is None:
        _fail(f"no completion or system error of {event.id} within {timeout:g} s", code=2)
    from service.runtime.client import answers

    _print_json(reply.to_dict())
    if answers(reply, event) is False:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- arvo inspect / instances


def _open_memory(settings: ServiceSettings) -> Memory:
    """The memory of ``settings`` (the service's store; replaced in unit tests)."""
    from service.runtime.stores import open_memory

    return open_memory(settings)


async def _with_memory(settings: ServiceSettings, action: Callable[[Memory], Awaitable[_T]]) -> _T:
    """Run ``action`` on the memory of ``settings`` and close the memory afterwards."""
    memory = _open_memory(settings)
    try:
        return await action(memory)
    finally:
        await memory.close()


def _instance_key(text: str) -> str:
    """The instance key of a subject, or ``text`` itself when it already is ``<orchestrator>:<id>``."""
    from service.arvo.memory import split_instance_key
    from service.arvo.subject import ArvoOrchestrationSubject

    if ":" in text:  # base64 subjects never contain ':'
        try:
            split_instance_key(text)
        except ValueError as error:
            _fail(str(error))
        return text
    try:
        return ArvoOrchestrationSubject.parse(text).instance_key
    except ValueError as error:
        _fail(f"invalid subject: {_subject_error_cause(error)}")


def _compact_json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _instance_lines(key: str, record: dict[str, Any]) -> list[tuple[str, str]]:
    parked = record.get("parkedReason")
    status = "parked" if parked else str(record.get("status"))
    lines = [
        ("instance", key),
        ("kind", str(record.get("kind", "-"))),
        ("status", status),
        ("executionStatus", str(record.get("executionStatus", "-"))),
        ("completed", "true" if record.get("completed") else "false"),
    ]
    # A failure record keeps the state from before the failure under "previous".
    state = record if record.get("executionStatus") != "failure" else (record.get("previous") or {})
    if record.get("kind") == "resumable" or "state$$" in state:
        lines.append(("state", _compact_json(state.get("state$$"))))
    else:
        lines.append(("machine value", _compact_json(state.get("value"))))
    error = record.get("error")
    if record.get("executionStatus") == "failure" and isinstance(error, dict):
        lines.append(("error", f"{error.get('errorName')}: {_shorten(str(error.get('errorMessage')), 300)}"))
    if parked:
        lines.append(("parked reason", _shorten(str(parked), 300)))
    lines.append(("parent subject", str(record.get("parentSubject") or "-")))
    events = record.get("events") or {}
    consumed = events.get("consumed") or {}
    if consumed:
        lines.append(("last consumed", f"{consumed.get('type')} (id {consumed.get('id')})"))
    produced = events.get("produced") or []
    lines.append(("produced", str(len(produced)) if produced else "none"))
    lines.extend(
        ("", f"{item.get('type')} (id {item.get('id')}) to {item.get('to')}")
        for item in produced
        if isinstance(item, dict)
    )
    lines.append(("updated", str(record.get("updatedAt", "-"))))
    return lines


@app.command("inspect")
def inspect_instance(
    subject: Annotated[
        str, typer.Argument(help="The orchestration subject (or an instance key <orchestrator>:<id>).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole stored record as JSON.")] = False,
) -> None:
    """Show an orchestration instance: status, machine state or context, last consumed and produced events."""
    settings = _service_settings()
    key = _instance_key(subject)
    record = _run_async(_with_memory(settings, lambda memory: memory.inspect(key)), what="reading Redis")
    if record is None:
        _fail(f"no instance {key!r} in Redis (key prefix {settings.redis_key_prefix!r})")
    if as_json:
        _print_json(record)
        return
    width = max(len(label) for label, _ in _instance_lines(key, record)) + 2
    for label, value in _instance_lines(key, record):
        typer.echo(f"{label + ':' if label else '':<{width}}{value}")


@instances_app.command("list")
def instances_list(
    orchestrator: Annotated[
        str | None, typer.Option("--orchestrator", help="Only this orchestrator (arvo.orc.order or order).")
    ] = None,
    status: Annotated[_StatusChoice | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 100,
) -> None:
    """List orchestration instances, most recently updated first."""
    settings = _service_settings()
    from service.arvo.memory import InstanceStatus

    name = None
    if orchestrator is not None:
        name = orchestrator if orchestrator.startswith("arvo.orc.") else f"arvo.orc.{orchestrator}"
    wanted = InstanceStatus(status.value) if status is not None else None
    rows = _run_async(
        _with_memory(
            settings, lambda memory: memory.list_instances(orchestrator=name, status=wanted, limit=limit)
        ),
        what="reading Redis",
    )
    _print_table(
        ("INSTANCE", "STATUS", "UPDATED"),
        [(row.key, row.status.value, _time_of_ms(row.updated_at_ms)) for row in rows],
    )


# --------------------------------------------------------------------------- arvo dlq


def _letter_row(entry: DeadLetterEntry) -> tuple[str, ...]:
    origin = (
        f"{entry.origin_topic}/{entry.origin_partition if entry.origin_partition is not None else '?'}"
        f"@{entry.origin_offset if entry.origin_offset is not None else '?'}"
    )
    return (
        str(entry.partition),
        str(entry.offset),
        entry.reason or "-",
        entry.error_class or "-",
        origin,
        _shorten(entry.error_message) or "-",
    )


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, oldest first.")] = 100,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Only this reason (not_json, contract, parked, ...).")
    ] = None,
) -> None:
    """List the dead letters: where each came from and why it could not be processed."""
    settings = _service_settings()
    entries = _run_async(
        _read_letters(settings, limit=limit, reason=reason), what="reading the dead-letter topic"
    )
    _print_table(
        ("PARTITION", "OFFSET", "REASON", "ERROR", "ORIGIN", "MESSAGE"),
        [_letter_row(entry) for entry in entries],
    )


def _select_letters(entries: Sequence[DeadLetterEntry], offsets: Sequence[str]) -> list[DeadLetterEntry]:
    """The entries named by ``offsets`` (``N`` in any partition, or ``P:N``); exit 1 when one is missing."""
    chosen: list[DeadLetterEntry] = []
    for text in offsets:
        partition_text, sep, offset_text = text.rpartition(":")
        if not offset_text.isdigit() or (sep and not partition_text.isdigit()):
            _fail(f"--offset {text!r} must be N or PARTITION:N (non-negative integers)", code=2)
        offset = int(offset_text)
        matches = [
            entry
            for entry in entries
            if entry.offset == offset and (not sep or entry.partition == int(partition_text))
        ]
        if not matches:
            _fail(f"no dead letter at offset {text} (see 'arvo dlq list')")
        if len(matches) > 1:
            where = ", ".join(f"{entry.partition}:{entry.offset}" for entry in matches)
            _fail(f"offset {offset} exists in several partitions ({where}); name one as PARTITION:N")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


async def _read_letters(
    settings: ServiceSettings, *, limit: int | None = None, reason: str | None = None
) -> list[DeadLetterEntry]:
    async with _open_client(settings) as client:
        return await client.dead_letters(limit=limit, reason=reason)


async def _replay_letters(
    settings: ServiceSettings, entries: Sequence[DeadLetterEntry]
) -> list[tuple[DeadLetterEntry, str | None]]:
    """Replay each entry to its origin topic; return ``(entry, error or None)`` per entry."""
    async with _open_client(settings) as client:
        return await client.replay(entries)


@dlq_app.command("replay")
def dlq_replay(
    offsets: Annotated[
        list[str] | None,
        typer.Option("--offset", help="A dead letter to replay: N, or PARTITION:N; repeat for several."),
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every (matching) dead letter.")] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Only dead letters with this reason.")
    ] = None,
) -> None:
    """Publish dead letters again to the topic they came from (original key, value and headers).

    Replay after fixing the cause (a deployment, a configuration); a record that fails again is
    dead-lettered again.
    """
    if bool(offsets) == replay_all:
        _fail("name the dead letters to replay: --offset N (repeatable) or --all", code=2)
    settings = _service_settings()
    entries = _run_async(_read_letters(settings, reason=reason), what="reading the dead-letter topic")
    chosen = list(entries) if replay_all else _select_letters(entries, offsets or [])
    outcomes = _run_async(_replay_letters(settings, chosen), what="replaying")
    failed = 0
    for entry, problem in outcomes:
        if problem is None:
            typer.echo(f"replayed {entry.partition}:{entry.offset} to {entry.origin_topic}")
        else:
            failed += 1
            typer.echo(f"arvo: skipped {entry.partition}:{entry.offset}: {_one_line(problem)}", err=True)
    if not outcomes:
        typer.echo("nothing to replay")
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    main()
