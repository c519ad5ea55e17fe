"""RedisMemory against real Redis: key layout, round trips, failures, restarts, ACL, TLS, cluster mode.

The behaviour shared with InMemoryMemory is pinned by tests/unit/test_memory_contract.py; this file
covers what only exists with Redis. Tests that stop or reconfigure Redis use a private
``redis-server`` (see ``_redis.PrivateRedisServer``), never the shared one.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from service.arvo.memory import InstanceStatus, LeaseLostError, Memory, MemoryStoreError, StateReadError
from service.runtime.redis_memory import (
    _LEASE_AND_READ_LUA,
    DEFAULT_SOCKET_TIMEOUT_S,
    RedisMemory,
    RedisMemoryError,
    RedisUnavailableError,
)
from service.runtime.resp_client import PipelinedRedis
from tests.integration._redis import (
    CountingRedis,
    PrivateRedisServer,
    delete_keys_with_prefix,
    free_port,
    running_single_node_cluster,
    unique_prefix,
)

pytestmark = pytest.mark.integration

KEY = "arvo.orc.checkout:3f1c1a9e-0000-4000-8000-000000000001"
TTL_MS = 30_000


# --- key layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [KEY, "orc:plain", "orc{x}:id}", "}orc:{", "o%7Brc:%{}", "orc:ünï:cødé"],
)
def test_keys_of_one_instance_share_a_cluster_slot(key: str) -> None:
    memory = RedisMemory(client=redis.asyncio.Redis(), key_prefix="arvo")
    keys = memory.instance_keys(key)
    slots = {key_slot(name.encode()) for name in (keys.state, keys.lock, keys.fence, keys.wfence)}
    assert len(slots) == 1
    orchestrator = key.partition(":")[0]
    index_slots = {key_slot(memory.index_key(orchestrator, status).encode()) for status in InstanceStatus}
    assert len(index_slots) == 1


def test_names_with_braces_get_distinct_keys() -> None:
    memory = RedisMemory(client=redis.asyncio.Redis(), key_prefix="arvo")
    assert memory.instance_keys("a{b:c").state != memory.instance_keys("a%7Bb:c").state
    assert memory.instance_keys("orc:id").state == "arvo:{orc:id}:state"
    assert memory.index_key("orc", InstanceStatus.DONE) == "arvo:index:{orc}:done"


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "with space"])
def test_key_prefix_without_braces_or_whitespace_is_required(prefix: str) -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        RedisMemory(client=redis.asyncio.Redis(), key_prefix=prefix)


async def test_committed_state_is_stored_as_given_next_to_the_writer_fence(redis_memory: RedisMemory) -> None:
    record = {"schemaVersion": 1, "executionStatus": "normal", "events": {"consumed": []}}
    grant = await redis_memory.lease_and_read(KEY, ttl_ms=TTL_MS)
    assert grant.lease is not None
    await redis_memory.commit_and_release(grant.lease, record, status=InstanceStatus.ACTIVE)

    client = redis_memory.client
    keys = redis_memory.instance_keys(KEY)
    prefix = redis_memory.key_prefix
    assert keys.state == f"{prefix}:{{{KEY}}}:state"
    assert await client.get(keys.state) == orjson.dumps(record)
    assert await client.get(keys.wfence) == str(grant.lease.fence).encode()
    assert await client.get(keys.fence) == str(grant.lease.fence).encode()
    assert not await client.exists(keys.lock)
    orchestrator, execution_id = KEY.split(":", 1)
    index = redis_memory.index_key(orchestrator, InstanceStatus.ACTIVE)
    assert index == f"{prefix}:index:{{{orchestrator}}}:active"
    assert await client.zscore(index, execution_id) is not None
    assert await client.smembers(redis_memory.orchestrators_key) == {orchestrator.encode()}


async def test_lock_carries_the_lease_ttl(redis_memory: RedisMemory) -> None:
    await redis_memory.lease_and_read(KEY, ttl_ms=TTL_MS)
    pttl = await redis_memory.client.pttl(redis_memory.instance_keys(KEY).lock)
    assert 0 < pttl <= TTL_MS


async def test_lease_rejects_a_non_positive_ttl(redis_memory: RedisMemory) -> None:
    with pytest.raises(ValueError, match="ttl_ms"):
        await redis_memory.lease_and_read(KEY, ttl_ms=0)


async def test_list_instances_rejects_a_negative_limit(redis_memory: RedisMemory) -> None:
    with pytest.raises(ValueError, match="limit"):
        await redis_memory.list_instances(limit=-1)


# --- round trips ---------------------------------------------------------------------------------


@pytest.fixture
async def counting_memory(shared_redis_url: str) -> AsyncIterator[tuple[RedisMemory, CountingRedis]]:
    client = CountingRedis.for_url(shared_redis_url)
    prefix = unique_prefix()
    memory = RedisMemory(client=client, key_prefix=prefix)
    try:
        yield memory, client
    finally:
        await delete_keys_with_prefix(client, prefix)
        await memory.close()


async def test_each_lease_call_is_one_round_trip_in_standalone_mode(
    counting_memory: tuple[RedisMemory, CountingRedis],
) -> None:
    memory, client = counting_memory
    # Warm-up: make sure the server has every script cached (NOSCRIPT reloads are a one-off).
    warm = await memory.lease_and_read("warm:up", ttl_ms=TTL_MS)
    assert warm.lease is not None
    await memory.renew(warm.lease, ttl_ms=TTL_MS)
    await memory.release(warm.lease)
    warm = await memory.lease_and_read("warm:up", ttl_ms=TTL_MS)
    assert warm.lease is not None
    await memory.commit_and_release(warm.lease, {"warm": True}, status=InstanceStatus.ACTIVE)
    await memory.set_status("warm:up", InstanceStatus.ACTIVE)  # a fresh server loads this script too
    await memory.set_status("warm:up", InstanceStatus.ACTIVE, reason="warm-up")

    measured: dict[str, int] = {}

    async def measure(name: str, call: object) -> object:
        client.reset_counts()
        result = await call  # type: ignore[misc]
        measured[name] = client.round_trips
        return result

    grant = await measure("lease_and_read", memory.lease_and_read(KEY, ttl_ms=TTL_MS))
    lease = grant.lease  # type: ignore[attr-defined]
    await measure("lease_and_read (denied)", memory.lease_and_read(KEY, ttl_ms=TTL_MS))
    await measure("renew", memory.renew(lease, ttl_ms=TTL_MS))
    await measure(
        "commit_and_release", memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.DONE)
    )
    grant = await measure("lease_and_read (with record)", memory.lease_and_read(KEY, ttl_ms=TTL_MS))
    await measure("release", memory.release(grant.lease))  # type: ignore[attr-defined]
    await measure("inspect", memory.inspect(KEY))
    await measure("set_status", memory.set_status(KEY, InstanceStatus.PARKED))
    await measure("set_status (with reason)", memory.set_status(KEY, InstanceStatus.PARKED, reason="r"))

    assert measured == {
        "lease_and_read": 1,
        "lease_and_read (denied)": 1,
        "renew": 1,
        "commit_and_release": 1,
        "lease_and_read (with record)": 1,
        "release": 1,
        "inspect": 1,
        "set_status": 1,
        "set_status (with reason)": 2,  # GET, then compare-and-set script
    }, measured
    assert set(client.commands) <= {"EVALSHA", "GET"}


async def test_flushed_scripts_are_reloaded_transparently(private_redis: PrivateRedisServer) -> None:
    client = CountingRedis.for_url(private_redis.url)
    async with RedisMemory(client=client, key_prefix="arvo") as memory:
        grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert grant.lease is not None
        await client.script_flush()
        client.reset_counts()
        await memory.commit_and_release(grant.lease, {"n": 1}, status=InstanceStatus.ACTIVE)
        # NOSCRIPT -> SCRIPT LOAD -> EVALSHA, once; afterwards one round trip again.
        assert client.commands == {"EVALSHA": 2, "SCRIPT LOAD": 1}
        for n in (2, 3):  # the lease script reloads once too, then a cycle is 2 round trips again
            client.reset_counts()
            grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
            assert grant.lease is not None
            await memory.commit_and_release(grant.lease, {"n": n}, status=InstanceStatus.ACTIVE)
        assert client.commands == {"EVALSHA": 2}
        assert await memory.inspect(KEY) == {"n": 3}


# --- decoding and infrastructure failures ----------------------------------------------------------


async def test_undecodable_state_raises_state_read_error_and_frees_the_lease(
    redis_memory: RedisMemory,
) -> None:
    keys = redis_memory.instance_keys(KEY)
    await redis_memory.client.set(keys.state, b"{not json")
    with pytest.raises(StateReadError, match=r"state.*not valid JSON") as caught:
        await redis_memory.lease_and_read(KEY, ttl_ms=TTL_MS)
    assert KEY in str(caught.value)
    assert not await redis_memory.client.exists(keys.lock), "the lease must not block the instance"
    with pytest.raises(StateReadError, match="not valid JSON"):
        await redis_memory.inspect(KEY)


async def test_state_that_is_not_a_json_object_raises_state_read_error(redis_memory: RedisMemory) -> None:
    await redis_memory.client.set(redis_memory.instance_keys(KEY).state, b"[1, 2]")
    with pytest.raises(StateReadError, match="expected a JSON object"):
        await redis_memory.inspect(KEY)


async def test_unreachable_redis_raises_memory_errors_and_ping_is_false() -> None:
    memory = RedisMemory.from_url(f"redis://127.0.0.1:{free_port()}/0", key_prefix="arvo")
    lease = None
    try:
        assert not await memory.ping()
        with pytest.raises(RedisUnavailableError) as caught:
            await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert isinstance(caught.value, MemoryStoreError)
        assert caught.value.operation == "lease_and_read"
        assert caught.value.key == KEY
        assert KEY in str(caught.value)
        await _assert_every_call_fails_with_unavailable(memory, lease)
    finally:
        await memory.close()


def test_from_url_sets_timeouts_and_no_retry_on_timeout() -> None:
    memory = RedisMemory.from_url("redis://127.0.0.1:6379/0")
    client = memory.client
    assert isinstance(client, redis.asyncio.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT_S
    retry = kwargs["retry"]
    assert retry.get_retries() == 1
    assert redis.exceptions.TimeoutError not in retry._supported_errors
    overridden = RedisMemory.from_url("redis://127.0.0.1:6379/0?socket_timeout=0.5", socket_connect_timeout=1)
    assert overridden.client.connection_pool.connection_kwargs["socket_timeout"] == 0.5  # type: ignore[union-attr]
    assert overridden.client.connection_pool.connection_kwargs["socket_connect_timeout"] == 1  # type: ignore[union-attr]


async def _assert_every_call_fails_with_unavailable(memory: RedisMemory, lease: object) -> None:
    from service.arvo.memory import Lease

    some_lease = lease if isinstance(lease, Lease) else Lease(key=KEY, token="t", fence=1)
    calls = {
        "lease_and_read": memory.lease_and_read(KEY, ttl_ms=TTL_MS),
        "commit_and_release": memory.commit_and_release(some_lease, {"n": 1}, status=InstanceStatus.ACTIVE),
        "release": memory.release(some_lease),
        "renew": memory.renew(some_lease, ttl_ms=TTL_MS),
        "inspect": memory.inspect(KEY),
        "set_status": memory.set_status(KEY, InstanceStatus.PARKED, reason="x"),
        "list_instances": memory.list_instances(),
    }
    for name, call in calls.items():
        with pytest.raises(RedisUnavailableError) as caught:
            await call
        assert caught.value.operation == name


# --- restarts --------------------------------------------------------------------------------------


async def test_redis_restart_is_survived(private_redis: PrivateRedisServer) -> None:
    async with RedisMemory.from_url(private_redis.url, key_prefix="arvo") as memory:
        grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"before": "restart"}, status=InstanceStatus.ACTIVE)
        held = (await memory.lease_and_read(KEY, ttl_ms=TTL_MS)).lease
        assert held is not None

        private_redis.stop()
        assert not await memory.ping()
        await _assert_every_call_fails_with_unavailable(memory, held)

        private_redis.start()
        # The very next call works: fresh connection, scripts re-loaded on NOSCRIPT.
        # The server kept nothing (no persistence), so the old lease is gone and the record too.
        with pytest.raises(LeaseLostError):
            await memory.commit_and_release(held, {"zombie": True}, status=InstanceStatus.ACTIVE)
        after = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert after.acquired
        assert after.record is None
        assert after.lease is not None
        await memory.commit_and_release(after.lease, {"after": "restart"}, status=InstanceStatus.DONE)
        assert await memory.inspect(KEY) == {"after": "restart"}
        assert [r.status for r in await memory.list_instances()] == [InstanceStatus.DONE]
        assert await memory.ping()


async def test_restart_without_calls_in_between_is_survived(private_redis: PrivateRedisServer) -> None:
    async with RedisMemory.from_url(private_redis.url, key_prefix="arvo") as memory:
        assert (await memory.lease_and_read("orc:a", ttl_ms=TTL_MS)).acquired
        private_redis.restart()
        # The pooled connection died with the old server: one immediate reconnect, no error.
        assert (await memory.lease_and_read("orc:b", ttl_ms=TTL_MS)).acquired
        assert await memory.inspect("orc:b") is None


# --- ACL and TLS -----------------------------------------------------------------------------------


async def test_acl_user_restricted_to_the_key_prefix_can_do_everything(
    private_redis: PrivateRedisServer,
) -> None:
    admin = redis.asyncio.Redis.from_url(private_redis.url)
    await admin.acl_setuser(
        "worker", enabled=True, passwords=["+s3cret"], keys=["tenant:*"], commands=["+@all"]
    )
    await admin.aclose()
    url = f"redis://worker:s3cret@127.0.0.1:{private_redis.port}/0"
    async with RedisMemory.from_url(url, key_prefix="tenant") as memory:
        grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert grant.lease is not None
        assert await memory.renew(grant.lease, ttl_ms=TTL_MS)
        await memory.commit_and_release(grant.lease, {"n": 1}, status=InstanceStatus.ACTIVE)
        await memory.set_status(KEY, InstanceStatus.PARKED, reason="check")
        assert [r.key for r in await memory.list_instances()] == [KEY]
        assert await memory.inspect(KEY) == {"n": 1, "parkedReason": "check"}

    # Refused permissions or credentials are a deployment problem, never the event's fault: they are
    # outages (RedisUnavailableError), so the consumer waits for a fix instead of parking every record.
    async with RedisMemory.from_url(url, key_prefix="other") as outside:
        with pytest.raises(RedisUnavailableError, match=r"NoPermission|NOPERM|permission"):
            await outside.lease_and_read(KEY, ttl_ms=TTL_MS)

    wrong = f"redis://worker:wrong@127.0.0.1:{private_redis.port}/0"
    async with RedisMemory.from_url(wrong, key_prefix="tenant") as denied:
        with pytest.raises(RedisUnavailableError):
            await denied.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert not await denied.ping()


def _make_tls_files(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (skips without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH; TLS test skipped")
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        name: directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    }
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=arvo-test-ca -keyout {ca.key} -out {ca.pem}",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout {server.key} -out {server.csr}",
        "x509 -req -in {server.csr} -CA {ca.pem} -CAkey {ca.key} -CAcreateserial -days 2"
        " -extfile {san.ext} -out {server.pem}",
    ]
    paths = {f"{{{name}}}": str(path) for name, path in {**files, "san.ext": ext}.items()}
    for step in steps:
        args = [paths.get(arg, arg) for arg in step.split()]
        subprocess.run([openssl, *args], check=True, capture_output=True)
    return files


async def test_tls_via_rediss_url(tmp_path: Path) -> None:
    files = _make_tls_files(tmp_path / "tls")
    server = PrivateRedisServer(
        directory=tmp_path / "redis",
        tls=True,
        extra_args=[
            *("--tls-cert-file", str(files["server.pem"])),
            *("--tls-key-file", str(files["server.key"])),
            *("--tls-ca-cert-file", str(files["ca.pem"])),
            *("--tls-auth-clients", "no"),
        ],
        ready_kwargs={"ssl_ca_certs": str(files["ca.pem"])},
    )
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"redis-server was built without TLS: {exc}")
        raise
    try:
        url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={files['ca.pem']}"
        async with RedisMemory.from_url(url, key_prefix="arvo") as memory:
            assert await memory.ping()
            grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
            assert grant.lease is not None
            await memory.commit_and_release(grant.lease, {"tls": True}, status=InstanceStatus.ACTIVE)
            assert await memory.inspect(KEY) == {"tls": True}
        async with RedisMemory.from_url(
            f"rediss://127.0.0.1:{server.port}/0", key_prefix="arvo"
        ) as untrusted:
            with pytest.raises(RedisUnavailableError):
                await untrusted.inspect(KEY)
    finally:
        server.stop()


# --- cluster mode ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisServer]:
    """A one-node Redis Cluster owning all 16384 slots (cross-slot rules apply as in a real cluster).

    Shared by the module's cluster tests (each uses its own key prefix): reaching
    ``cluster_state:ok`` takes about two seconds.
    """
    with running_single_node_cluster(tmp_path_factory.mktemp("cluster")) as server:
        yield server


async def test_cluster_mode_keeps_every_script_in_one_slot(single_node_cluster: PrivateRedisServer) -> None:
    async with RedisMemory.from_url(
        single_node_cluster.url, key_prefix=unique_prefix(), cluster_mode=True
    ) as memory:
        assert isinstance(memory.client, redis.asyncio.RedisCluster)
        for key, status in [("o1:a", InstanceStatus.ACTIVE), ("o2:b", InstanceStatus.DONE)]:
            grant = await memory.lease_and_read(key, ttl_ms=TTL_MS)
            assert grant.lease is not None
            assert not (await memory.lease_and_read(key, ttl_ms=TTL_MS)).acquired
            assert await memory.renew(grant.lease, ttl_ms=TTL_MS)
            await memory.commit_and_release(grant.lease, {"key": key}, status=status)
        await memory.set_status("o1:a", InstanceStatus.PARKED, reason="operator")
        rows = await memory.list_instances()
        assert {(r.key, r.status) for r in rows} == {
            ("o1:a", InstanceStatus.PARKED),
            ("o2:b", InstanceStatus.DONE),
        }
        assert await memory.inspect("o1:a") == {"key": "o1:a", "parkedReason": "operator"}

        zombie = await memory.lease_and_read("o2:b", ttl_ms=TTL_MS)
        assert zombie.lease is not None
        assert await memory.release(zombie.lease)
        with pytest.raises(LeaseLostError):
            await memory.commit_and_release(zombie.lease, {"zombie": True}, status=InstanceStatus.FAILED)
        assert [r.status for r in await memory.list_instances(orchestrator="o2")] == [InstanceStatus.DONE]


async def test_cluster_index_ignores_a_late_move_of_an_older_commit(
    single_node_cluster: PrivateRedisServer,
) -> None:
    async with RedisMemory.from_url(
        single_node_cluster.url, key_prefix=unique_prefix(), cluster_mode=True
    ) as memory:
        first = await memory.lease_and_read("o1:a", ttl_ms=TTL_MS)
        assert first.lease is not None
        await memory.commit_and_release(first.lease, {"n": 1}, status=InstanceStatus.ACTIVE)
        second = await memory.lease_and_read("o1:a", ttl_ms=TTL_MS)
        assert second.lease is not None
        await memory.commit_and_release(second.lease, {"n": 2}, status=InstanceStatus.DONE)
        # The first writer's index move arrives late (its process stalled between the two commands).
        status_pos = list(InstanceStatus).index(InstanceStatus.ACTIVE) + 1
        await memory._cluster_index_move("o1", "a", status_pos, 1, fence=first.lease.fence)
        assert [r.status for r in await memory.list_instances()] == [InstanceStatus.DONE]


async def test_standalone_mode_on_a_cluster_fails_with_cross_slot(
    single_node_cluster: PrivateRedisServer,
) -> None:
    async with RedisMemory.from_url(
        single_node_cluster.url, key_prefix=unique_prefix(), cluster_mode=True
    ) as memory:
        standalone = RedisMemory(client=memory.client, key_prefix=memory.key_prefix, cluster_mode=False)
        grant = await standalone.lease_and_read("o1:a", ttl_ms=TTL_MS)  # one slot: fine
        assert grant.lease is not None
        with pytest.raises(RedisMemoryError, match=r"(?i)slot"):
            await standalone.commit_and_release(grant.lease, {"n": 1}, status=InstanceStatus.ACTIVE)


# --- concurrency and lease keeping --------------------------------------------------------------------


async def test_concurrent_leases_grant_exactly_one(redis_memory: RedisMemory) -> None:
    grants = await asyncio.gather(*(redis_memory.lease_and_read(KEY, ttl_ms=TTL_MS) for _ in range(20)))
    assert sum(grant.acquired for grant in grants) == 1


async def test_concurrent_read_modify_write_loses_no_update(redis_memory: RedisMemory) -> None:
    async def increment() -> None:
        while True:
            grant = await redis_memory.lease_and_read(KEY, ttl_ms=TTL_MS)
            if not grant.acquired:
                await asyncio.sleep(0.001)
                continue
            assert grant.lease is not None
            count = (grant.record or {}).get("count", 0)
            await redis_memory.commit_and_release(
                grant.lease, {"count": count + 1}, status=InstanceStatus.ACTIVE
            )
            return

    await asyncio.gather(*(increment() for _ in range(50)))
    assert await redis_memory.inspect(KEY) == {"count": 50}


async def test_a_client_decoding_responses_works_too(shared_redis_url: str, redis_key_prefix: str) -> None:
    async with RedisMemory.from_url(
        shared_redis_url, key_prefix=redis_key_prefix, decode_responses=True
    ) as memory:
        grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"text": "ünï"}, status=InstanceStatus.ACTIVE)
        again = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert again.record == {"text": "ünï"}
        assert again.lease is not None
        assert await memory.release(again.lease)
        await memory.set_status(KEY, InstanceStatus.PARKED, reason="why")
        assert await memory.inspect(KEY) == {"text": "ünï", "parkedReason": "why"}
        assert [(r.key, r.status) for r in await memory.list_instances()] == [(KEY, InstanceStatus.PARKED)]


def test_redis_memory_implements_the_memory_port() -> None:
    memory: Memory = RedisMemory(client=redis.asyncio.Redis(), key_prefix="arvo")
    assert isinstance(memory, Memory)


# --- the lean hot-path client ----------------------------------------------------------------------


async def test_the_hot_client_serves_each_per_event_call_in_one_request(
    private_redis: PrivateRedisServer,
) -> None:
    client = CountingRedis.for_url(private_redis.url)
    hot = PipelinedRedis.from_redis_py(client)
    assert hot is not None
    async with RedisMemory(client=client, key_prefix="arvo", hot_client=hot) as memory:
        warm = await memory.lease_and_read("warm:up", ttl_ms=TTL_MS)  # loads the scripts once
        assert warm.lease is not None
        await memory.renew(warm.lease, ttl_ms=TTL_MS)
        await memory.commit_and_release(warm.lease, {"warm": True}, status=InstanceStatus.ACTIVE)
        warm = await memory.lease_and_read("warm:up", ttl_ms=TTL_MS)
        assert warm.lease is not None
        await memory.release(warm.lease)
        client.reset_counts()
        measured: dict[str, int] = {}

        async def measure(name: str, call: object) -> object:
            before = hot.requests
            result = await call  # type: ignore[misc]
            measured[name] = hot.requests - before
            return result

        grant = await measure("lease_and_read", memory.lease_and_read(KEY, ttl_ms=TTL_MS))
        lease = grant.lease  # type: ignore[attr-defined]
        await measure("lease_and_read (denied)", memory.lease_and_read(KEY, ttl_ms=TTL_MS))
        await measure("renew", memory.renew(lease, ttl_ms=TTL_MS))
        await measure(
            "commit_and_release", memory.commit_and_release(lease, {"n": 1}, status=InstanceStatus.DONE)
        )
        grant = await measure("lease_and_read (with record)", memory.lease_and_read(KEY, ttl_ms=TTL_MS))
        await measure("release", memory.release(grant.lease))  # type: ignore[attr-defined]
        assert measured == dict.fromkeys(measured, 1), measured
        assert client.round_trips == 0, "redis-py must not serve the per-event calls"
        assert await memory.inspect(KEY) == {"n": 1}
        assert [r.key for r in await memory.list_instances(status=InstanceStatus.DONE)] == [KEY]


async def test_hot_client_reloads_flushed_scripts(private_redis: PrivateRedisServer) -> None:
    async with RedisMemory.from_url(private_redis.url, key_prefix="arvo") as memory:
        hot = memory.hot_client
        assert hot is not None
        grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert grant.lease is not None
        await memory.client.script_flush()
        before = hot.requests
        await memory.commit_and_release(grant.lease, {"n": 1}, status=InstanceStatus.ACTIVE)
        assert hot.requests - before == 3  # NOSCRIPT -> SCRIPT LOAD -> EVALSHA
        assert await memory.inspect(KEY) == {"n": 1}


async def test_concurrent_calls_pipeline_on_one_connection(private_redis: PrivateRedisServer) -> None:
    async with RedisMemory.from_url(private_redis.url, key_prefix="arvo") as memory:
        keys = [f"orc:{n}" for n in range(64)]
        await memory.ping()  # connects both clients
        hot = memory.hot_client
        assert hot is not None
        await memory.release((await memory.lease_and_read("warm:up", ttl_ms=TTL_MS)).lease)  # type: ignore[arg-type]
        requests_before, round_trips_before = hot.requests, hot.round_trips
        grants = await asyncio.gather(*(memory.lease_and_read(key, ttl_ms=TTL_MS) for key in keys))
        # The 64 leases made in one loop iteration left in one write: one round trip, 64 requests.
        assert (hot.requests - requests_before, hot.round_trips - round_trips_before) == (64, 1)
        await asyncio.gather(
            *(
                memory.commit_and_release(grant.lease, {"n": n}, status=InstanceStatus.ACTIVE)  # type: ignore[arg-type]
                for n, grant in enumerate(grants)
            )
        )
        assert [await memory.inspect(key) for key in keys] == [{"n": n} for n in range(64)]
        clients = await memory.client.client_list()
        assert len(clients) == 2, clients  # redis-py's pooled connection and the hot client's one


async def test_hot_client_selects_the_database_of_the_url(private_redis: PrivateRedisServer) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/3"
    async with RedisMemory.from_url(url, key_prefix="arvo") as memory:
        grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
        assert grant.lease is not None
        await memory.commit_and_release(grant.lease, {"db": 3}, status=InstanceStatus.ACTIVE)
    admin = redis.asyncio.Redis.from_url(url)
    try:
        assert orjson.loads(await admin.get(memory.instance_keys(KEY).state)) == {"db": 3}  # type: ignore[arg-type]
    finally:
        await admin.aclose()
    db0 = redis.asyncio.Redis.from_url(private_redis.url)
    try:
        assert await db0.dbsize() == 0
    finally:
        await db0.aclose()


async def test_hot_client_timeout_raises_unavailable_and_fails_the_requests_in_flight() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        hot = PipelinedRedis(host="127.0.0.1", port=port, timeout_s=0.2, connect_timeout_s=1.0)
        memory = RedisMemory(client=redis.asyncio.Redis(port=port), key_prefix="arvo", hot_client=hot)
        results = await asyncio.gather(
            memory.lease_and_read(KEY, ttl_ms=TTL_MS),
            memory.lease_and_read("orc:other", ttl_ms=TTL_MS),
            return_exceptions=True,
        )
        assert all(isinstance(result, RedisUnavailableError) for result in results), results
        assert "RespTimeoutError" in str(results[0])
        await hot.close()
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_retried_lease_request_is_granted_its_own_lease_again(redis_memory: RedisMemory) -> None:
    # A request whose connection died after Redis ran it is sent again with the same token.
    keys = redis_memory.instance_keys(KEY)
    script = redis_memory.client.register_script(_LEASE_AND_READ_LUA)
    args = [keys.lock, keys.fence, keys.state]
    first = await script(keys=args, args=["token-1", TTL_MS])
    again = await script(keys=args, args=["token-1", TTL_MS])
    other = await script(keys=args, args=["token-2", TTL_MS])
    assert [int(first[0]), int(first[1])] == [1, 1]
    assert [int(again[0]), int(again[1])] == [1, 1], "same token: granted, same fence"
    assert int(other[0]) == 0, "another token is still denied"


async def test_hot_client_calls_are_client_spans_only_inside_a_recording_span(
    private_redis: PrivateRedisServer,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from service.runtime import otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = otel.use_tracer_provider(provider)
    try:
        async with RedisMemory.from_url(private_redis.url, key_prefix="arvo") as memory:
            assert memory.hot_client is not None
            untraced = await memory.lease_and_read("outside:span", ttl_ms=TTL_MS)  # no parent: no span
            assert untraced.lease is not None
            await memory.release(untraced.lease)
            assert exporter.get_finished_spans() == ()
            with otel.runtime_tracer().start_as_current_span("handler") as parent:
                grant = await memory.lease_and_read(KEY, ttl_ms=TTL_MS)
                assert grant.lease is not None
                await memory.commit_and_release(grant.lease, {"n": 1}, status=InstanceStatus.DONE)
    finally:
        otel.use_tracer_provider(previous)
    calls = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]
    assert [span.name for span in calls] == ["redis lease_and_read", "redis commit_and_release"]
    for span in calls:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        attributes = dict(span.attributes or {})
        assert attributes["db.system"] == "redis"
        assert str(attributes["db.statement"]).startswith("EVALSHA ?")
        assert attributes["net.peer.port"] == private_redis.port
        assert attributes["arvo.redis.operation"] == span.name.removeprefix("redis ")
