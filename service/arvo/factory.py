"""Event factories (spec section 4): build contract-valid events for one contract version.

A factory validates ``data`` against the contract, fills in the contract-derived attributes
(``type``, ``dataschema``, the Arvo content type), creates an orchestration subject when none is
given, and stamps the W3C trace headers of its own INTERNAL span. Validation errors keep the
original messages (``"Accept Event data validation failed: …"``) and list every problem.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError

from service.arvo.contract import (
    ARVO_ORCHESTRATOR_CONTRACT_TYPE,
    PARENT_SUBJECT_KEY,
    ContractSchema,
    VersionedArvoContract,
    validation_problems,
)
from service.arvo.errors import ArvoValidationError, is_violation_error
from service.arvo.event import (
    ARVO_DATA_CONTENT_TYPE,
    ArvoEvent,
    EventIdSpec,
    ExtensionValue,
    create_arvo_event,
    mark_data_schema,
)
from service.arvo.subject import ArvoOrchestrationSubject
from service.arvo.telemetry import exception_to_span, start_span, tracing_enabled

__all__ = [
    "ArvoEventFactory",
    "ArvoOrchestratorEventFactory",
    "EventOptions",
    "create_arvo_event_factory",
    "create_arvo_orchestrator_event_factory",
    "error_data",
]

_PROPAGATOR = TraceContextTextMapPropagator()


class EventOptions(TypedDict, total=False):
    """The optional CloudEvents/Arvo attributes every factory method takes as keyword arguments.

    The factory methods declare them as ``**options: Unpack[EventOptions]``: pass any of them by
    name (``factory.accepts(source=..., data=..., subject=..., to=...)``), or collect them in a dict
    typed ``EventOptions`` and pass ``**options``. Each one means what it means for
    :func:`~service.arvo.event.create_arvo_event`; every one may be omitted or ``None``.
    """

    subject: str | None
    """The orchestration subject; default: a new one (see the factory classes)."""
    id: str | EventIdSpec | None
    """The event id, or an :class:`~service.arvo.event.EventIdSpec`; default: a new UUID."""
    to: str | None
    """The intended consumer; default: the event type."""
    redirectto: str | None
    """Where replies should go instead of ``source``."""
    accesscontrol: str | None
    """An opaque access-control string, propagated."""
    executionunits: float | None
    """The cost metric, propagated."""
    traceparent: str | None
    """W3C ``traceparent``; default: the factory span's."""
    tracestate: str | None
    """W3C ``tracestate``; default: the factory span's."""
    parentid: str | None
    """The id of the event that caused this one."""
    domain: str | None
    """The routing domain (``None``: process locally)."""
    time: str | None
    """The RFC 3339 timestamp; default: now."""
    extensions: Mapping[str, ExtensionValue] | None
    """Further CloudEvents extension attributes."""


_OPTION_NAMES = frozenset(EventOptions.__annotations__)


@dataclass(frozen=True, slots=True)
class _Attributes:
    """The :class:`EventOptions` of one call, checked and with every attribute present."""

    subject: str | None = None
    id: str | EventIdSpec | None = None
    to: str | None = None
    redirectto: str | None = None
    accesscontrol: str | None = None
    executionunits: float | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    parentid: str | None = None
    domain: str | None = None
    time: str | None = None
    extensions: Mapping[str, ExtensionValue] | None = None

    @classmethod
    def of(cls, method: Callable[..., object], options: EventOptions) -> _Attributes:
        """The attributes of ``options``; an unknown keyword is the ``TypeError`` a signature gives."""
        for name in options:
            if name not in _OPTION_NAMES:
                raise TypeError(f"{method.__qualname__}() got an unexpected keyword argument {name!r}")
        return cls(**options)


def error_data(error: BaseException, *, include_stack: bool = False) -> dict[str, str | None]:
    """The system error payload ``{errorName, errorMessage, errorStack}`` of ``error`` (spec 2.7).

    ``errorName`` is the class name (``ViolationError<Type>`` for violations, as the original's
    ``Error.name``); ``errorStack`` is the formatted traceback only when ``include_stack`` is set,
    because stacks disclose internals across services (hazard 5).
    """
    name = getattr(error, "name", None) if is_violation_error(error) else None
    # str(KeyError("x")) is "'x'": use the message itself, as JavaScript's Error.message would be.
    single = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else None
    message = single if isinstance(error, KeyError) and single is not None else str(error)
    return {
        "errorName": name if isinstance(name, str) else type(error).__name__,
        "errorMessage": message,
        "errorStack": "".join(traceback.format_exception(error)) if include_stack else None,
    }


def _span_trace_headers(span: Span) -> tuple[str | None, str | None]:
    """W3C ``traceparent``/``tracestate`` of ``span``; ``(None, None)`` without a valid span context."""
    if not span.get_span_context().is_valid:
        return None, None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent"), carrier.get("tracestate") or None


def _validated(
    schema: ContractSchema, data: object, *, failure: str, event_type: str, dataschema: str
) -> dict[str, Any]:
    try:
        return schema.validate(data)
    except ValidationError as error:
        problems = validation_problems(error)
        raise ArvoValidationError(
            f"{failure}: the data of '{event_type}' does not match contract {dataschema} "
            f"({len(problems)} problem{'s' if len(problems) != 1 else ''})",
            problems,
        ) from error


class ArvoEventFactory:
    """Create the events of one contract version: accepted, emitted and system error events.

    Args:
        contract: The versioned contract (``contract.version("1.0.0")``).

    Every method takes the optional attributes of :class:`EventOptions` (those of
    :func:`~service.arvo.event.create_arvo_event`) as keyword arguments. Defaults: ``subject`` is a
    new orchestration subject (orchestrator = the event type, initiator = ``source``, version = the
    contract version, domain = ``domain``, ``meta.redirectto`` = ``redirectto`` when given), so
    ``source`` must then be a type-format name such as ``com.my.service``; ``traceparent`` and
    ``tracestate`` default to the headers of the factory's span; ``to`` defaults to the event type.

    """

    _span_prefix = "EventFactory"

    def __init__(self, contract: VersionedArvoContract) -> None:
        self._contract = contract
        self._span_attributes: dict[str, str] = {
            "openinference.span.kind": "INTERNAL",
            "arvo.contract.uri": contract.uri,
            "arvo.contract.version": contract.version,
        }

    @property
    def contract(self) -> VersionedArvoContract:
        """The versioned contract events are built for."""
        return self._contract

    def accepts(self, *, source: str, data: Mapping[str, Any], **options: Unpack[EventOptions]) -> ArvoEvent:
        """An event of the accepted type, with ``data`` validated (and stripped) by the contract.

        Args:
            source: Who emits the event.
            data: The payload, validated by the accepted schema.
            **options: Optional attributes, see :class:`EventOptions`.

        Raises:
            ArvoValidationError: ``"Accept Event data validation failed: …"`` (a ``ValueError``).
            SubjectError: If a subject must be created and ``source`` is not a type-format name.
            ArvoEventValidationError: If an attribute is invalid.
            TypeError: If a keyword is not one of :class:`EventOptions`.

        """
        attributes = _Attributes.of(self.accepts, options)
        accepts = self._contract.accepts
        dataschema = self._contract.dataschema

        def build(span: Span) -> ArvoEvent:
            valid = _validated(
                accepts.schema,
                data,
                failure="Accept Event data validation failed",
                event_type=accepts.type,
                dataschema=dataschema,
            )
            subject = attributes.subject
            if subject is None:
                subject = self._auto_subject(accepts.type, source, attributes.domain, attributes.redirectto)
            return self._create(
                span,
                attributes,
                type=accepts.type,
                data=valid,
                dataschema=dataschema,
                subject=subject,
                source=source,
                data_schema=accepts.schema,
            )

        return self._in_span(f"accepts<{accepts.type}>", build)

    def emits(
        self, *, type: str, source: str, data: Mapping[str, Any], **options: Unpack[EventOptions]
    ) -> ArvoEvent:
        """An event of the emittable ``type``, with ``data`` validated by that type's schema.

        Args:
            type: One of the contract's emitted types.
            source: Who emits the event.
            data: The payload, validated by the schema of ``type``.
            **options: Optional attributes, see :class:`EventOptions`.

        Raises:
            ValueError: ``"Emit Event data validation failed: No contract available for <type>"``.
            ArvoValidationError: ``"Emit Event data validation failed: …"``.
            SubjectError: If a subject must be created and ``source`` is not a type-format name.
            ArvoEventValidationError: If an attribute is invalid.
            TypeError: If a keyword is not one of :class:`EventOptions`.

        """
        attributes = _Attributes.of(self.emits, options)
        dataschema = self._contract.dataschema

        def build(span: Span) -> ArvoEvent:
            schema = self._contract.emits.get(type)
            if schema is None:
                raise ValueError(f"Emit Event data validation failed: No contract available for {type}")
            valid = _validated(
                schema,
                data,
                failure="Emit Event data validation failed",
                event_type=type,
                dataschema=dataschema,
            )
            subject = attributes.subject
            if subject is None:
                subject = self._auto_subject(type, source, attributes.domain, attributes.redirectto)
            return self._create(
                span,
                attributes,
                type=type,
                data=valid,
                dataschema=dataschema,
                subject=subject,
                source=source,
                data_schema=schema,
            )

        return self._in_span(f"emits<{type}>", build)

    def system_error(
        self,
        *,
        error: BaseException,
        source: str,
        include_stack: bool = False,
        **options: Unpack[EventOptions],
    ) -> ArvoEvent:
        """A ``sys.<type>.error`` event carrying :func:`error_data` of ``error``.

        The dataschema is ``<uri>/0.0.0`` (any version). ``data`` is not validated.

        Args:
            error: The error the event reports.
            source: Who emits the event.
            include_stack: Whether ``errorStack`` carries the traceback.
            **options: Optional attributes, see :class:`EventOptions`.

        Raises:
            SubjectError: If a subject must be created and ``source`` is not a type-format name.
            ArvoEventValidationError: If an attribute is invalid.
            TypeError: If a keyword is not one of :class:`EventOptions`.

        """
        attributes = _Attributes.of(self.system_error, options)
        record = self._contract.system_error

        def build(span: Span) -> ArvoEvent:
            subject = attributes.subject
            if subject is None:
                subject = self._auto_subject(record.type, source, attributes.domain, attributes.redirectto)
            return self._create(
                span,
                attributes,
                type=record.type,
                data=error_data(error, include_stack=include_stack),
                dataschema=record.dataschema,
                subject=subject,
                source=source,
            )

        return self._in_span(f"systemError<{record.type}>", build)

    # ------------------------------------------------------------------------------------ internals

    def _in_span(self, operation: str, build: Callable[[Span], ArvoEvent]) -> ArvoEvent:
        if not tracing_enabled():
            # No SDK: a no-op child span would carry the current span context anyway.
            return build(trace.get_current_span())
        with start_span(f"{self._span_prefix}.{operation}", attributes=self._span_attributes) as span:
            try:
                event = build(span)
            except BaseException as error:
                exception_to_span(span, error)
                raise
            if span.is_recording():
                span.set_attributes(event.otel_attributes)
                span.set_status(Status(StatusCode.OK))
            return event

    def _auto_subject(
        self, orchestrator: str, source: str, domain: str | None, redirectto: str | None
    ) -> str:
        return ArvoOrchestrationSubject.new(
            orchestrator=orchestrator,
            initiator=source,
            version=self._contract.version,
            domain=domain,
            meta={"redirectto": redirectto} if redirectto else None,
        )

    def _create(
        self,
        span: Span,
        attributes: _Attributes,
        *,
        type: str,
        data: dict[str, Any],
        dataschema: str,
        subject: str,
        source: str,
        data_schema: ContractSchema | None = None,
    ) -> ArvoEvent:
        traceparent = attributes.traceparent
        tracestate = attributes.tracestate
        if traceparent is None or tracestate is None:
            span_traceparent, span_tracestate = _span_trace_headers(span)
            traceparent = traceparent if traceparent is not None else span_traceparent
            tracestate = tracestate if tracestate is not None else span_tracestate
        event = create_arvo_event(
            source=source,
            type=type,
            subject=subject,
            data=data,
            id=attributes.id,
            time=attributes.time,
            datacontenttype=ARVO_DATA_CONTENT_TYPE,
            dataschema=dataschema,
            to=attributes.to,
            accesscontrol=attributes.accesscontrol,
            redirectto=attributes.redirectto,
            executionunits=attributes.executionunits,
            traceparent=traceparent,
            tracestate=tracestate,
            parentid=attributes.parentid,
            domain=attributes.domain,
            extensions=attributes.extensions,
        )
        if data_schema is not None:
            # ``data`` is that schema's validated copy: a handler of this process need not check it again.
            mark_data_schema(event, data_schema)
        return event


class ArvoOrchestratorEventFactory(ArvoEventFactory):
    """Factory for an orchestrator contract: adds :meth:`init` and :meth:`complete`.

    Args:
        contract: A version of a contract made by
            :func:`~service.arvo.contract.create_arvo_orchestrator_contract`.

    Raises:
        ValueError: ``"This factory can only be used for ArvoOrchestratorContract"``.

    """

    _span_prefix = "OrchestratorEventFactory"

    def __init__(self, contract: VersionedArvoContract) -> None:
        if contract.metadata.get("contractType") != ARVO_ORCHESTRATOR_CONTRACT_TYPE:
            raise ValueError("This factory can only be used for ArvoOrchestratorContract")
        super().__init__(contract)

    def init(self, *, source: str, data: Mapping[str, Any], **options: Unpack[EventOptions]) -> ArvoEvent:
        """The init event ``arvo.orc.<name>``; ``data`` must contain ``parentSubject$$``.

        Without an explicit ``subject``: with a parent subject, a child subject of it (initiator =
        the parent orchestrator, domain = ``domain`` or the parent's, meta = the parent's plus
        ``redirectto`` = ``redirectto`` or else the parent's *initiator*); without one, a new root
        subject (initiator = ``source``, ``meta.redirectto`` = ``redirectto`` when given).

        Args:
            source: Who starts the orchestration (completions come back to it by default).
            data: The init payload, validated by the accepted schema.
            **options: Optional attributes, see :class:`EventOptions`.

        Raises:
            ArvoValidationError: ``"Init Event data validation failed: …"``.
            SubjectError: If ``parentSubject$$`` is not a valid subject, or ``source`` is not a
                type-format name when a root subject is created.
            ArvoEventValidationError: If an attribute is invalid.
            TypeError: If a keyword is not one of :class:`EventOptions`.

        """
        attributes = _Attributes.of(self.init, options)
        accepts = self._contract.accepts
        dataschema = self._contract.dataschema

        def build(span: Span) -> ArvoEvent:
            valid = _validated(
                accepts.schema,
                data,
                failure="Init Event data validation failed",
                event_type=accepts.type,
                dataschema=dataschema,
            )
            subject = attributes.subject
            if subject is None:
                subject = self._init_subject(
                    valid.get(PARENT_SUBJECT_KEY), source, attributes.domain, attributes.redirectto
                )
            return self._create(
                span,
                attributes,
                type=accepts.type,
                data=valid,
                dataschema=dataschema,
                subject=subject,
                source=source,
                data_schema=accepts.schema,
            )

        return self._in_span(f"init<{accepts.type}>", build)

    def complete(self, *, source: str, data: Mapping[str, Any], **options: Unpack[EventOptions]) -> ArvoEvent:
        """The completion event ``arvo.orc.<name>.done``, validated by the completion schema.

        An auto-created subject has domain ``None`` even when ``domain`` is given: the original
        does not pass the domain to the completion subject (test-pinned), only to the event.

        Args:
            source: Who emits the completion.
            data: The output, validated by the completion schema.
            **options: Optional attributes, see :class:`EventOptions`.

        Raises:
            ArvoValidationError: ``"Emit Event data validation failed: …"``.
            SubjectError: If a subject must be created and ``source`` is not a type-format name.
            ArvoEventValidationError: If an attribute is invalid.
            TypeError: If a keyword is not one of :class:`EventOptions`.

        """
        attributes = _Attributes.of(self.complete, options)
        complete_type = self._contract.complete_event_type
        dataschema = self._contract.dataschema

        def build(span: Span) -> ArvoEvent:
            schema = self._contract.emits.get(complete_type) if complete_type else None
            if complete_type is None or schema is None:
                raise ValueError(
                    f"Emit Event data validation failed: No schema available for {complete_type}"
                )
            valid = _validated(
                schema,
                data,
                failure="Emit Event data validation failed",
                event_type=complete_type,
                dataschema=dataschema,
            )
            subject = attributes.subject
            if subject is None:
                subject = self._auto_subject(complete_type, source, None, attributes.redirectto)
            return self._create(
                span,
                attributes,
                type=complete_type,
                data=valid,
                dataschema=dataschema,
                subject=subject,
                source=source,
                data_schema=schema,
            )

        return self._in_span(f"complete<{complete_type}>", build)

    def _init_subject(
        self, parent_subject: object, source: str, domain: str | None, redirectto: str | None
    ) -> str:
        accepts_type = self._contract.accepts.type
        if not (isinstance(parent_subject, str) and parent_subject):
            return self._auto_subject(accepts_type, source, domain, redirectto)
        parent = ArvoOrchestrationSubject.parse(parent_subject)
        # Quirk 32, kept for parity: the default reply target of a child started through the factory
        # is whoever started the *parent* (its initiator), not the parent orchestrator itself. The
        # orchestrators' own emission path defaults to their own source instead.
        reply_to = redirectto if redirectto is not None else parent.initiator
        return ArvoOrchestrationSubject.from_parent(
            orchestrator=accepts_type,
            subject=parent_subject,
            version=self._contract.version,
            domain=domain,
            meta={"redirectto": reply_to} if reply_to else None,
        )


def create_arvo_event_factory(contract: VersionedArvoContract) -> ArvoEventFactory:
    """A factory for ``contract`` (any contract kind)."""
    return ArvoEventFactory(contract)


def create_arvo_orchestrator_event_factory(contract: VersionedArvoContract) -> ArvoOrchestratorEventFactory:
    """A factory for an orchestrator contract version (adds ``init`` and ``complete``).

    Raises:
        ValueError: ``"This factory can only be used for ArvoOrchestratorContract"``.

    """
    return ArvoOrchestratorEventFactory(contract)
