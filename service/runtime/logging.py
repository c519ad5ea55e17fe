"""Logging of the service: structlog, JSON lines in production, a readable console in a terminal.

:func:`configure_logging` sets up one output stream (stdout by default) for both structlog and the
standard library's :mod:`logging` (aiokafka, redis and friends log there):

* ``log_format="json"`` — or ``"auto"`` when the stream is not a terminal (containers, pipes, log
  shippers): one JSON object per line with ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``,
  ``event`` (the message) and the bound key-value pairs;
* ``log_format="console"`` — or ``"auto"`` on a terminal: structlog's aligned, coloured renderer.

Every line written while an OpenTelemetry span is active carries ``trace_id`` and ``span_id``, so a
log line can be found from a trace in Jaeger and back. Library loggers are held at ``WARNING``
(or the configured level when it is higher): aiokafka is chatty at ``INFO``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, Final, TextIO

import orjson
import structlog
from opentelemetry import trace

__all__ = ["LIBRARY_LOGGERS", "add_trace_context", "configure_logging", "uses_json"]

LIBRARY_LOGGERS: Final = ("aiokafka", "kafka", "redis", "asyncio", "opentelemetry")
"""Standard-library loggers of dependencies, held at ``WARNING`` or above."""

_LIBRARY_FLOOR: Final = logging.WARNING
_HANDLER_MARK: Final = "_arvo_log_handler"


def uses_json(log_format: str, stream: TextIO) -> bool:
    """Whether ``log_format`` renders JSON lines on ``stream`` (``auto``: when it is not a terminal)."""
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or exotic streams: machine-readable is the safe choice
        return True


def add_trace_context(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor (structlog): add ``trace_id``/``span_id`` of the current OpenTelemetry span, if any."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def _dumps(value: Any, **kwargs: Any) -> str:
    default = kwargs.get("default") or repr
    return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(
    *,
    log_format: str = "auto",
    log_level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Route structlog and standard-library logging to ``stream`` in the chosen format.

    Calling it again replaces the previous configuration (handlers added by other code, such as
    pytest's log capture, are left in place).

    Args:
        log_format: ``json``, ``console`` or ``auto`` (JSON unless ``stream`` is a terminal).
        log_level: Minimum level name (``DEBUG`` … ``CRITICAL``) of the service's own loggers.
        stream: Where lines go; standard output when omitted.

    Raises:
        ValueError: ``log_level`` is not a level name.

    """
    output = stream if stream is not None else sys.stdout
    level = logging.getLevelNamesMapping().get(log_level.upper())
    if level is None:
        raise ValueError(f"log_level {log_level[:40]!r} is not a level name (DEBUG, INFO, WARNING, ...)")
    json_lines = uses_json(log_format, output)
    shared: Sequence[Any] = (
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
    )
    renderer: Any
    if json_lines:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        finishing: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        colors = False
        try:
            colors = output.isatty()
        except (AttributeError, ValueError):
            colors = False
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        finishing = [renderer]
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=list(shared),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finishing],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, _LIBRARY_FLOOR))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
