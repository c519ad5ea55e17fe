"""Stateless event handlers (spec 5): one function per contract version, no state, no lease.

A handler function receives a :class:`HandlerContext` and returns nothing, one output dict or a
list of them. An output has ``type`` (one of the version's emit types) and ``data``, and optionally
``id`` (an ``EventIdSpec`` or ``{"deduplication", "value"}``), ``to``, ``accesscontrol``,
``redirectto``, ``executionunits``, ``domain`` (list of domains or :class:`~service.arvo.domain.ArvoDomain`
symbols) and ``__extensions``. Replies go to ``output.to ?? event.redirectto ?? event.source``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import pydantic
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.arvo.blocking import enter_handler, is_async_callable, leave_handler, run_sync_handler
from service.arvo.contract import ArvoContract, EventDataschemaUtil, VersionedArvoContract
from service.arvo.errors import ArvoValidationError, ConfigViolation, ContractViolation, is_violation_error
from service.arvo.event import ArvoEvent, data_schema_of, engine_event
from service.arvo.execution import ExecutionOutcome, ExecutionResult, InheritFrom
from service.arvo.orchestration.domains import normalise_domains, resolve_domains
from service.arvo.orchestration.emittables import validation_details
from service.arvo.orchestration.ids import emitted_event_id
from service.arvo.orchestration.system_errors import create_system_error_events
from service.arvo.telemetry import (
    exception_to_span,
    handler_span,
    log_to_span,
    set_emittables_attributes,
)

__all__ = [
    "ArvoEventHandler",
    "HandlerContext",
    "HandlerDomains",
    "HandlerFunction",
    "HandlerOutput",
    "create_arvo_event_handler",
]

_ORCHESTRATION_CONTEXT = "domain.orchestration.context"
_HANDLER_EXECUTION: Mapping[str, str] = {
    "arvo.handler.execution.status": "normal",
    "arvo.handler.execution.type": "handler",
}
"""The handler span's initial execution attributes."""


class HandlerOutput(TypedDict, total=False):
    """One event a handler function emits (``type`` and ``data`` required in practice)."""

    type: str
    data: Mapping[str, Any]
    id: Any
    to: str
    accesscontrol: str
    redirectto: str
    executionunits: float
    domain: list[str | None]
    __extensions: Mapping[str, str | bool | int | float | None]


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What a handler function receives.

    Attributes:
        event: The consumed event (validated against the contract version).
        source: The handler's source (its contract type).
        contract: The versioned contract the event was resolved to.
        domain: ``{"self": contract domain, "event": event domain}``.
        span: The handler span.
        span_headers: ``(traceparent, tracestate)`` of the handler span.

    """

    event: ArvoEvent
    source: str
    contract: VersionedArvoContract
    domain: dict[str, str | None]
    span: Span
    span_headers: tuple[str | None, str | None]

    @property
    def data(self) -> dict[str, Any]:
        """Shortcut for ``event.data``."""
        return self.event.data


HandlerFunction = Callable[
    [HandlerContext],
    Awaitable[HandlerOutput | Sequence[HandlerOutput] | None]
    | HandlerOutput
    | Sequence[HandlerOutput]
    | None,
]


@dataclass(frozen=True, slots=True)
class HandlerDomains:
    """Default domains of handler emissions (spec 5.1)."""

    emits: Sequence[str | None] = (_ORCHESTRATION_CONTEXT,)
    system_error: Sequence[str | None] = (_ORCHESTRATION_CONTEXT,)


class ArvoEventHandler:
    """A stateless service bound to one contract; see the module docstring."""

    def __init__(
        self,
        *,
        contract: ArvoContract,
        executionunits: float,
        handler: Mapping[str, HandlerFunction],
        domains: HandlerDomains | None = None,
        span_attributes: Mapping[str, Any] | None = None,
        span_name: Callable[[ArvoEvent], str] | None = None,
        span_kind: SpanKind = SpanKind.CONSUMER,
        include_error_stack: bool = False,
    ) -> None:
        for version in contract.sorted_versions("ASC"):
            if version not in handler:
                raise ValueError(
                    f"Contract {contract.uri} requires handler implementation for version {version}"
                )
        self.contract = contract
        self.executionunits = executionunits
        self.handler = dict(handler)
        self._kinds: dict[str, tuple[HandlerFunction, bool]] = {}
        """Per version: its function and whether it is ``async`` (else it runs in a worker thread)."""
        self.domains = domains or HandlerDomains()
        self.include_error_stack = include_error_stack
        self.span_kind = span_kind
        self._span_name = span_name or (lambda _event: f"Handler<{contract.uri}>")
        self.span_attributes = {
            "arvo.span.kind": "handler.simple",
            "openinference.span.kind": "CHAIN",
            **(span_attributes or {}),
            "arvo.handler.source": contract.type,
            "arvo.contract.uri": contract.uri,
        }

    @property
    def source(self) -> str:
        """The event type this handler consumes (its contract type)."""
        return self.contract.type

    @property
    def domain(self) -> str | None:
        """The contract's domain."""
        return self.contract.domain

    @property
    def system_error_schema(self) -> Any:
        """``{type: sys.<type>.error, schema}`` of the contract."""
        return self.contract.system_error

    async def execute(self, event: ArvoEvent, *, inherit_from: InheritFrom = "EVENT") -> ExecutionResult:
        """Validate ``event``, run the version's function and build its events (spec 5.3).

        Raises:
            ConfigViolation: type mismatch or unknown contract version.
            ContractViolation: dataschema URI mismatch, invalid input or output data.
            ViolationError: any violation raised by the handler function itself.

        """
        with handler_span(
            self._span_name(event),
            kind=self.span_kind,
            attributes=self.span_attributes,
            traceparent=event.traceparent,
            tracestate=event.tracestate,
            inherit_from=inherit_from,
            execution=_HANDLER_EXECUTION,
            consumable=event,
        ) as (span, headers):
            recording = span.is_recording()
            try:
                events = await self._execute(event, span, headers)
                outcome = ExecutionOutcome.EXECUTED
                if recording:
                    # OK is final in the SDK, so it is set once the outcome is known.
                    span.set_status(Status(StatusCode.OK))
            except Exception as error:
                if recording:
                    span.set_attribute("arvo.handler.execution.status", "failure")
                    exception_to_span(span, error, status_message=f"Event processing failed: {error}")
                if is_violation_error(error):
                    raise
                events = create_system_error_events(
                    error=error,
                    event=event,
                    source=self.source,
                    self_contract=self.contract.version("latest"),
                    kind="handler",
                    domains=self.domains.system_error,
                    parent_subject=None,
                    init_event_id=event.id,
                    executionunits=self.executionunits,
                    traceparent=headers[0],
                    tracestate=headers[1],
                    include_stack=self.include_error_stack,
                )
                outcome = ExecutionOutcome.SYSTEM_ERROR
            if recording:
                set_emittables_attributes(span, events)
                log_to_span(span, "INFO", f"Execution completed and emitted {len(events)} events")
            return ExecutionResult(events, outcome)

    def _resolve_version(self, event: ArvoEvent, span: Span) -> VersionedArvoContract:
        if event.type != self.contract.type:
            raise ConfigViolation(
                f"Event type mismatch: Received '{event.type}', expected '{self.contract.type}'"
            )
        parsed = EventDataschemaUtil.parse(event)
        if parsed is not None and parsed.uri and parsed.uri != self.contract.uri:
            raise ContractViolation(
                f"Contract URI mismatch: Handler expects '{self.contract.uri}' but event dataschema "
                f"specifies '{event.dataschema}'. Events must reference the same contract URI as their "
                "handler."
            )
        if parsed is None:
            log_to_span(
                span,
                "WARNING",
                f"Version resolution failed for event with dataschema '{event.dataschema}'. Defaulting to "
                f"latest version of contract (uri={self.contract.uri})",
            )
        version = parsed.version if parsed is not None else "latest"
        try:
            return self.contract.version(version)
        except ValueError as error:
            raise ConfigViolation(
                f"Invalid contract version: {version}. Available versions: "
                f"{', '.join(self.contract.sorted_versions('ASC'))}"
            ) from error

    async def _execute(
        self, event: ArvoEvent, span: Span, headers: tuple[str | None, str | None]
    ) -> list[ArvoEvent]:
        versioned = self._resolve_version(event, span)
        schema = versioned.accepts.schema
        try:
            # Data this process already validated with this very schema (an event its own engine or
            # factory built) is not validated again; anything decoded from the wire is.
            if data_schema_of(event) is not schema:
                schema.validate(event.data)
        except (pydantic.ValidationError, ValueError, TypeError) as error:
            raise ContractViolation(
                f"Input event payload validation failed: {validation_details(error)}"
            ) from error
        function = self.handler[versioned.version]
        context = HandlerContext(
            event=event,
            source=self.source,
            contract=versioned,
            domain={"self": self.contract.domain, "event": event.domain},
            span=span,
            span_headers=headers,
        )
        # A synchronous function runs in the handler thread pool (service.arvo.blocking), never on
        # the loop; the slot names the running handler for the loop-lag watchdog.
        token = enter_handler(self.source, event)
        try:
            kind = self._kinds.get(versioned.version)
            if kind is None or kind[0] is not function:
                kind = self._kinds[versioned.version] = (function, is_async_callable(function))
            if kind[1]:
                returned = function(context)
            else:
                returned = await run_sync_handler(function, context, source=self.source, event=event)
            outputs = await returned if inspect.isawaitable(returned) else returned
        finally:
            leave_handler(token)
        if outputs is None:
            return []
        items: Sequence[Mapping[str, Any]] = [outputs] if isinstance(outputs, Mapping) else list(outputs)
        return [
            emitted
            for index, item in enumerate(items)
            for emitted in self._emit(index, item, event, versioned, headers)
        ]

    def _emit(
        self,
        index: int,
        item: Mapping[str, Any],
        event: ArvoEvent,
        versioned: VersionedArvoContract,
        headers: tuple[str | None, str | None],
    ) -> list[ArvoEvent]:
        output_type = item.get("type")
        schema = versioned.emits.get(output_type) if isinstance(output_type, str) else None
        if schema is None:
            raise ContractViolation(
                f"Emit Event data validation failed: No contract available for {output_type}"
            )
        try:
            data = schema.validate(item.get("data"))
            domains = resolve_domains(
                normalise_domains(item.get("domain"), self.domains.emits),
                parent_subject=None,
                triggering_event=event,
                self_contract=versioned,
                event_contract=versioned,
            )
        except (pydantic.ValidationError, ValueError, TypeError) as error:
            raise ContractViolation(
                f"Emit Event data validation failed: {validation_details(error)}"
            ) from error
        executionunits = item.get("executionunits")
        extensions = item.get("__extensions")
        emitted: list[ArvoEvent] = []
        for copy_index, domain in enumerate(domains):
            try:
                emitted.append(
                    engine_event(
                        id=emitted_event_id(
                            source=self.source,
                            consumed=event,
                            index=index,
                            domain=domain,
                            copy_index=copy_index,
                            requested=item.get("id"),
                        ),
                        source=self.source,
                        type=output_type,  # type: ignore[arg-type]  # checked above: a str emit type
                        subject=event.subject,
                        data=data,
                        dataschema=versioned.dataschema,
                        to=item.get("to") or event.redirectto or event.source,
                        accesscontrol=item.get("accesscontrol") or event.accesscontrol,
                        redirectto=item.get("redirectto"),
                        executionunits=executionunits if executionunits is not None else self.executionunits,
                        traceparent=headers[0],
                        tracestate=headers[1],
                        parentid=event.id,
                        domain=domain,
                        time=item.get("time"),
                        extensions=extensions if isinstance(extensions, Mapping) else None,
                        data_schema=schema,
                    )
                )
            except ArvoValidationError as error:
                raise ContractViolation(str(error)) from error
        return emitted


def create_arvo_event_handler(
    *,
    contract: ArvoContract,
    executionunits: float,
    handler: Mapping[str, HandlerFunction],
    domains: HandlerDomains | None = None,
    span_attributes: Mapping[str, Any] | None = None,
    include_error_stack: bool = False,
) -> ArvoEventHandler:
    """Build an :class:`ArvoEventHandler` (spec 5.1)."""
    return ArvoEventHandler(
        contract=contract,
        executionunits=executionunits,
        handler=handler,
        domains=domains,
        span_attributes=span_attributes,
        include_error_stack=include_error_stack,
    )
