"""The memory port: leases and JSON state records of orchestration instances.

An orchestration instance (one orchestrator or resumable execution) is identified by its *instance key*
``"<orchestrator name>:<execution id>"`` (see :attr:`service.arvo.subject.ParsedSubject.instance_key`).

Contract of every implementation (the Redis one does each call in a single round trip):

* :meth:`Memory.lease_and_read` takes an exclusive lease with a TTL (``SET NX PX``), increments the
  instance's fencing number and returns the stored record, atomically. A lease held by someone else
  is *denied* (``acquired=False``), never waited for.
* :meth:`Memory.commit_and_release` writes the new record and releases the lease, atomically, only
  if the lease is still held by this token and no newer fencing number has written: otherwise it
  raises :class:`LeaseLostError` and writes nothing. This is what makes a zombie's late write harmless.
* Records are JSON objects; implementations store them as JSON and hand out fresh copies, so a
  caller can never mutate stored state by accident.
* Retention (``instance_retention_s`` of the implementations, ``0`` = keep forever): a *finished*
  instance (:data:`FINISHED_STATUSES`) is kept that long after the commit or :meth:`Memory.set_status`
  that finished it, then its record, fencing number and listing entry vanish together (a later event
  for it finds no state). Moving it back to a live status keeps it forever again.

Infrastructure failures are :class:`MemoryStoreError` s. ``MemoryError`` (which shadowed the builtin)
is its deprecated alias: importing it still works and warns once.
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import orjson

__all__ = [
    "FINISHED_STATUSES",
    "InMemoryMemory",
    "InstanceStatus",
    "InstanceSummary",
    "Lease",
    "LeaseGrant",
    "LeaseLostError",
    "Memory",
    "MemoryStoreError",
    "StateReadError",
    "instance_retention_ms",
    "split_instance_key",
]


class InstanceStatus(StrEnum):
    """Lifecycle of an orchestration instance, indexed for listing.

    New members go last: the Redis scripts address the status indexes by position.
    """

    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"
    PARKED = "parked"
    CANCELLED = "cancelled"
    """Stopped by a cancel event (``arvo instances cancel``); finished like ``done`` and ``failed``."""
    TIMED_OUT = "timed_out"
    """Stopped by its deadline (``arvodeadline``, ``deadline_s``); finished like ``cancelled``."""


FINISHED_STATUSES: Final = frozenset(
    {InstanceStatus.DONE, InstanceStatus.FAILED, InstanceStatus.CANCELLED, InstanceStatus.TIMED_OUT}
)
"""Statuses of finished instances: kept for the retention, then expired. The others are live."""


def instance_retention_ms(instance_retention_s: float) -> int:
    """``instance_retention_s`` in whole milliseconds (``0``: keep finished instances forever).

    Raises:
        TypeError: not a number.
        ValueError: not finite and ``>= 0``, or positive but under 1 ms.

    """
    if isinstance(instance_retention_s, bool) or not isinstance(instance_retention_s, (int, float)):
        raise TypeError(f"instance_retention_s must be a number of seconds, got {instance_retention_s!r}")
    if not 0 <= instance_retention_s < float("inf"):
        raise ValueError(f"instance_retention_s must be >= 0 and finite, got {instance_retention_s!r}")
    milliseconds = round(instance_retention_s * 1000)
    if instance_retention_s > 0 and milliseconds == 0:
        raise ValueError(f"instance_retention_s must be 0 or at least 0.001, got {instance_retention_s!r}")
    return milliseconds


@dataclass(frozen=True, slots=True)
class Lease:
    """An exclusive, expiring right to change one instance.

    Attributes:
        key: The instance key.
        token: Random owner token; only its holder can commit, renew or release.
        fence: Fencing number, strictly increasing per instance with every granted lease.

    """

    key: str
    token: str
    fence: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Answer of :meth:`Memory.lease_and_read`.

    Attributes:
        acquired: Whether the lease was granted.
        lease: The lease when granted, else ``None``.
        record: The stored record (a fresh copy) when granted and present, else ``None``.
        holder_ttl_ms: When denied, how long the current holder's lease still runs (for backoff).

    """

    acquired: bool
    lease: Lease | None
    record: dict[str, Any] | None
    holder_ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """One row of :meth:`Memory.list_instances`."""

    key: str
    orchestrator: str
    execution_id: str
    status: InstanceStatus
    updated_at_ms: int


class MemoryStoreError(Exception):
    """Base class of infrastructure failures of a memory implementation.

    Formerly ``MemoryError``, which shadowed the builtin; that name is a deprecated alias.
    """


if TYPE_CHECKING:
    # The deprecated alias, typed for users' type checkers; at run time ``__getattr__`` serves it.
    MemoryError = MemoryStoreError

_DEPRECATED_ALIASES = {"MemoryError": "MemoryStoreError"}
_warned_aliases: set[str] = set()


def __getattr__(name: str) -> Any:
    """Resolve deprecated aliases (``MemoryError`` → :class:`MemoryStoreError`), warning once each."""
    new_name = _DEPRECATED_ALIASES.get(name)
    if new_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _warned_aliases:
        _warned_aliases.add(name)
        warnings.warn(
            f"{__name__}.{name} is deprecated; use {__name__}.{new_name}",
            DeprecationWarning,
            stacklevel=2,
        )
    return globals()[new_name]


class StateReadError(MemoryStoreError):
    """The lease was obtained but the stored record could not be read or decoded."""


class LeaseLostError(MemoryStoreError):
    """The lease expired or was taken over (fenced out) before the commit; nothing was written."""


def split_instance_key(key: str) -> tuple[str, str]:
    """Split ``"<orchestrator>:<execution id>"`` into its two parts.

    Raises:
        ValueError: if the key has no ``:`` separator or an empty part.

    """
    orchestrator, sep, execution_id = key.partition(":")
    if not sep or not orchestrator or not execution_id:
        raise ValueError(f"instance key is not '<orchestrator>:<execution id>': {key!r}")
    return orchestrator, execution_id


@runtime_checkable
class Memory(Protocol):
    """Port for leases and state records; see the module docstring for the atomicity contract."""

    async def lease_and_read(self, key: str, *, ttl_ms: int) -> LeaseGrant:
        """Take the lease of ``key`` for ``ttl_ms`` and read its record, in one atomic step."""
        ...

    async def commit_and_release(
        self, lease: Lease, record: Mapping[str, Any], *, status: InstanceStatus
    ) -> None:
        """Write ``record`` and release ``lease`` atomically, if the lease still holds.

        A finished ``status`` (:data:`FINISHED_STATUSES`) starts the retention of the instance in the
        same atomic step: with a positive retention, its record and fencing number expire together
        that long after this commit. A live status keeps them forever (a reactivated instance too).

        Raises:
            LeaseLostError: the lease expired or a newer fence wrote; nothing was written.

        """
        ...

    async def release(self, lease: Lease) -> bool:
        """Release ``lease`` without writing; ``False`` if it was no longer held by its token."""
        ...

    async def renew(self, lease: Lease, *, ttl_ms: int) -> bool:
        """Extend ``lease`` to ``ttl_ms`` from now; ``False`` if it was no longer held."""
        ...

    async def inspect(self, key: str) -> dict[str, Any] | None:
        """Read the record of ``key`` without a lease (read-only tooling)."""
        ...

    async def set_status(self, key: str, status: InstanceStatus, *, reason: str | None = None) -> None:
        """Move an instance to ``status`` outside a lease (operator actions such as parking).

        Retention as in :meth:`commit_and_release`: a finished ``status`` starts it, a live one ends it.
        """
        ...

    async def list_instances(
        self,
        *,
        orchestrator: str | None = None,
        status: InstanceStatus | None = None,
        limit: int = 1000,
    ) -> list[InstanceSummary]:
        """List instances, most recently updated first, filtered by orchestrator and/or status."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers and accepts this client now (readiness probes); never raises."""
        ...

    async def close(self) -> None:
        """Release the store's connections (a no-op for stores without any)."""
        ...


@dataclass(slots=True)
class _StoredInstance:
    record: bytes | None = None
    status: InstanceStatus | None = None
    fence: int = 0
    written_fence: int = 0
    lease_token: str | None = None
    lease_expires_at: float = 0.0
    updated_at_ms: int = 0
    keys_expire_at: float | None = None
    """Clock time when record, fence and written fence expire together (Redis: their PEXPIRE)."""
    listed_until: float | None = None
    """Clock time when a finished instance's listing entry is pruned (Redis: its index entry)."""


class InMemoryMemory:
    """Process-local :class:`Memory` for tests and the embedded default (same semantics as Redis).

    Leases expire by the injected monotonic ``clock`` (seconds), so tests can move time forward; so
    do finished instances after ``instance_retention_s`` (``0``, the default: kept forever), as in
    Redis: record, fence and listing entry together, while a lease still held stays until it ends.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, instance_retention_s: float = 0
    ) -> None:
        self._clock = clock
        self._retention_s = instance_retention_ms(instance_retention_s) / 1000
        self._instances: dict[str, _StoredInstance] = {}
        # Unique per process run and per grant: a random prefix and a counter (cheaper than uuid4).
        self._token_prefix = os.urandom(6).hex()
        self._token_counter = itertools.count(1)

    @property
    def instance_retention_s(self) -> float:
        """How long finished instances are kept (``0``: forever)."""
        return self._retention_s

    def _held(self, stored: _StoredInstance, now: float) -> bool:
        return stored.lease_token is not None and stored.lease_expires_at > now

    def _current(self, key: str, now: float) -> _StoredInstance | None:
        """The stored instance of ``key`` with what expired by ``now`` gone (``None`` if nothing is left)."""
        stored = self._instances.get(key)
        if stored is None:
            return None
        if stored.keys_expire_at is not None and now >= stored.keys_expire_at:
            stored.record, stored.fence, stored.written_fence = None, 0, 0
            stored.keys_expire_at = None
        if stored.listed_until is not None and now >= stored.listed_until:
            stored.status, stored.listed_until = None, None
        empty = stored.record is None and stored.status is None and stored.fence == 0
        if empty and not self._held(stored, now):
            del self._instances[key]
            return None
        return stored

    def _stored(self, key: str, now: float) -> _StoredInstance:
        stored = self._current(key, now)
        if stored is None:
            stored = self._instances[key] = _StoredInstance()
        return stored

    def _retain(self, stored: _StoredInstance, status: InstanceStatus) -> None:
        """Start the retention of a finished instance, or end it for a live one (Redis: PEXPIRE/PERSIST)."""
        if self._retention_s and status in FINISHED_STATUSES:
            stored.keys_expire_at = stored.listed_until = self._clock() + self._retention_s
        else:
            stored.keys_expire_at = stored.listed_until = None

    async def lease_and_read(self, key: str, *, ttl_ms: int) -> LeaseGrant:  # noqa: D102
        split_instance_key(key)
        now = self._clock()
        stored = self._stored(key, now)
        if self._held(stored, now):
            return LeaseGrant(
                acquired=False,
                lease=None,
                record=None,
                holder_ttl_ms=int((stored.lease_expires_at - now) * 1000),
            )
        stored.fence += 1
        stored.lease_token = f"{self._token_prefix}-{next(self._token_counter)}"
        stored.lease_expires_at = now + ttl_ms / 1000
        if stored.record is None and self._retention_s:
            # As Redis: the fence of an instance without a record does not stay forever.
            stored.keys_expire_at = now + max(ttl_ms / 1000, self._retention_s)
        record = orjson.loads(stored.record) if stored.record is not None else None
        return LeaseGrant(
            acquired=True,
            lease=Lease(key=key, token=stored.lease_token, fence=stored.fence),
            record=record,
        )

    def _still_holds(self, lease: Lease) -> _StoredInstance | None:
        now = self._clock()
        stored = self._current(lease.key, now)
        if stored is None or stored.lease_token != lease.token or not self._held(stored, now):
            return None
        if stored.written_fence > lease.fence:
            return None
        return stored

    async def commit_and_release(  # noqa: D102
        self, lease: Lease, record: Mapping[str, Any], *, status: InstanceStatus
    ) -> None:
        stored = self._still_holds(lease)
        if stored is None:
            raise LeaseLostError(
                f"lease on {lease.key!r} (fence {lease.fence}) is no longer held; the commit was discarded"
            )
        stored.record = orjson.dumps(record)
        stored.status = status
        stored.written_fence = lease.fence
        stored.fence = max(stored.fence, lease.fence)  # restored if it expired under the lease
        stored.updated_at_ms = int(time.time() * 1000)
        stored.lease_token = None
        stored.lease_expires_at = 0.0
        self._retain(stored, status)

    async def release(self, lease: Lease) -> bool:  # noqa: D102
        stored = self._still_holds(lease)
        if stored is None:
            return False
        stored.lease_token = None
        stored.lease_expires_at = 0.0
        return True

    async def renew(self, lease: Lease, *, ttl_ms: int) -> bool:  # noqa: D102
        stored = self._still_holds(lease)
        if stored is None:
            return False
        stored.lease_expires_at = self._clock() + ttl_ms / 1000
        return True

    async def inspect(self, key: str) -> dict[str, Any] | None:  # noqa: D102
        stored = self._current(key, self._clock())
        if stored is None or stored.record is None:
            return None
        result: dict[str, Any] = orjson.loads(stored.record)
        return result

    async def set_status(  # noqa: D102
        self, key: str, status: InstanceStatus, *, reason: str | None = None
    ) -> None:
        stored = self._stored(key, self._clock())
        stored.status = status
        stored.updated_at_ms = int(time.time() * 1000)
        if reason is not None and stored.record is not None:
            record = orjson.loads(stored.record)
            record["parkedReason" if status is InstanceStatus.PARKED else "statusReason"] = reason
            stored.record = orjson.dumps(record)
        self._retain(stored, status)

    async def list_instances(  # noqa: D102
        self,
        *,
        orchestrator: str | None = None,
        status: InstanceStatus | None = None,
        limit: int = 1000,
    ) -> list[InstanceSummary]:
        rows: list[InstanceSummary] = []
        now = self._clock()
        for key in list(self._instances):
            stored = self._current(key, now)
            if stored is None or stored.status is None:
                continue
            name, execution_id = split_instance_key(key)
            if (orchestrator is not None and name != orchestrator) or (
                status is not None and stored.status != status
            ):
                continue
            rows.append(
                InstanceSummary(
                    key=key,
                    orchestrator=name,
                    execution_id=execution_id,
                    status=stored.status,
                    updated_at_ms=stored.updated_at_ms,
                )
            )
        rows.sort(key=lambda row: row.updated_at_ms, reverse=True)
        return rows[:limit]

    async def ping(self) -> bool:
        """Always ``True``: the in-process store cannot be unreachable."""
        return True

    async def close(self) -> None:
        """Nothing to release."""

    def force_lock(self, key: str, *, ttl_ms: int = 60_000) -> None:
        """Test helper: make ``key`` look leased by another worker."""
        stored = self._stored(key, self._clock())
        stored.fence += 1
        stored.lease_token = "held-by-another-worker"  # noqa: S105 - a marker, not a secret
        stored.lease_expires_at = self._clock() + ttl_ms / 1000

    def clear(self) -> None:
        """Forget every record and lease."""
        self._instances.clear()
