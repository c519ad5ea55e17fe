"""ClusterPipelinedRedis against fake cluster nodes: routing by slot, redirections, node failures.

Each fake node is a loopback RESP server answering from a script; the topology is a fake of
redis-py's nodes manager (slot map, ``move_slot``, ``initialize``), the only part of ``RedisCluster``
the client uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import MovedError, RedisClusterException, SlotNotCoveredError

from service.runtime.redis_memory import RedisUnavailableError, redis_failure
from service.runtime.resp_client import LuaScript, PipelinedRedis, RespConnectionError, RespReplyError
from service.runtime.resp_cluster import ClusterPipelinedRedis, RespClusterUnavailableError

SCRIPT = LuaScript("return KEYS[1]", name="probe")
Answer = Callable[[list[str]], bytes | None]
"""A node's answer to one command (``None``: drop the connection)."""


def bulk(text: str) -> bytes:
    return f"${len(text.encode())}\r\n{text}\r\n".encode()


def echo_key(command: list[str]) -> bytes:
    """EVALSHA answers its first key, SET ``+OK``, ASKING/SCRIPT LOAD ``+OK``."""
    if command[0] == "EVALSHA":
        return bulk(command[3])
    return b"+OK\r\n"


@dataclass
class FakeNode:
    answer: Answer = echo_key
    commands: list[list[str]] = field(default_factory=list)
    reads: list[list[list[str]]] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                batch: list[list[str]] = []
                out: list[bytes] = []
                while (request := parser.gets()) is not False:
                    command = [part.decode() for part in request]
                    batch.append(command)
                    self.commands.append(command)
                    reply = self.answer(command)
                    if reply is None:
                        writer.close()
                        return
                    out.append(reply)
                self.reads.append(batch)
                writer.write(b"".join(out))
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class FakeNodesManager:
    """What ClusterPipelinedRedis uses of redis-py's NodesManager."""

    def __init__(self) -> None:
        self.slots_cache: dict[int, list[Any]] = {}
        self.nodes_cache: dict[str, Any] = {}
        self.default_node: Any = None
        self.moved: list[tuple[int, str, int]] = []
        self.refreshes = 0
        self.refresh_error: Exception | None = None
        self.by_address: dict[tuple[str, int], Any] = {}

    def serve(self, node: FakeNode, first: int, last: int) -> None:
        self.nodes_cache[node.name] = node
        self.by_address[(node.host, node.port)] = node
        self.default_node = self.default_node or node
        for slot in range(first, last + 1):
            self.slots_cache[slot] = [node]

    def get_node_from_slot(self, slot: int) -> Any:
        try:
            return self.slots_cache[slot][0]
        except KeyError:
            raise SlotNotCoveredError(f'Slot "{slot}" not covered by the cluster.') from None

    async def move_slot(self, error: MovedError) -> None:
        self.moved.append((error.slot_id, error.host, error.port))
        self.slots_cache[error.slot_id] = [self.by_address[(error.host, error.port)]]

    async def initialize(self) -> None:
        self.refreshes += 1
        if self.refresh_error is not None:
            raise self.refresh_error


class FakeCluster:
    def __init__(self) -> None:
        self.nodes_manager = FakeNodesManager()
        self.initialized = 0

    async def initialize(self) -> FakeCluster:
        self.initialized += 1
        if self.nodes_manager.refresh_error is not None:
            raise self.nodes_manager.refresh_error
        return self


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[FakeNode, FakeNode]]:
    first, second = FakeNode(), FakeNode()
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


def client_for(cluster: FakeCluster) -> ClusterPipelinedRedis:
    def node_client(host: str, port: int) -> PipelinedRedis:
        return PipelinedRedis(host=host, port=port, timeout_s=2.0, connect_timeout_s=2.0)

    return ClusterPipelinedRedis(cast(RedisCluster, cluster), node_client)


@pytest.fixture
async def split(nodes: tuple[FakeNode, FakeNode]) -> AsyncIterator[tuple[FakeCluster, ClusterPipelinedRedis]]:
    """Slots 0-8191 on the first node, 8192-16383 on the second."""
    cluster = FakeCluster()
    cluster.nodes_manager.serve(nodes[0], 0, 8191)
    cluster.nodes_manager.serve(nodes[1], 8192, 16383)
    client = client_for(cluster)
    yield cluster, client
    await client.close()


def keys_in(first: int, last: int, count: int) -> list[str]:
    found = [f"arvo:{{orders:{n}}}:lock" for n in range(5000)]
    return [key for key in found if first <= key_slot(key.encode()) <= last][:count]


def moved_to(node: FakeNode) -> Answer:
    def answer(command: list[str]) -> bytes:
        if command[0] == "EVALSHA":
            return f"-MOVED {key_slot(command[3].encode())} 127.0.0.1:{node.port}\r\n".encode()
        return b"+OK\r\n"

    return answer


# --- routing ---------------------------------------------------------------------------------------


async def test_requests_go_to_the_master_of_their_slot_in_one_write_per_node(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis]
) -> None:
    cluster, client = split
    low, high = keys_in(0, 8191, 11), keys_in(8192, 16383, 11)
    for warm in (low.pop(), high.pop()):  # reads the topology, connects both nodes
        await client.evalsha(SCRIPT, [warm], [])
    requests, round_trips = client.requests, client.round_trips
    replies = await asyncio.gather(*(client.evalsha(SCRIPT, [key], []) for key in low + high))
    assert replies == [key.encode() for key in low + high]
    assert [command[3] for command in nodes[0].commands[1:]] == low
    assert [command[3] for command in nodes[1].commands[1:]] == high
    assert (client.requests - requests, client.round_trips - round_trips) == (20, 2)
    assert [len(batch) for batch in nodes[0].reads] == [1, 10]
    assert cluster.initialized == 1, "the topology is read through redis-py once, before the first request"
    assert sorted(client.nodes) == sorted([nodes[0].name, nodes[1].name])


async def test_commands_route_by_their_key_and_execute_all_by_the_first_commands_key(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis]
) -> None:
    _, client = split
    high = keys_in(8192, 16383, 1)[0]
    assert await client.execute("SET", high, "v", "NX", "GET") == b"OK"
    assert await client.execute_all(("SET", high, "1"), ("SET", high, "2")) == [b"OK", b"OK"]
    assert nodes[0].commands == []
    assert [command[:2] for command in nodes[1].commands] == [["SET", high]] * 3


async def test_a_slot_without_a_master_is_unavailable_and_the_topology_is_read_again(
    split: tuple[FakeCluster, ClusterPipelinedRedis],
) -> None:
    cluster, client = split
    key = keys_in(0, 8191, 1)[0]
    await client.evalsha(SCRIPT, [key], [])
    del cluster.nodes_manager.slots_cache[key_slot(key.encode())]
    with pytest.raises(RespClusterUnavailableError, match="not covered") as raised:
        await client.evalsha(SCRIPT, [key], [])
    assert isinstance(redis_failure(raised.value, "lease_and_read", "k"), RedisUnavailableError)
    cluster.nodes_manager.serve(cluster.nodes_manager.default_node, 0, 8191)
    assert await client.evalsha(SCRIPT, [key], []) == key.encode()
    assert cluster.nodes_manager.refreshes == 1


async def test_an_unreadable_topology_is_unavailable(nodes: tuple[FakeNode, FakeNode]) -> None:
    cluster = FakeCluster()
    cluster.nodes_manager.refresh_error = RedisClusterException("Redis Cluster cannot be connected")
    client = client_for(cluster)
    results = await asyncio.gather(
        *(client.evalsha(SCRIPT, [key], []) for key in keys_in(0, 16383, 5)), return_exceptions=True
    )
    assert all(isinstance(result, RespClusterUnavailableError) for result in results), results
    assert cluster.initialized == 1, "one topology read shared by the waiting requests"
    assert isinstance(redis_failure(cast(Exception, results[0]), "renew", "k"), RedisUnavailableError)
    assert nodes[0].commands == []


# --- redirections ----------------------------------------------------------------------------------


async def test_moved_updates_redis_pys_slot_map_and_retries_on_the_new_owner(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis]
) -> None:
    cluster, client = split
    key = keys_in(0, 8191, 1)[0]
    slot = key_slot(key.encode())
    nodes[0].answer = moved_to(nodes[1])
    assert await client.evalsha(SCRIPT, [key], ["a"]) == key.encode()
    assert cluster.nodes_manager.moved == [(slot, "127.0.0.1", nodes[1].port)]
    assert await client.evalsha(SCRIPT, [key], ["b"]) == key.encode()
    assert len(nodes[0].commands) == 1, "the second request goes straight to the new owner"
    assert [command[-1] for command in nodes[1].commands] == ["a", "b"]
    assert cluster.nodes_manager.refreshes == 0, "MOVED patches the map, it does not re-read it"


async def test_ask_sends_asking_and_the_request_in_one_write_without_changing_the_map(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis]
) -> None:
    cluster, client = split
    key = keys_in(0, 8191, 1)[0]
    slot = key_slot(key.encode())
    loaded: list[str] = []

    def importing(command: list[str]) -> bytes:
        if command[0] == "SCRIPT":
            loaded.append(command[2])
            return bulk(SCRIPT.sha)
        if command[0] == "EVALSHA" and not loaded:
            return b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
        return echo_key(command)

    nodes[0].answer = lambda command: f"-ASK {slot} 127.0.0.1:{nodes[1].port}\r\n".encode()
    nodes[1].answer = importing
    assert await client.evalsha(SCRIPT, [key], []) == key.encode()
    asking = [batch for batch in nodes[1].reads if batch[0] == ["ASKING"]]
    assert [[command[0] for command in batch] for batch in asking] == [["ASKING", "EVALSHA"]] * 2
    assert loaded == [SCRIPT.source], "NOSCRIPT on the asked node loads the script there"
    assert cluster.nodes_manager.moved == []
    assert cluster.nodes_manager.get_node_from_slot(slot) is nodes[0]
    assert await client.execute("SET", key, "v") == b"OK"
    assert nodes[1].reads[-1] == [["ASKING"], ["SET", key, "v"]]


async def test_a_request_redirected_again_and_again_is_unavailable(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis]
) -> None:
    _, client = split
    key = keys_in(0, 8191, 1)[0]
    nodes[0].answer = moved_to(nodes[1])
    nodes[1].answer = moved_to(nodes[0])
    with pytest.raises(RespClusterUnavailableError, match="still redirects") as raised:
        await client.evalsha(SCRIPT, [key], [])
    assert len(nodes[0].commands) + len(nodes[1].commands) == 3, "the first try and two redirections"
    assert isinstance(redis_failure(raised.value, "commit_and_release", "k"), RedisUnavailableError)


@pytest.mark.parametrize(
    "reply",
    ["CLUSTERDOWN The cluster is down", "TRYAGAIN Multiple keys request during rehashing of slot"],
)
async def test_clusterdown_and_tryagain_are_unavailable(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis], reply: str
) -> None:
    cluster, client = split
    key = keys_in(0, 8191, 1)[0]
    nodes[0].answer = lambda command: f"-{reply}\r\n".encode()
    with pytest.raises(RespReplyError) as raised:
        await client.evalsha(SCRIPT, [key], [])
    assert raised.value.unavailable
    assert isinstance(redis_failure(raised.value, "lease_and_read", "k"), RedisUnavailableError)
    assert len(nodes[0].commands) == 1, "not sent again"
    nodes[0].answer = echo_key
    assert await client.evalsha(SCRIPT, [key], []) == key.encode()
    assert cluster.nodes_manager.refreshes == (1 if reply.startswith("CLUSTERDOWN") else 0)


# --- a node lost -----------------------------------------------------------------------------------


async def test_a_lost_node_fails_only_its_requests_and_the_next_request_reconnects(
    nodes: tuple[FakeNode, FakeNode], split: tuple[FakeCluster, ClusterPipelinedRedis]
) -> None:
    cluster, client = split
    low, high = keys_in(0, 8191, 3), keys_in(8192, 16383, 3)
    await client.evalsha(SCRIPT, [low[0]], [])
    nodes[0].answer = lambda command: None  # drops the connection (and the one retry's)
    results = await asyncio.gather(
        *(client.evalsha(SCRIPT, [key], []) for key in low + high), return_exceptions=True
    )
    assert all(isinstance(result, RespConnectionError) for result in results[:3]), results
    assert results[3:] == [key.encode() for key in high]
    assert isinstance(
        redis_failure(cast(Exception, results[0]), "lease_and_read", "k"), RedisUnavailableError
    )
    nodes[0].answer = echo_key
    assert await client.evalsha(SCRIPT, [low[1]], []) == low[1].encode()
    assert cluster.nodes_manager.refreshes == 1, "a lost node re-reads the topology before the next request"


# --- built from redis-py's cluster client ----------------------------------------------------------


async def test_from_redis_py_takes_the_credentials_and_timeouts_of_the_cluster_client() -> None:
    cluster = RedisCluster(
        host="127.0.0.1", port=7000, username="worker", password="s3cret", socket_timeout=3.5
    )
    client = ClusterPipelinedRedis.from_redis_py(cluster)
    assert client is not None
    node = client._node_client("10.0.0.7", 7001)
    assert (node._host, node._port, node._username, node._password) == ("10.0.0.7", 7001, "worker", "s3cret")
    assert node._timeout_s == pytest.approx(3.5)
    assert node._ssl is None
    await cluster.aclose()

    tls = RedisCluster(host="127.0.0.1", port=7000, ssl=True, ssl_cert_reqs="none")
    client = ClusterPipelinedRedis.from_redis_py(tls)
    assert client is not None
    assert client._node_client("10.0.0.7", 7001)._ssl is not None
    await tls.aclose()

    provider = UsernamePasswordCredentialProvider("worker", "s3cret")
    with_provider = RedisCluster(host="127.0.0.1", port=7000, credential_provider=provider)
    assert ClusterPipelinedRedis.from_redis_py(with_provider) is None
    await with_provider.aclose()
