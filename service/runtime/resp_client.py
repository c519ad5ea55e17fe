"""A lean, pipelining Redis client for the few commands of the Kafka hot path.

redis-py's asyncio client costs ~100 µs of CPU per command (connection pool checkout, retry wrapper,
command packing and response callbacks in Python). The service sends only a handful of commands per
consumed event — ``EVALSHA`` of the lease and commit scripts and ``SET ... NX GET`` for the stateless
outbox — so :class:`PipelinedRedis` runs exactly those on one connection shared by every lane:

* commands are packed with ``hiredis.pack_command`` and replies parsed with ``hiredis.Reader``;
* requests are written at the end of the loop iteration that made them (those of several lanes in
  one write) and answered in order (Redis answers a connection's
  requests in the order it received them), so concurrent lanes pipeline naturally;
* ``AUTH`` (ACL user and password) and ``SELECT`` are sent on every (re)connect; ``rediss://`` uses
  the TLS context redis-py builds from the same URL options;
* every request has a timeout; a timeout or a lost connection closes the connection and fails every
  request in flight with :class:`RespConnectionError` / :class:`RespTimeoutError` (both ``OSError``
  subclasses), the next request reconnects. Like the redis-py clients of
  :meth:`~service.runtime.redis_memory.RedisMemory.from_url`, a request that failed because its
  connection was found dead is retried once on a fresh connection; a timed-out one never is;
* ``EVALSHA`` answered with ``NOSCRIPT`` loads the script (``SCRIPT LOAD``) and runs it again.

Redis Cluster uses one per master node, routed by slot
(:class:`~service.runtime.resp_cluster.ClusterPipelinedRedis`). Everything else (inspection,
listing, operator commands) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import hiredis
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from service.runtime.otel import runtime_tracer, tracing_enabled

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "LuaScript",
    "PipelinedRedis",
    "RespConnectionError",
    "RespError",
    "RespReplyError",
    "RespTimeoutError",
]

_NOSCRIPT: Final = "NOSCRIPT"

_pack: Final = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)
"""``hiredis.pack_command`` (its stub types the argument as a one-element tuple)."""


class RespError(Exception):
    """Base class of :class:`PipelinedRedis` failures."""


class RespConnectionError(RespError, ConnectionError):
    """The connection could not be opened or was lost with the request in flight."""


class RespTimeoutError(RespError, TimeoutError):
    """No reply within the timeout (the command may or may not have been applied)."""


class RespReplyError(RespError):
    """Redis answered with an error reply (``NOPERM``, ``WRONGPASS``, ``LOADING``, ...)."""

    @property
    def unavailable(self) -> bool:
        """Whether the error means "try again later" (server loading, replica not ready, cluster down)."""
        return str(self).startswith(("LOADING", "MASTERDOWN", "TRYAGAIN", "BUSY ", "CLUSTERDOWN"))


_STATEMENT_MAX: Final = 1000


def _sanitized(args: tuple[str | bytes | int | float, ...]) -> str:
    """``COMMAND ? ? …`` (at most 1,000 characters), as the redis-py instrumentation writes it."""
    text = " ".join([str(args[0]), *["?"] * (len(args) - 1)]) if args else ""
    return text if len(text) <= _STATEMENT_MAX else f"{text[: _STATEMENT_MAX - 3]}..."


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script, its SHA1 (what ``EVALSHA`` names it by) and the operation it is (names its spans)."""

    source: str
    name: str | None = None
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest())


class _Protocol(asyncio.Protocol):
    """One connection: writes packed requests, resolves their futures in reply order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float | None) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(replyError=RespReplyError, notEnoughData=False)
        # In-flight requests, oldest first: their futures and reply deadlines (loop time).
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        # One timer for all of them, due at the oldest deadline (replies come in request order).
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []
        self.closed = False
        self.requests = 0
        self.writes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Write one packed request; the future gets its reply (an error reply as an instance)."""
        if self.closed or self._transport is None:
            raise RespConnectionError("connection to Redis is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._timeout_s is None:
            self._waiting.append((future, 0.0))
        else:
            deadline = self._loop.time() + self._timeout_s
            self._waiting.append((future, deadline))
            if self._watchdog is None:
                self._watchdog = self._loop.call_at(deadline, self._check_deadline)
        self.requests += 1
        # Requests made in the same loop iteration (other lanes) leave in one write: one syscall.
        if not self._unsent:
            self._loop.call_soon(self._flush)
        self._unsent.append(packed)
        return future

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self.closed and self._transport is not None and unsent:
            self.writes += 1
            self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiting = self._waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RespConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RespConnectionError(f"unexpected reply from Redis: {reply!r:.80}"))
                return
            future = waiting.popleft()[0]
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        self.fail(RespConnectionError(f"connection to Redis lost{reason}"), close=False)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting or self.closed:
            return
        deadline = self._waiting[0][1]
        if self._loop.time() >= deadline:
            self.fail(RespTimeoutError(f"no reply from Redis within {self._timeout_s} s"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)

    def fail(self, error: RespError, *, close: bool = True) -> None:
        """Close the connection and fail every request in flight with ``error``."""
        self.closed = True
        self._unsent.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)
        if close and self._transport is not None:
            self._transport.abort()


async def _send_all(protocol: _Protocol, packed: list[bytes]) -> list[Any]:
    """Send ``packed`` on ``protocol`` in the same loop iteration (one write); all replies, in order.

    Error replies are returned as :class:`RespReplyError` instances, as :meth:`_Protocol.send` gives
    them; a failed request (connection lost, timeout) raises, once every future is done (so none is
    left with an unretrieved error).
    """
    futures = [protocol.send(item) for item in packed]
    await asyncio.wait(futures)
    failures = [future.exception() for future in futures]
    for failure in failures:
        if failure is not None:
            raise failure
    return [future.result() for future in futures]


class PipelinedRedis:
    """One pipelined connection to a standalone Redis for ``EVALSHA`` and ``SET`` on the hot path.

    Args:
        host: Server host (ignored when ``path`` is given).
        port: Server port.
        path: Unix socket path, or ``None`` for TCP.
        db: Database number (``SELECT`` after connecting when not 0).
        username: ACL user (``None``: the default user).
        password: Password (``None``: no ``AUTH``).
        ssl_context: TLS context for ``rediss://`` (``None``: plain TCP).
        server_hostname: Name checked against the server certificate (defaults to ``host``).
        timeout_s: Per-request reply timeout (``None``: none).
        connect_timeout_s: Timeout of connecting, TLS handshake and ``AUTH``/``SELECT``.

    """

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout_s: float | None = 2.0,
        connect_timeout_s: float | None = 2.0,
    ) -> None:
        self._host = host
        self._port = port
        self._path = path
        self._db = db
        self._username = username
        self._password = password
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._requests_before = 0
        self._writes_before = 0
        # The connection's span attributes (as redis-py's instrumentation writes them), built once.
        peer: dict[str, Any] = (
            {"net.peer.name": path, "net.transport": "other"}
            if path is not None
            else {"net.peer.name": host, "net.peer.port": port, "net.transport": "ip_tcp"}
        )
        self._connection_attributes: dict[str, Any] = {"db.redis.database_index": db, **peer}

    @classmethod
    def from_redis_py(cls, client: Redis) -> PipelinedRedis | None:
        """The same server, credentials, database, TLS and timeouts as a redis-py client.

        Returns:
            The client, or ``None`` when ``client`` uses something this one does not support
            (a credential provider, or a connection class other than redis-py's TCP, TLS and Unix
            socket connections).

        """
        from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

        pool = client.connection_pool
        kind = pool.connection_class
        if kind not in (Connection, SSLConnection, UnixDomainSocketConnection):
            return None
        probe: Any = cast(Any, pool).make_connection()
        if getattr(probe, "credential_provider", None) is not None:
            return None
        context: ssl.SSLContext | None = None
        if kind is SSLConnection:
            context = probe.ssl_context.get()
        return cls(
            host=getattr(probe, "host", "localhost"),
            port=int(getattr(probe, "port", 6379)),
            path=getattr(probe, "path", None) if kind is UnixDomainSocketConnection else None,
            db=int(probe.db or 0),
            username=probe.username,
            password=probe.password,
            ssl_context=context,
            timeout_s=probe.socket_timeout,
            connect_timeout_s=probe.socket_connect_timeout,
        )

    @property
    def requests(self) -> int:
        """Requests sent so far (each one a round trip unless pipelined with others)."""
        current = self._protocol.requests if self._protocol is not None else 0
        return self._requests_before + current

    @property
    def round_trips(self) -> int:
        """Writes sent so far: each one round trip, however many requests it carries.

        The requests made in one loop iteration (by every lane) leave in one write and are answered
        together.
        """
        current = self._protocol.writes if self._protocol is not None else 0
        return self._writes_before + current

    async def execute(self, *args: str | bytes | int | float) -> Any:
        """Send one command and return its reply.

        Inside a recording span the command is a ``CLIENT`` child span, as the redis-py
        instrumentation would make it (name = the command, ``db.*``/``net.*`` attributes).

        Raises:
            RespConnectionError: Redis could not be reached or the connection was lost.
            RespTimeoutError: no reply in time (the connection is closed; the command may have run).
            RespReplyError: Redis answered with an error.

        """
        span = self._client_span(args, None)
        if span is not None:
            with span:
                return await self._execute(args)
        return await self._execute(args)

    async def _execute(self, args: tuple[str | bytes | int | float, ...]) -> Any:
        reply = await self._request(_pack(args))
        if isinstance(reply, RespReplyError):
            raise reply
        return reply

    async def evalsha(self, script: LuaScript, keys: list[str], args: list[str | bytes | int | float]) -> Any:
        """Run ``script`` by SHA1, loading it first when the server answers ``NOSCRIPT``.

        Inside a recording span the call is a ``CLIENT`` child span named ``redis <script name>``
        (the command's name for an unnamed script), with ``arvo.redis.operation`` set.

        Raises:
            RespConnectionError: Redis could not be reached or the connection was lost.
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered with an error (script errors included).

        """
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        span = self._client_span(command, script.name)
        if span is not None:
            with span:
                return await self._evalsha(script, command)
        return await self._evalsha(script, command)

    async def _evalsha(self, script: LuaScript, command: tuple[str | bytes | int | float, ...]) -> Any:
        packed = _pack(command)
        reply = await self._request(packed)
        if isinstance(reply, RespReplyError):
            if not str(reply).startswith(_NOSCRIPT):
                raise reply
            await self._execute(("SCRIPT", "LOAD", script.source))
            reply = await self._request(packed)
            if isinstance(reply, RespReplyError):
                raise reply
        return reply

    async def evalsha_then(
        self,
        script: LuaScript,
        keys: list[str],
        args: list[str | bytes | int | float],
        command: tuple[str | bytes | int | float, ...],
    ) -> tuple[Any, Any]:
        """Run ``script`` and ``command`` right behind it on the same connection, in one write.

        One round trip for both (e.g. a commit script and ``WAIT``: Redis runs ``command`` only after
        the script, on the same connection). ``NOSCRIPT`` loads the script and sends both again.
        Inside a recording span the pair is one ``CLIENT`` span, as :meth:`evalsha` makes it.

        Returns:
            The script's reply and ``command``'s reply.

        Raises:
            RespConnectionError: Redis could not be reached or the connection was lost.
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered either with an error (script errors included).

        """
        evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
        span = self._client_span(evalsha, script.name)
        if span is not None:
            with span:
                return await self._evalsha_then(script, evalsha, command)
        return await self._evalsha_then(script, evalsha, command)

    async def _evalsha_then(
        self,
        script: LuaScript,
        evalsha: tuple[str | bytes | int | float, ...],
        command: tuple[str | bytes | int | float, ...],
    ) -> tuple[Any, Any]:
        packed = [_pack(evalsha), _pack(command)]
        first, second = await self._request_all(packed)
        if isinstance(first, RespReplyError) and str(first).startswith(_NOSCRIPT):
            await self._execute(("SCRIPT", "LOAD", script.source))
            first, second = await self._request_all(packed)
        for reply in (first, second):
            if isinstance(reply, RespReplyError):
                raise reply
        return first, second

    async def execute_all(self, *commands: tuple[str | bytes | int | float, ...]) -> list[Any]:
        """Send ``commands`` in one write (one round trip) and return their replies, in order.

        Raises:
            RespConnectionError: Redis could not be reached or the connection was lost.
            RespTimeoutError: no reply in time.
            RespReplyError: Redis answered one of them with an error (the first such error).

        """
        replies = await self._request_all([_pack(command) for command in commands])
        for reply in replies:
            if isinstance(reply, RespReplyError):
                raise reply
        return replies

    def _client_span(
        self, args: tuple[str | bytes | int | float, ...], operation: str | None
    ) -> AbstractContextManager[Span] | None:
        """The span of one command when the current span records (else ``None``: nothing to pay).

        Same name and attributes as ``opentelemetry-instrumentation-redis`` (default semantic
        conventions) with the service's request hook, so traces look the same with either client.
        """
        if not tracing_enabled() or not trace.get_current_span().is_recording():
            return None
        attributes: dict[str, Any] = {
            "db.system": "redis",
            "db.statement": _sanitized(args),
            "db.redis.args_length": len(args),
            **self._connection_attributes,
        }
        if operation is not None:
            attributes["arvo.redis.operation"] = operation
        name = f"redis {operation}" if operation is not None else str(args[0])
        return runtime_tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    async def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            self._requests_before += protocol.requests
            self._writes_before += protocol.writes
            protocol.fail(RespConnectionError("the client was closed"))

    # ------------------------------------------------------------------------------------------

    async def _request(self, packed: bytes) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
            return await protocol.send(packed)
        try:
            return await protocol.send(packed)
        except RespConnectionError:
            # The connection died before or while this request was sent (e.g. a Redis restart the
            # loop had not noticed yet): one immediate attempt on a fresh connection, as redis-py.
            return await (await self._connect()).send(packed)

    async def _request_all(self, packed: list[bytes]) -> list[Any]:
        """Several requests in one write, with :meth:`_request`'s one retry on a dead connection."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return await _send_all(await self._connect(), packed)
        try:
            return await _send_all(protocol, packed)
        except RespConnectionError:
            return await _send_all(await self._connect(), packed)

    async def _connect(self) -> _Protocol:
        """The open connection, opening one (once, for all waiting callers) when there is none."""
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            connecting = self._connecting
            try:
                protocol = await self._open()
            except BaseException as exc:
                # Others waiting for this attempt get its failure; a cancelled opener's waiters a
                # connection error (they were not cancelled themselves).
                failure = exc if isinstance(exc, Exception) else RespConnectionError("connect abandoned")
                connecting.set_exception(failure)
                connecting.exception()  # retrieved: nobody else may be waiting
                raise
            else:
                if self._protocol is not None:
                    self._requests_before += self._protocol.requests
                    self._writes_before += self._protocol.writes
                self._protocol = protocol
                connecting.set_result(protocol)
                return protocol
            finally:
                self._connecting = None
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Protocol:
        target = self._path or f"{self._host}:{self._port}"
        try:
            return await self._open_connection(target)
        except TimeoutError as exc:
            raise RespTimeoutError(f"connecting to Redis at {target} timed out") from exc
        except RespError:
            raise
        except OSError as exc:
            raise RespConnectionError(
                f"cannot connect to Redis at {target}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _open_connection(self, target: str) -> _Protocol:
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            return _Protocol(loop, self._timeout_s)

        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if self._path is not None:
                    _, protocol = await loop.create_unix_connection(factory, self._path)
                else:
                    _, protocol = await loop.create_connection(
                        factory,
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=(self._server_hostname or self._host) if self._ssl else None,
                    )
                await self._setup(protocol)
        except BaseException:
            if protocol is not None:
                protocol.fail(RespConnectionError(f"connection setup to Redis at {target} failed"))
            raise
        return protocol

    async def _setup(self, protocol: _Protocol) -> None:
        """``AUTH`` and ``SELECT`` on a new connection (pipelined)."""
        setup: list[tuple[str | bytes | int, ...]] = []
        if self._password is not None:
            auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
            setup.append(auth)
        if self._db:
            setup.append(("SELECT", self._db))
        replies = [protocol.send(_pack(command)) for command in setup]
        for reply in replies:
            outcome = await reply
            if isinstance(outcome, RespReplyError):
                raise outcome
