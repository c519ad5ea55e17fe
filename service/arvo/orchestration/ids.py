"""Deterministic ids for everything an execution creates.

Re-executing the same consumed event (after a crash, a rebalance or a redelivery) must produce the
very same event ids and child subjects, so downstream deduplication works. Every id is therefore a
UUIDv5 of the handler's source, the consumed event's CloudEvents identity (``source`` and ``id``:
CloudEvents makes an id unique per source only) and domain, the emission index and the target
domain — never a random UUID.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from service.arvo.event import ArvoEvent, EventIdSpec, create_arvo_event_id

__all__ = ["derive_uuid", "emitted_event_id", "system_error_event_id"]

# Fixed namespace of arvo-service derived ids (never change it: ids of in-flight workflows depend on it).
_ARVO_ID_NAMESPACE = uuid.UUID("8a0f3c52-3f64-4d0e-9a51-6c1f7b2e9d41")
_NAMESPACE_BYTES = _ARVO_ID_NAMESPACE.bytes
_SEPARATOR = "\x1f"


def derive_uuid(*parts: str) -> str:
    """A UUIDv5 string of ``parts`` (joined with a separator no part can contain).

    Equal to ``str(uuid.uuid5(namespace, name))``, computed without building ``UUID`` objects
    (this runs for every emitted event).
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + _SEPARATOR.join(parts).encode()).digest()[:16])  # noqa: S324 - UUIDv5 is defined on SHA-1; not a security use
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _id_spec(raw_id: object) -> EventIdSpec | None:
    if isinstance(raw_id, EventIdSpec):
        return raw_id
    if isinstance(raw_id, Mapping):
        spec: Mapping[str, Any] = raw_id
        deduplication = spec.get("deduplication")
        value = spec.get("value")
        if deduplication in ("DEVELOPER_MANAGED", "ARVO_MANAGED") and isinstance(value, str):
            return EventIdSpec(deduplication=deduplication, value=value)
    return None


def emitted_event_id(
    *,
    source: str,
    consumed: ArvoEvent,
    index: int,
    domain: str | None,
    copy_index: int,
    requested: object = None,
) -> str:
    """The id of emission ``index`` (domain copy ``copy_index`` for ``domain``) of ``consumed``.

    ``requested`` is the output's ``id`` field (an :class:`EventIdSpec` or its dict form):

    * absent or blank → a derived UUID;
    * ``ARVO_MANAGED`` → the original's compressed ``{uuid, value}`` form, with a derived uuid;
    * ``DEVELOPER_MANAGED`` → the value verbatim for the first domain copy; further copies get
      ``<value>:<domain>`` so that every copy has its own id (hazard 15 of the spec).
    """
    consumed_domain = consumed.domain or ""
    derived = derive_uuid(
        "emit", source, consumed.source, consumed.id, consumed_domain, str(index), domain or ""
    )
    spec = _id_spec(requested)
    if spec is None or not spec.value.strip():
        return derived
    if spec.deduplication == "ARVO_MANAGED":
        return create_arvo_event_id(spec, uuid=derived)
    value = spec.value.strip()
    return value if copy_index == 0 else f"{value}:{domain or 'local'}"


def system_error_event_id(*, source: str, consumed: ArvoEvent, domain: str | None) -> str:
    """The id of the system error event ``source`` emits for ``consumed`` in ``domain``."""
    return derive_uuid("error", source, consumed.source, consumed.id, consumed.domain or "", domain or "")


def child_execution_id(*, source: str, consumed: ArvoEvent, index: int, domain: str | None) -> str:
    """The execution id of a child orchestration started by emission ``index`` of ``consumed``."""
    return derive_uuid(
        "child", source, consumed.source, consumed.id, consumed.domain or "", str(index), domain or ""
    )


__all__ += ["child_execution_id"]
