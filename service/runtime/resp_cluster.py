"""The lean hot-path client for Redis Cluster: one pipelined connection per master, slot-routed.

:class:`ClusterPipelinedRedis` serves the same few per-event commands as
:class:`~service.runtime.resp_client.PipelinedRedis` (``EVALSHA`` of the lease, commit, release,
renew and index-move scripts, the outbox's ``SET ... NX GET``) against a Redis Cluster:

* each request goes to the master of its key's hash slot (CRC16 of the ``{...}`` hash tag; the keys
  of one script are in one slot), over one :class:`~service.runtime.resp_client.PipelinedRedis` per
  master node, so the requests every lane makes in one loop iteration leave as **one write per
  node** (one round trip per node however many requests);
* the topology is redis-py's: the slot map of the ``RedisCluster`` client's nodes manager
  (``get_node_from_slot``), read with the client's own ``initialize``; no discovery of its own;
* ``MOVED`` patches redis-py's slot map (``NodesManager.move_slot``, as redis-py does) and sends the
  request again to the new owner; ``ASK`` sends ``ASKING`` and the request to the named node (one
  write); a request is redirected at most twice, then fails as unavailable
  (:class:`RespClusterUnavailableError`);
* ``CLUSTERDOWN`` and ``TRYAGAIN`` replies are raised as they are (the memory maps them, like
  ``LOADING``, to ``RedisUnavailableError``); ``CLUSTERDOWN``, a slot not covered and any lost
  connection or timeout make the next request re-read the topology first (once, shared by every
  waiting request);
* a node's lost connection fails only that node's requests in flight (each node has its own
  connection); its next request reconnects. ``AUTH``/TLS/timeouts come from the cluster client's
  connection options, ``NOSCRIPT`` loads the script on the node that answered it, and with tracing
  on each request is a ``CLIENT`` span of the node client (its host and port), as in standalone mode.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisClusterException, RedisError

from service.runtime.resp_client import LuaScript, PipelinedRedis, RespConnectionError, RespReplyError

if TYPE_CHECKING:
    from redis.asyncio import RedisCluster

__all__ = ["ClusterPipelinedRedis", "RespClusterUnavailableError"]

_T = TypeVar("_T")

_MAX_REDIRECTS: Final = 2
"""``MOVED``/``ASK`` redirections followed per request (a resharding step can give one of each)."""

_NOSCRIPT: Final = "NOSCRIPT"
_REDIRECTS: Final = ("MOVED ", "ASK ", "CLUSTERDOWN")
"""Error replies :meth:`ClusterPipelinedRedis._call` acts on (the others are raised as they are)."""

Arg = str | bytes | int | float
NodeClientFactory = Callable[[str, int], PipelinedRedis]
"""Builds the pipelined client of the node at ``(host, port)``."""


class RespClusterUnavailableError(RespConnectionError):
    """The cluster cannot route the request now: topology unreadable, slot not covered, redirected again.

    A :class:`~service.runtime.resp_client.RespConnectionError` (an ``OSError``): an outage, not a bad
    command.
    """


def _slot(key: str | bytes) -> int:
    return key_slot(key.encode() if isinstance(key, str) else key)


def _retrieve_failure(future: asyncio.Future[None]) -> None:
    """Mark a shared refresh's failure as retrieved (its callers may all have been cancelled)."""
    if not future.cancelled():
        future.exception()


class ClusterPipelinedRedis:
    """Slot-aware pipelined client for Redis Cluster: one :class:`PipelinedRedis` per master node.

    The same methods as :class:`~service.runtime.resp_client.PipelinedRedis` (``execute``,
    ``evalsha``, ``evalsha_then``, ``execute_all``, ``requests``, ``round_trips``, ``close``), routed
    by key: a script by its first key (all its keys must share a slot), a command by its first
    argument after the name (the key of ``SET``, ``GET``, ``SADD``...), ``execute_all`` by the first
    command's key (all its commands must share a slot). Key-less requests go to redis-py's default node.

    Args:
        cluster: The redis-py cluster client whose topology (slot map, nodes) this client follows; it
            is not closed by :meth:`close`.
        node_client: Builds the pipelined client of one node from its host and port.

    """

    def __init__(self, cluster: RedisCluster, node_client: NodeClientFactory) -> None:
        self._cluster = cluster
        self._node_client = node_client
        self._clients: dict[str, PipelinedRedis] = {}
        self._initialized = False
        self._stale = True
        """Whether the next request re-reads the topology first (never read yet, or a node failed)."""
        self._refreshing: asyncio.Future[None] | None = None
        self._requests_before = 0
        self._writes_before = 0

    @classmethod
    def from_redis_py(cls, cluster: RedisCluster) -> ClusterPipelinedRedis | None:
        """The same cluster, credentials, TLS and timeouts as a redis-py ``RedisCluster``.

        Returns:
            The client, or ``None`` when ``cluster`` uses something the lean client does not support
            (a credential provider, or a connection class other than redis-py's TCP and TLS ones).

        """
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.connection import Connection, SSLConnection

        # A node as redis-py builds them, to read the connection options it would use.
        options: dict[str, Any] = dict(cluster.get_connection_kwargs())
        template = ClusterNode("127.0.0.1", 6379, **options)
        kind = template.connection_class
        if kind not in (Connection, SSLConnection):
            return None
        probe: Any = kind(**template.connection_kwargs)
        if getattr(probe, "credential_provider", None) is not None:
            return None
        context: ssl.SSLContext | None = probe.ssl_context.get() if kind is SSLConnection else None
        username, password = probe.username, probe.password
        timeout_s, connect_timeout_s = probe.socket_timeout, probe.socket_connect_timeout

        def node_client(host: str, port: int) -> PipelinedRedis:
            return PipelinedRedis(
                host=host,
                port=port,
                username=username,
                password=password,
                ssl_context=context,
                timeout_s=timeout_s,
                connect_timeout_s=connect_timeout_s,
            )

        return cls(cluster, node_client)

    @property
    def requests(self) -> int:
        """Requests sent so far, to every node (redirected ones and ``ASKING`` included)."""
        return self._requests_before + sum(client.requests for client in self._clients.values())

    @property
    def round_trips(self) -> int:
        """Writes sent so far, to every node (each one round trip, however many requests it carries).

        The requests made in one loop iteration leave in one write per node they go to.
        """
        return self._writes_before + sum(client.round_trips for client in self._clients.values())

    @property
    def nodes(self) -> dict[str, PipelinedRedis]:
        """The node clients opened so far, by node name (``host:port``)."""
        return dict(self._clients)

    # ------------------------------------------------------------------------------------------
    # Commands

    async def execute(self, *args: Arg) -> Any:
        """Send one command to the master of its key's slot (``args[1]``) and return its reply.

        Raises:
            RespConnectionError: the node could not be reached, its connection was lost, or the
                cluster cannot route the request (:class:`RespClusterUnavailableError`).
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered with an error (``CLUSTERDOWN``, ``TRYAGAIN``...).

        """
        key = args[1] if len(args) > 1 else None

        def send(client: PipelinedRedis) -> Awaitable[Any]:
            return client.execute(*args)

        return await self._call(key, send, (args,), None, _first)

    async def evalsha(self, script: LuaScript, keys: list[str], args: list[Arg]) -> Any:
        """Run ``script`` on the master of its keys' slot (``SCRIPT LOAD`` there on ``NOSCRIPT``).

        Raises:
            RespConnectionError: as :meth:`execute`.
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered with an error (script errors included).

        """
        key = keys[0] if keys else None
        redirected: RespReplyError | None = None
        if not self._stale:  # the hot path: no closure unless redirected
            try:
                return await self._route(key).evalsha(script, keys, args)
            except RespReplyError as exc:
                if not str(exc).startswith(_REDIRECTS):
                    raise
                redirected = exc
            except OSError:
                self._stale = True
                raise

        def send(client: PipelinedRedis) -> Awaitable[Any]:
            return client.evalsha(script, keys, args)

        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self._call(key, send, (command,), script, _first, redirected)

    async def evalsha_then(
        self, script: LuaScript, keys: list[str], args: list[Arg], command: tuple[Arg, ...]
    ) -> tuple[Any, Any]:
        """Run ``script`` and ``command`` right behind it on the master of the keys' slot, in one write.

        Raises:
            RespConnectionError: as :meth:`execute`.
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered either with an error.

        """

        def send(client: PipelinedRedis) -> Awaitable[tuple[Any, Any]]:
            return client.evalsha_then(script, keys, args, command)

        evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self._call(keys[0] if keys else None, send, (evalsha, command), script, _pair)

    async def execute_all(self, *commands: tuple[Arg, ...]) -> list[Any]:
        """Send ``commands`` (keys of one slot) in one write to that slot's master; their replies.

        Raises:
            RespConnectionError: as :meth:`execute`.
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered one of them with an error (the first such error).

        """
        key = commands[0][1] if commands and len(commands[0]) > 1 else None

        def send(client: PipelinedRedis) -> Awaitable[list[Any]]:
            return client.execute_all(*commands)

        return await self._call(key, send, commands, None, list)

    async def close(self) -> None:
        """Close every node connection (a later request opens new ones); the redis-py client stays."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await self._retire(client)

    # ------------------------------------------------------------------------------------------
    # Routing

    async def _call(  # noqa: PLR0917 - private, called once per public method
        self,
        key: Arg | None,
        send: Callable[[PipelinedRedis], Awaitable[_T]],
        commands: tuple[tuple[Arg, ...], ...],
        script: LuaScript | None,
        unpack: Callable[[list[Any]], _T],
        redirected: RespReplyError | None = None,
    ) -> _T:
        """Send to the slot's master, following ``MOVED``/``ASK`` (at most :data:`_MAX_REDIRECTS`).

        ``redirected``: the reply of a first attempt the caller already made (not sent again).
        """
        try:
            if redirected is not None:
                error = redirected
            else:
                if self._stale:
                    await self._refresh()
                try:
                    return await send(self._route(key))
                except RespReplyError as exc:
                    error = exc
            for _ in range(_MAX_REDIRECTS):
                message = str(error)
                try:
                    if message.startswith("MOVED "):
                        # redis-py's own handling of MOVED: patch the slot map, then the new owner.
                        await self._cluster.nodes_manager.move_slot(MovedError(message[6:]))
                        return await send(self._route(key))
                    if message.startswith("ASK "):
                        ask = AskError(message[4:])
                        target = self._client_at(ask.host, ask.port)
                        return unpack(await self._asking(target, commands, script))
                except RespReplyError as exc:
                    error = exc
                    continue
                if message.startswith("CLUSTERDOWN"):
                    self._stale = True
                raise error
            raise RespClusterUnavailableError(
                f"Redis Cluster still redirects the request after {_MAX_REDIRECTS} redirections"
                f" (resharding or failover in progress): {error}"
            ) from error
        except OSError:
            self._stale = True
            raise

    def _route(self, key: Arg | None) -> PipelinedRedis:
        """The client of the master serving ``key``'s slot (redis-py's default node without a key)."""
        manager = self._cluster.nodes_manager
        try:
            if key is None:
                node = manager.default_node
                if node is None:
                    raise RespClusterUnavailableError("Redis Cluster topology not read yet")
            else:
                node = manager.get_node_from_slot(_slot(key if isinstance(key, str | bytes) else str(key)))
        except RedisClusterException as exc:  # SlotNotCoveredError
            self._stale = True
            raise RespClusterUnavailableError(f"Redis Cluster cannot serve the key now: {exc}") from exc
        client = self._clients.get(node.name)
        if client is None:
            client = self._clients[node.name] = self._node_client(node.host, int(node.port))
        return client

    def _client_at(self, host: str, port: int) -> PipelinedRedis:
        name = f"{host}:{port}"
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._node_client(host, port)
        return client

    async def _asking(
        self, client: PipelinedRedis, commands: tuple[tuple[Arg, ...], ...], script: LuaScript | None
    ) -> list[Any]:
        """``ASKING`` before each of ``commands`` on ``client``, in one write; the commands' replies."""
        interleaved = [item for command in commands for item in (("ASKING",), command)]
        try:
            replies = await client.execute_all(*interleaved)
        except RespReplyError as exc:
            if script is None or not str(exc).startswith(_NOSCRIPT):
                raise
            await client.execute("SCRIPT", "LOAD", script.source)
            replies = await client.execute_all(*interleaved)
        return replies[1::2]

    async def _refresh(self) -> None:
        """Re-read the topology through redis-py (one read shared by every waiting request)."""
        refreshing = self._refreshing
        if refreshing is None or refreshing.done():
            refreshing = self._refreshing = asyncio.ensure_future(self._read_topology())
            refreshing.add_done_callback(_retrieve_failure)
        await asyncio.shield(refreshing)

    async def _read_topology(self) -> None:
        cluster = self._cluster
        try:
            if not self._initialized:
                await cluster.initialize()  # no-op when redis-py already did
                self._initialized = True
            else:
                await cluster.nodes_manager.initialize()
        except (RedisError, RedisClusterException, OSError) as exc:
            raise RespClusterUnavailableError(
                f"cannot read the Redis Cluster topology: {type(exc).__name__}: {exc}"
            ) from exc
        self._stale = False
        known = cluster.nodes_manager.nodes_cache
        for name in [name for name in self._clients if name not in known]:
            await self._retire(self._clients.pop(name))

    async def _retire(self, client: PipelinedRedis) -> None:
        await client.close()
        self._requests_before += client.requests
        self._writes_before += client.round_trips


def _first(replies: list[Any]) -> Any:
    return replies[0]


def _pair(replies: list[Any]) -> tuple[Any, Any]:
    return replies[0], replies[1]
