"""Section 14.6 of the spec, adapted to our memory port (what ``test_memory_contract.py`` does not pin).

The original's ``SimpleMachineMemory`` had ``read/write/lock/unlock`` keyed by subject; ours has
``lease_and_read`` (lock + read), ``commit_and_release`` (write + unlock), ``release`` (unlock) and
``inspect`` (read without a lease), keyed by the instance key ``<orchestrator>:<execution id>``.
Mapping of the original's items: lock granted/denied → lease granted/denied; unlock → release;
write/read → commit/inspect; "stores a copy" → copy isolation on both sides; ``clear``.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.arvo.memory import InMemoryMemory, InstanceStatus, Lease

TTL_MS = 30_000
RECORD: dict[str, Any] = {
    "executionStatus": "normal",
    "initEventId": "",
    "subject": "test",
    "state": {},
    "parentSubject": None,
    "status": "active",
    "value": "",
    "machineDefinition": None,
    "events": {"consumed": None, "produced": []},
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def lease(memory: InMemoryMemory, key: str) -> Lease:
    grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
    assert grant.acquired
    assert grant.lease is not None
    return grant.lease


async def write(memory: InMemoryMemory, key: str, record: dict[str, Any]) -> None:
    await memory.commit_and_release(await lease(memory, key), record, status=InstanceStatus.ACTIVE)


@pytest.mark.parametrize("key", ["", ":", "orc.test:", ":exec-1", "no-separator"])
async def test_lease_requires_an_instance_key(key: str) -> None:
    # The original: "Machine ID is required for <read|write|lock|unlock> operation" for ''.
    with pytest.raises(ValueError, match="instance key"):
        await InMemoryMemory().lease_and_read(key, ttl_ms=TTL_MS)


async def test_commit_stores_a_copy_of_the_record() -> None:
    memory = InMemoryMemory()
    record = {**RECORD, "events": {"consumed": None, "produced": []}}
    await write(memory, "orc.test:1", record)
    record["value"] = "changed"
    record["events"]["produced"].append({"id": "x"})
    stored = await memory.inspect("orc.test:1")
    assert stored == RECORD
    assert stored is not None
    assert stored["value"] == ""


async def test_inspect_of_an_unknown_instance_is_none() -> None:
    assert await InMemoryMemory().inspect("orc.test:nonexistent") is None


async def test_committed_record_reads_back_deep_equal() -> None:
    memory = InMemoryMemory()
    await write(memory, "orc.test:1", RECORD)
    assert await memory.inspect("orc.test:1") == RECORD
    assert (await memory.lease_and_read("orc.test:1", ttl_ms=TTL_MS)).record == RECORD


async def test_lease_on_a_fresh_instance_is_granted_and_a_second_is_denied() -> None:
    memory = InMemoryMemory()
    assert (await memory.lease_and_read("orc.test:1", ttl_ms=TTL_MS)).acquired
    assert not (await memory.lease_and_read("orc.test:1", ttl_ms=TTL_MS)).acquired


async def test_release_of_a_held_lease_succeeds_and_frees_the_instance() -> None:
    memory = InMemoryMemory()
    held = await lease(memory, "orc.test:1")
    assert await memory.release(held) is True
    # Lock, unlock, lock → granted.
    assert (await memory.lease_and_read("orc.test:1", ttl_ms=TTL_MS)).acquired


async def test_release_of_a_lease_no_longer_held_reports_false() -> None:
    memory = InMemoryMemory()
    held = await lease(memory, "orc.test:1")
    assert await memory.release(held)
    # The original's unlock of a non-locked id returned true; ours tells the caller nothing was held.
    assert await memory.release(held) is False


async def test_forced_lock_denies_leases_until_it_expires() -> None:
    clock = Clock()
    memory = InMemoryMemory(clock=clock)
    memory.force_lock("orc.test:1", ttl_ms=1_000)
    denied = await memory.lease_and_read("orc.test:1", ttl_ms=TTL_MS)
    assert not denied.acquired
    assert denied.holder_ttl_ms == 1_000
    clock.now += 1.001
    assert (await memory.lease_and_read("orc.test:1", ttl_ms=TTL_MS)).acquired


async def test_clear_forgets_records_and_leases() -> None:
    memory = InMemoryMemory()
    await write(memory, "orc.test:1", RECORD)
    await write(memory, "orc.test:2", RECORD)
    await lease(memory, "orc.test:3")
    memory.clear()
    assert await memory.inspect("orc.test:1") is None
    assert await memory.inspect("orc.test:2") is None
    assert (await memory.lease_and_read("orc.test:3", ttl_ms=TTL_MS)).acquired
    assert await memory.list_instances() == []


async def test_write_read_lock_unlock_cycle() -> None:
    memory = InMemoryMemory()
    await write(memory, "orc.test:cycle", RECORD)
    assert await memory.inspect("orc.test:cycle") == RECORD
    held = await lease(memory, "orc.test:cycle")
    assert not (await memory.lease_and_read("orc.test:cycle", ttl_ms=TTL_MS)).acquired
    assert await memory.release(held)
    assert (await memory.lease_and_read("orc.test:cycle", ttl_ms=TTL_MS)).acquired


async def test_set_status_of_an_instance_without_record_adds_no_reason() -> None:
    memory = InMemoryMemory()
    await memory.set_status("orc.test:1", InstanceStatus.PARKED, reason="operator")
    assert await memory.inspect("orc.test:1") is None
    rows = await memory.list_instances(status=InstanceStatus.PARKED)
    assert [(row.orchestrator, row.execution_id) for row in rows] == [("orc.test", "1")]
