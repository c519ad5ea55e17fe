"""Domain symbols and their resolution (spec 8.4).

An emitted event may name its domain symbolically ("the domain of my contract", "the domain of the
event I am handling", ...). :func:`resolve_event_domain` turns such a symbol into a concrete domain
(or ``None``, the default/local domain). The symbol strings are WIRE constants shared with
TypeScript Arvo; note they are themselves valid domain names (quirk 31), so real domains with these
names cannot be used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry import trace

from service.arvo.errors import SubjectError
from service.arvo.subject import ArvoOrchestrationSubject

if TYPE_CHECKING:
    from service.arvo.contract import VersionedArvoContract
    from service.arvo.event import ArvoEvent

__all__ = ["ArvoDomain", "resolve_event_domain"]


class ArvoDomain:
    """Symbolic domain values understood by :func:`resolve_event_domain`."""

    FROM_SELF_CONTRACT: Final = "domain.contract.self.inherit"
    """The domain of the handler's own contract."""
    FROM_EVENT_CONTRACT: Final = "domain.contract.inherit"
    """The domain of the contract of the event being emitted (``None`` if it has no contract)."""
    FROM_TRIGGERING_EVENT: Final = "domain.event.inherit"
    """The domain of the event being handled."""
    FROM_CURRENT_SUBJECT: Final = "domain.event.current.subject"
    """The ``execution.domain`` of the handled event's subject (``None`` if it does not parse)."""
    FROM_PARENT_SUBJECT: Final = "domain.parent.subject"
    """The ``execution.domain`` of the parent orchestration's subject."""
    ORCHESTRATION_CONTEXT: Final = "domain.orchestration.context"
    """Route back into the orchestration's domain only when a domain boundary was crossed."""
    LOCAL: Final = None
    """The default domain."""


def _subject_domain(subject: str | None, *, lenient: bool) -> str | None:
    """``execution.domain`` of ``subject``; ``None`` when absent or unparseable (logged on the span)."""
    if subject is None:
        return None
    try:
        return ArvoOrchestrationSubject.parse(subject, lenient=lenient).domain
    except SubjectError as error:
        # Recorded, not an error status: plain handlers routinely carry non-orchestration subjects.
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(error)
        return None


def resolve_event_domain(
    *,
    domain_to_resolve: str | None,
    parent_subject: str | None,
    current_subject: str,
    handler_self_contract: VersionedArvoContract,
    event_contract: VersionedArvoContract | None,
    triggering_event: ArvoEvent,
    lenient: bool = False,
) -> str | None:
    """Resolve a (possibly symbolic) domain value to a concrete domain or ``None``.

    Args:
        domain_to_resolve: A literal domain, an :class:`ArvoDomain` symbol, or ``None``/``""``.
        parent_subject: The parent orchestration's subject (``None`` for a root or a plain handler).
        current_subject: The subject of the event being handled.
        handler_self_contract: The handler's own versioned contract.
        event_contract: The contract of the event being emitted, if known.
        triggering_event: The event being handled.
        lenient: Parse subjects as Node does (see :meth:`ArvoOrchestrationSubject.parse`).

    Returns:
        The domain (any other string is returned unchanged and validated later by the event), or
        ``None``. For :attr:`ArvoDomain.ORCHESTRATION_CONTEXT`, with ``current``/``parent`` the
        subject domains and ``trig`` the triggering event's domain: without a parent subject,
        ``None`` if ``trig`` is ``None`` or equals ``current``, else ``current``; with a parent,
        ``None`` if ``current`` equals ``parent``, else ``parent``.

    """
    if not domain_to_resolve:
        return None
    if domain_to_resolve == ArvoDomain.FROM_EVENT_CONTRACT:
        return event_contract.domain if event_contract is not None else None
    if domain_to_resolve == ArvoDomain.FROM_SELF_CONTRACT:
        return handler_self_contract.domain
    if domain_to_resolve == ArvoDomain.FROM_TRIGGERING_EVENT:
        return triggering_event.domain
    if domain_to_resolve == ArvoDomain.FROM_CURRENT_SUBJECT:
        return _subject_domain(current_subject, lenient=lenient)
    if domain_to_resolve == ArvoDomain.FROM_PARENT_SUBJECT:
        return _subject_domain(parent_subject, lenient=lenient)
    if domain_to_resolve == ArvoDomain.ORCHESTRATION_CONTEXT:
        current = _subject_domain(current_subject, lenient=lenient)
        if parent_subject is None:
            triggering = triggering_event.domain
            if triggering is None or current == triggering:
                return None
            return current
        parent = _subject_domain(parent_subject, lenient=lenient)
        return None if current == parent else parent
    return domain_to_resolve
