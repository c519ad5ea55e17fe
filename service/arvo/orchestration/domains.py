"""Domain fan-out shared by handlers, orchestrators, resumables and system errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from service.arvo.contract import VersionedArvoContract
from service.arvo.domain import resolve_event_domain
from service.arvo.event import ArvoEvent

__all__ = ["normalise_domains", "resolve_domains"]


def normalise_domains(value: object, default: Sequence[str | None]) -> list[str | None]:
    """The list of domain values of an output's ``domain`` field (``None``/missing → ``default``).

    Raises:
        ValueError: if ``value`` is neither a string, ``None`` nor a non-empty list of them.

    """
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [value]
    if (
        isinstance(value, list | tuple)
        and value
        and all(item is None or isinstance(item, str) for item in value)
    ):
        return list(value)
    raise ValueError(f"'domain' must be a non-empty list of domain strings or null, got {value!r}")


def resolve_domains(
    values: Iterable[str | None],
    *,
    parent_subject: str | None,
    triggering_event: ArvoEvent,
    self_contract: VersionedArvoContract,
    event_contract: VersionedArvoContract | None,
) -> list[str | None]:
    """Resolve domain symbols and de-duplicate *after* resolution, keeping first-seen order.

    The original de-duplicates before resolution for orchestrator emissions (quirk 22), which can
    send two copies of one event into the same domain; we de-duplicate after resolution everywhere.
    """
    resolved: list[str | None] = []
    for value in values:
        domain = resolve_event_domain(
            domain_to_resolve=value,
            parent_subject=parent_subject,
            current_subject=triggering_event.subject,
            handler_self_contract=self_contract,
            event_contract=event_contract,
            triggering_event=triggering_event,
        )
        if domain not in resolved:
            resolved.append(domain)
    return resolved
