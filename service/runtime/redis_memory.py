"""Redis implementation of the :class:`~service.arvo.memory.Memory` port, plus :class:`LeaseKeeper`.

Key layout (``<prefix>`` defaults to ``arvo``; ``<instance key>`` is ``"<orchestrator>:<execution id>"``)::

    <prefix>:{<instance key>}:state    the record, stored as given (orjson bytes, never wrapped)
    <prefix>:{<instance key>}:lock     lease token, with the lease TTL (PX)
    <prefix>:{<instance key>}:fence    fencing counter, INCR on every granted lease
    <prefix>:{<instance key>}:wfence   fence of the lease that wrote the current record
    <prefix>:index:{<orchestrator>}:<status>   sorted set: execution id scored by update time (ms); one
                                               per status (active, done, failed, parked, cancelled):
                                               the scripts take them all, in InstanceStatus order
    <prefix>:index:{<orchestrator>}:fences     hash: execution id -> fence of the last index move
                                               (cluster mode only, see below)
    <prefix>:orchestrators                     set of orchestrator names seen (for unfiltered listing)

The ``{...}`` hash tags put all keys of one instance in one Redis Cluster slot, and all index keys of
one orchestrator in another. ``{``, ``}`` and ``%`` inside a tag are percent-encoded so that a name
containing braces can never end the tag early (which would split an instance over several slots).

Retention (``instance_retention_s``, ``ARVO_INSTANCE_RETENTION_S``; ``0`` keeps everything forever):
the script that finishes an instance (commit or ``set_status`` to ``done``/``failed``/``cancelled``)
gives its ``state``, ``fence`` and ``wfence`` the retention as TTL with one ``PEXPIREAT`` each in the
same script (one expiry time: they vanish together; the ``lock`` has its lease TTL anyway); a script
moving it to
a live status (``active``, ``parked``) ``PERSIST`` s them. Never one without the others: a ``fence``
gone while the ``wfence`` stays would restart the count below it and fence out every later commit.
Two edges keep that true: a commit under a lease that outlived the instance's keys restores the fence
to its own; a lease granted on an instance without a record (a late event after the expiry) gives
the fence it ``INCR`` ed a TTL (the longer of lease TTL and retention), which its commit persists.
Index entries of finished instances older than the retention are pruned whenever an instance of
the same orchestrator finishes, by the commit and ``set_status`` scripts (standalone) or the
index-move script (cluster mode, with their ``fences`` entries), at most :data:`PRUNE_BATCH` per index
and call, so no call's cost grows with a backlog (it drains over the next finishes). So each
orchestrator's finished indexes hold about one retention's worth of entries; one that no longer
finishes instances keeps its last ones, hidden: :meth:`RedisMemory.list_instances` does not list
entries past the retention. The ``orchestrators`` set is not pruned (one member per name).

Round trips: :meth:`RedisMemory.lease_and_read`, :meth:`RedisMemory.commit_and_release`,
:meth:`RedisMemory.release`, :meth:`RedisMemory.renew` and :meth:`RedisMemory.inspect` are one round
trip each (``EVALSHA`` of a Lua script, or ``GET``), plus a one-off ``SCRIPT LOAD`` + retry when the
server does not know the script yet (first use, restart, ``SCRIPT FLUSH``: redis-py's
``register_script`` and the hot client both handle ``NOSCRIPT``). :meth:`RedisMemory.set_status` is
one script, plus a ``GET`` before it when a reason is written; :meth:`RedisMemory.list_instances` is
one pipeline, plus ``SMEMBERS`` without an orchestrator filter.
``tests/integration/test_redis_memory.py`` pins these counts.

Hot path: in standalone mode, :meth:`RedisMemory.from_url` also opens a
:class:`~service.runtime.resp_client.PipelinedRedis` to the same server (same credentials, database,
TLS and timeouts) and serves the four per-event calls — lease, commit, release, renew — with it: one
connection shared by all lanes, requests pipelined, about a sixth of redis-py's CPU per call. Its
failures map to the same errors (connection loss and timeouts to :class:`RedisUnavailableError`).
In cluster mode it opens a :class:`~service.runtime.resp_cluster.ClusterPipelinedRedis` instead (one
such connection per master, each request routed by its key's hash slot, ``MOVED``/``ASK`` followed
through redis-py's slot map), which also serves the index move and ``SADD`` after each commit.
Everything else stays on redis-py. With tracing on, the lean client makes
the same ``CLIENT`` spans as redis-py's instrumentation (``redis lease_and_read``…), only inside a
recording span — so a sampled-out record pays nothing for them.

Standalone vs. cluster mode: in standalone mode the commit script also moves the instance between
the status indexes, so state and index change atomically. In Redis Cluster a script may only touch
keys of one slot, and the index keys of an orchestrator live in another slot than the instance's
keys; so ``cluster_mode=True`` runs the index move as a second script on the index slot after the
commit succeeded. That index is then eventually consistent: a worker dying between the two commands
leaves a stale status until the next commit. A late index move of an older commit can never
overwrite a newer one, because the move carries the writer's fence and the index slot remembers the
highest fence it applied (the ``fences`` hash). A failing index move after a successful commit is
logged, not raised: the record is committed, and raising would make the engine retry work that is
already done.

Connections, TLS and ACL: :meth:`RedisMemory.from_url` accepts everything redis-py's ``from_url``
does: ``redis://user:password@host:6379/0`` (ACL user and password, percent-encoded),
``rediss://...`` for TLS (``?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem`` and the other
``ssl_*`` options as query arguments or keyword arguments), ``unix:///path/redis.sock``.

Failures: every Redis or socket error is raised as :class:`RedisUnavailableError` (Redis cannot serve
us now: connection, timeout, server loading, credentials or permissions refused, a cluster slot
down, read-only, out of memory — a :class:`~service.arvo.availability.DependencyUnavailableError`,
so the consumer waits for Redis without spending the record's retry budget) or
:class:`RedisMemoryError` (anything else: a bad command or reply), both subclasses of
:class:`service.arvo.memory.MemoryStoreError`, so the engine maps them to a ``TransactionViolation``.
The clients made by :meth:`RedisMemory.from_url` therefore do not retry on timeouts (a timed-out
commit may have been applied; the caller's retry plus event-id dedupe handles it) and retry a
``ConnectionError`` once immediately, which re-opens a pooled connection that died with a Redis restart.

Replica acknowledgements (``wait_replicas``, ``ARVO_REDIS_WAIT_REPLICAS``; standalone only): each
:meth:`RedisMemory.commit_and_release` sends ``WAIT <n> <timeout>`` right behind the commit script on
the same connection (one round trip; on the lean client it holds up the requests pipelined behind it
for the replication round trip). Fewer acknowledgements raise :class:`RedisReplicationError` (an
outage: the record waits, nothing is published), and the memory remembers that its writes are
unconfirmed: the next :meth:`RedisMemory.lease_and_read` or :meth:`RedisMemory.ping` first writes
``<prefix>:replication-check`` (a timestamp, 60 s TTL) with ``WAIT`` behind it, and fails the same way
until the replicas acknowledge it — so no step acts on, or replays, a record its replicas may not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, cast

import orjson
import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.arvo.availability import DependencyUnavailableError
from service.arvo.memory import (
    FINISHED_STATUSES,
    InstanceStatus,
    InstanceSummary,
    Lease,
    LeaseGrant,
    LeaseLostError,
    MemoryStoreError,
    StateReadError,
    instance_retention_ms,
    split_instance_key,
)
from service.runtime.resp_client import LuaScript, PipelinedRedis, RespReplyError
from service.runtime.resp_cluster import ClusterPipelinedRedis

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_SOCKET_TIMEOUT_S",
    "DEFAULT_WAIT_TIMEOUT_MS",
    "PRUNE_BATCH",
    "InstanceKeys",
    "RedisMemory",
    "RedisMemoryError",
    "RedisReplicationError",
    "RedisUnavailableError",
    "redis_failure",
]


_TOKEN_PREFIX = secrets.token_hex(12)
_token_counter = itertools.count()


def _reseed_lease_tokens() -> None:
    # A forked child must not share its parent's tokens: the lease script takes a request carrying
    # the holder's token for a retry of the holder's own request.
    global _TOKEN_PREFIX, _token_counter  # noqa: PLW0603 - per-process state
    _TOKEN_PREFIX = secrets.token_hex(12)
    _token_counter = itertools.count()


os.register_at_fork(after_in_child=_reseed_lease_tokens)


def _new_lease_token() -> str:
    """A lease token no other lease request anywhere uses: 96 random bits per process, then a counter.

    As unique as ``secrets.token_hex(16)`` per request, at a fraction of the cost (one per record).
    """
    return f"{_TOKEN_PREFIX}{next(_token_counter):x}"


_log = structlog.get_logger(__name__)

DEFAULT_SOCKET_TIMEOUT_S: Final = 2.0
"""Read/write timeout of clients made by :meth:`RedisMemory.from_url` (every call is one short script)."""

DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
"""Connect timeout of clients made by :meth:`RedisMemory.from_url`."""

DEFAULT_WAIT_TIMEOUT_MS: Final = 500
"""How long a commit waits for its replica acknowledgements by default (``ARVO_REDIS_WAIT_TIMEOUT_MS``)."""

_REPLICATION_CHECK_TTL_MS: Final = 60_000
"""TTL of the ``<prefix>:replication-check`` key written by the replication check."""

_STATUSES: Final = tuple(InstanceStatus)
"""Fixed order of the status index keys handed to the scripts (position 1.. :data:`_STATUS_COUNT`;
new statuses are appended, so the positions of the older ones never change)."""

_STATUS_COUNT: Final = len(_STATUSES)
"""How many status index keys every index-moving script takes (one per status, in ``_STATUSES`` order)."""

_SET_STATUS_ATTEMPTS: Final = 5
"""Compare-and-set attempts of :meth:`RedisMemory.set_status` when the record changes under it."""

# --------------------------------------------------------------------------------------------------
# Lua scripts. Every key a script touches is passed in KEYS (required by Redis Cluster and by ACL key
# patterns). JSON is never decoded in Lua: cjson would rewrite numbers and turn [] into {}.

_FINISHED_POSITIONS: Final = tuple(
    position for position, status in enumerate(_STATUSES, start=1) if status in FINISHED_STATUSES
)
"""Positions (1-based, in :data:`_STATUSES` order) of the status indexes that retention prunes."""

PRUNE_BATCH: Final = 100
"""Most entries one script prunes from one status index: bounds the cost of any single call (a
backlog, e.g. after enabling retention on an old deployment, drains over the following commits)."""

_MOVE_INDEX_LUA: Final = f"""
local function move_index(first, status_pos, member, score)
  for i = 0, {_STATUS_COUNT - 1} do
    if i + 1 == status_pos then
      redis.call('ZADD', KEYS[first + i], score, member)
    else
      redis.call('ZREM', KEYS[first + i], member)
    end
  end
end

-- Retention: drop the entries of the finished-status indexes scored (updated) before `before` (their
-- instances' keys have expired), at most {PRUNE_BATCH} per index; with `fences` (cluster mode) also
-- their entries of the index slot's fences hash.
local function prune_finished(first, before, fences)
  for _, pos in ipairs({{{", ".join(str(pos) for pos in _FINISHED_POSITIONS)}}}) do
    local key = KEYS[first + pos - 1]
    local old = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. before, 'LIMIT', 0, {PRUNE_BATCH})
    if #old > 0 then
      redis.call('ZREM', key, unpack(old))
      if fences then
        redis.call('HDEL', fences, unpack(old))
      end
    end
  end
end

-- Retention of the instance's own keys: a finished instance's expire together (one PEXPIREAT each,
-- at the same instant: Redis 7.0 reads its clock anew for each relative PEXPIRE, so three of them
-- could land a millisecond apart); a live one's never expire (`rewritten`: state and wfence were
-- just SET, which already removed their TTL).
local function retain(expire_ms, state, fence, wfence, rewritten)
  if expire_ms ~= '0' then
    local now = redis.call('TIME')
    local at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(expire_ms)
    redis.call('PEXPIREAT', state, at)
    redis.call('PEXPIREAT', fence, at)
    redis.call('PEXPIREAT', wfence, at)
  else
    redis.call('PERSIST', fence)
    if not rewritten then
      redis.call('PERSIST', state)
      redis.call('PERSIST', wfence)
    end
  end
end
"""

_LEASE_AND_READ_LUA: Final = """
-- KEYS: lock, fence, state   ARGV: token, ttl_ms [, orphan fence ttl_ms ('0' or absent = none)]
-- -> {0, holder pttl} when held by someone else, {1, fence, state or nil} when granted
local holder_ttl = redis.call('PTTL', KEYS[1])
if holder_ttl ~= -2 then
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    -- Our own token (random per call): this request was retried after its connection died, and
    -- its first execution took the lease. Grant it again instead of blocking on ourselves.
    return {1, tonumber(redis.call('GET', KEYS[2])), redis.call('GET', KEYS[3])}
  end
  return {0, holder_ttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local fence = redis.call('INCR', KEYS[2])  -- keeps the fence's TTL, if any (a finished instance's)
local state = redis.call('GET', KEYS[3])
if not state and ARGV[3] and ARGV[3] ~= '0' then
  -- No record (new, or expired: a late event): the fence INCR just made must not stay forever.
  -- A commit under this lease persists it again (or restores it, should it have expired meanwhile).
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {1, fence, state}
"""

_COMMIT_AND_RELEASE_LUA: Final = (
    _MOVE_INDEX_LUA
    + f"""
-- KEYS: lock, wfence, state, fence [, index x{_STATUS_COUNT} (status order), orchestrators]
--       (index keys and orchestrators: standalone only)
-- ARGV: token, fence, record, status_pos, score_ms, execution_id, orchestrator,
--       expire_ms ('0' = persist: live, or no retention), prune_before ('' = no pruning)
-- -> 1 written and released, 0 lease not held (expired / taken over), -1 fenced out by a newer writer
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[2]) then
  return -1
end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[2]) then
  -- The instance's keys expired while this lease was held: restore the fence, or the next lease
  -- would count from 1 again, below the fence just written, and every later commit be fenced out.
  redis.call('SET', KEYS[4], ARGV[2])
end
retain(ARGV[8], KEYS[3], KEYS[4], KEYS[2], true)
if #KEYS > 4 then
  move_index(5, tonumber(ARGV[4]), ARGV[6], ARGV[5])
  redis.call('SADD', KEYS[{5 + _STATUS_COUNT}], ARGV[7])
  if ARGV[9] ~= '' then
    prune_finished(5, ARGV[9], nil)
  end
end
return 1
"""
)

_RELEASE_LUA: Final = """
-- KEYS: lock, wfence   ARGV: token, fence   -> 1 released, 0 not held by this lease
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""

_RENEW_LUA: Final = """
-- KEYS: lock, wfence   ARGV: token, fence, ttl_ms   -> 1 extended, 0 not held by this lease
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[2]) then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_SET_STATUS_LUA: Final = (
    _MOVE_INDEX_LUA
    + f"""
-- KEYS: state, fence, wfence [, index x{_STATUS_COUNT} (status order), orchestrators]
--       (index keys and orchestrators: standalone only)
-- ARGV: mode ('keep' | 'absent' | 'replace'), expected record, new record,
--       status_pos, score_ms, execution_id, orchestrator,
--       expire_ms ('0' = persist: live, or no retention), prune_before ('' = no pruning)
-- -> 1 applied, 0 the record changed since it was read (compare-and-set failed; caller re-reads)
if ARGV[1] ~= 'keep' then
  local current = redis.call('GET', KEYS[1])
  if ARGV[1] == 'absent' then
    if current then return 0 end
  else
    if current ~= ARGV[2] then return 0 end
    redis.call('SET', KEYS[1], ARGV[3])
  end
end
retain(ARGV[8], KEYS[1], KEYS[2], KEYS[3], false)
if #KEYS > 3 then
  move_index(4, tonumber(ARGV[4]), ARGV[6], ARGV[5])
  redis.call('SADD', KEYS[{4 + _STATUS_COUNT}], ARGV[7])
  if ARGV[9] ~= '' then
    prune_finished(4, ARGV[9], nil)
  end
end
return 1
"""
)

_CLUSTER_INDEX_MOVE_LUA: Final = (
    _MOVE_INDEX_LUA
    + f"""
-- Cluster mode only, runs on the orchestrator's index slot after the instance-slot script.
-- KEYS: index x{_STATUS_COUNT} (status order), fences
-- ARGV: status_pos, score_ms, execution_id, fence ('' = operator move: unconditional),
--       prune_before ('' = no pruning)
-- -> 1 applied, 0 skipped because a newer fence already moved this instance
local fences = KEYS[{_STATUS_COUNT + 1}]
if ARGV[5] ~= nil and ARGV[5] ~= '' then
  prune_finished(1, ARGV[5], fences)
end
if ARGV[4] ~= '' then
  local applied = tonumber(redis.call('HGET', fences, ARGV[3]) or '0')
  if applied > tonumber(ARGV[4]) then
    return 0
  end
  redis.call('HSET', fences, ARGV[3], ARGV[4])
end
move_index(1, tonumber(ARGV[1]), ARGV[3], ARGV[2])
return 1
"""
)


class RedisMemoryError(MemoryStoreError):
    """A Redis command of :class:`RedisMemory` failed (authentication, permissions, server error...).

    Attributes:
        operation: The :class:`RedisMemory` method that failed, e.g. ``"commit_and_release"``.
        key: The instance key concerned, or ``None`` for listing and ping.

    """

    def __init__(self, message: str, *, operation: str, key: str | None) -> None:
        super().__init__(message)
        self.operation = operation
        self.key = key


class RedisUnavailableError(RedisMemoryError, DependencyUnavailableError):
    """Redis cannot serve us now: unreachable, timed out, refusing this client, or not taking writes.

    Connection refused or lost, timeout, server still loading, authentication or permission refused
    (``WRONGPASS``, ``NOAUTH``, ``NOPERM``), a Redis Cluster slot without a master (``CLUSTERDOWN``,
    ``MASTERDOWN``, ``TRYAGAIN``), a read-only replica, out of memory (``OOM``). Never the event's
    fault: the consumer waits for Redis instead of spending the record's retry budget.
    """

    dependency = "redis"


class RedisReplicationError(RedisUnavailableError):
    """Fewer replicas than ``wait_replicas`` acknowledged a commit (or the writes since) in time.

    The commit is on the master, but a failover now could lose it: an outage like any other (the
    record waits, its emissions are not published), and the memory confirms the replication before
    it serves the next lease or answers a ping (see :class:`RedisMemory`, ``wait_replicas``).
    """


_UNAVAILABLE_REPLY_PREFIXES: Final = (
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "BUSY ",
    "CLUSTERDOWN",
    "READONLY",
    "OOM",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "NOREPLICAS",  # min-replicas-to-write not met: the replicas are behind or gone
)
"""Error replies that mean Redis cannot serve this client now (as opposed to a bad command)."""

_UNAVAILABLE_ERRORS: Final = (
    RedisConnectionError,  # includes BusyLoadingError
    RedisTimeoutError,
    OSError,
    AuthenticationError,
    AuthorizationError,  # includes NoPermissionError
    ClusterDownError,  # includes MasterDownError
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterException,  # topology: slots not covered, no node reachable, redirects exhausted
    ReadOnlyError,
    OutOfMemoryError,
)


def redis_failure(exc: BaseException, operation: str, key: str | None) -> RedisMemoryError:
    """The :class:`RedisMemoryError` for a failed Redis call (redis-py's or the lean client's).

    :class:`RedisUnavailableError` when Redis cannot serve us now (see its docstring), else
    :class:`RedisMemoryError` (a bad command or reply: a bug, not an outage).
    """
    unavailable = isinstance(exc, _UNAVAILABLE_ERRORS) or (
        isinstance(exc, (RespReplyError, RedisError)) and str(exc).startswith(_UNAVAILABLE_REPLY_PREFIXES)
    )
    if unavailable:
        return RedisUnavailableError(
            f"redis {operation} of {key!r} failed, Redis unavailable: {type(exc).__name__}: {exc}",
            operation=operation,
            key=key,
        )
    return RedisMemoryError(
        f"redis {operation} of {key!r} failed: {type(exc).__name__}: {exc}", operation=operation, key=key
    )


@dataclass(frozen=True, slots=True)
class InstanceKeys:
    """The Redis keys of one orchestration instance (all in one cluster slot).

    Attributes:
        state: The record (JSON bytes).
        lock: The lease token, expiring with the lease.
        fence: The fencing counter.
        wfence: The fence of the lease that wrote the current record.

    """

    state: str
    lock: str
    fence: str
    wfence: str


def _tag(value: str) -> str:
    """Escape ``value`` for use inside a ``{...}`` hash tag (no braces, reversible)."""
    return value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _hot_failure(exc: OSError | RespReplyError, operation: str, key: str | None) -> RedisMemoryError:
    """The :class:`RedisMemoryError` for a failure of the lean client (see :func:`redis_failure`)."""
    return redis_failure(exc, operation, key)


def _check_wait(wait_replicas: int, wait_timeout_ms: int, *, cluster_mode: bool) -> None:
    if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or wait_replicas < 0:
        raise ValueError(f"wait_replicas must be a non-negative integer, got {wait_replicas!r}")
    if isinstance(wait_timeout_ms, bool) or not isinstance(wait_timeout_ms, int) or wait_timeout_ms <= 0:
        raise ValueError(
            f"wait_timeout_ms must be a positive integer of milliseconds (WAIT with 0 blocks forever),"
            f" got {wait_timeout_ms!r}"
        )
    if wait_replicas and cluster_mode:
        raise ValueError(
            "wait_replicas needs a standalone Redis (with replicas): in cluster mode the WAIT cannot"
            " follow each commit on its connection; use min-replicas-to-write on the cluster's masters"
        )


def _retrieve_failure(future: asyncio.Future[None]) -> None:
    """Mark a shared check's failure as retrieved (its callers may all have been cancelled)."""
    if not future.cancelled():
        future.exception()


def _check_ttl(ttl_ms: int) -> None:
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be a positive integer of milliseconds, got {ttl_ms!r}")


class RedisMemory:
    """:class:`~service.arvo.memory.Memory` on Redis (standalone server or Redis Cluster).

    Semantics are those of :class:`~service.arvo.memory.InMemoryMemory` (the shared contract tests in
    ``tests/unit/test_memory_contract.py`` run against both); the module docstring documents the key
    layout, round trips, cluster mode and error mapping.

    Args:
        client: A ``redis.asyncio.Redis`` (or ``redis.asyncio.RedisCluster`` with ``cluster_mode``).
            Use raw bytes responses (the default ``decode_responses=False``); ``True`` also works.
            :meth:`close` closes this client.
        key_prefix: First component of every key; lets several deployments share one Redis.
            Must be non-empty and free of ``{``, ``}`` and whitespace.
        cluster_mode: Keep every script within one hash slot (index update as a second command).
        instance_retention_s: How long a finished (done, failed or cancelled) instance is kept: its
            keys get this TTL in the commit (or ``set_status``) that finishes it, and its status-index entry
            is pruned once it is older (see the module docstring). ``0`` (the default): kept
            forever.
        hot_client: A :class:`~service.runtime.resp_client.PipelinedRedis` to the same server for
            the per-event calls (:meth:`lease_and_read`, :meth:`commit_and_release`, :meth:`release`,
            :meth:`renew`); :meth:`from_url` makes one. In cluster mode a
            :class:`~service.runtime.resp_cluster.ClusterPipelinedRedis` (it also runs the index move),
            the other kind is ignored. ``None``: redis-py for everything. :meth:`close` closes it.
        wait_replicas: After each :meth:`commit_and_release`, wait until this many replicas
            acknowledged it (``WAIT``, sent behind the commit script in the same round trip); ``0``
            (the default) does not wait. Fewer acknowledgements within ``wait_timeout_ms`` raise
            :class:`RedisReplicationError` (an outage: the consumer waits and retries the record,
            whose redelivery replays the stored commit), and until a later check (a write and
            ``WAIT`` behind it) sees the replicas caught up, :meth:`lease_and_read` and :meth:`ping`
            run that check first and fail the same way. Standalone Redis only.
        wait_timeout_ms: How long each ``WAIT`` blocks at most (positive: ``WAIT`` with 0 would
            block forever). It holds up the requests pipelined behind it on the same connection.

    Raises:
        ValueError: an invalid ``key_prefix``, ``wait_replicas`` or ``wait_timeout_ms``, or
            ``wait_replicas`` in cluster mode.

    """

    def __init__(
        self,
        *,
        client: Redis | RedisCluster,
        key_prefix: str = "arvo",
        cluster_mode: bool = False,
        instance_retention_s: float = 0,
        hot_client: PipelinedRedis | ClusterPipelinedRedis | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
    ) -> None:
        if not key_prefix or any(ch in key_prefix for ch in "{} \t\r\n"):
            raise ValueError(
                f"key_prefix must be non-empty without braces or whitespace, got {key_prefix[:80]!r}"
            )
        _check_wait(wait_replicas, wait_timeout_ms, cluster_mode=cluster_mode)
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._unconfirmed = False
        """Whether writes may be on the master without ``wait_replicas`` replicas having them."""
        self._replication_check: asyncio.Future[None] | None = None
        self._retention_ms = instance_retention_ms(instance_retention_s)
        self._client = client
        self._prefix = key_prefix
        self._cluster_mode = cluster_mode
        self._lease_script: AsyncScript = client.register_script(_LEASE_AND_READ_LUA)
        self._commit_script: AsyncScript = client.register_script(_COMMIT_AND_RELEASE_LUA)
        self._release_script: AsyncScript = client.register_script(_RELEASE_LUA)
        self._renew_script: AsyncScript = client.register_script(_RENEW_LUA)
        self._set_status_script: AsyncScript = client.register_script(_SET_STATUS_LUA)
        self._index_move_script: AsyncScript = client.register_script(_CLUSTER_INDEX_MOVE_LUA)
        self._hot = hot_client if isinstance(hot_client, ClusterPipelinedRedis) == cluster_mode else None
        self.last_ping_error: str | None = None
        """Why the last :meth:`ping` failed (``None`` after a successful one)."""
        self._hot_lease = LuaScript(_LEASE_AND_READ_LUA, name="lease_and_read")
        self._hot_commit = LuaScript(_COMMIT_AND_RELEASE_LUA, name="commit_and_release")
        self._hot_release = LuaScript(_RELEASE_LUA, name="release")
        self._hot_renew = LuaScript(_RENEW_LUA, name="renew")
        self._hot_index_move = LuaScript(_CLUSTER_INDEX_MOVE_LUA, name="index_move")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "arvo",
        cluster_mode: bool = False,
        instance_retention_s: float = 0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
        **kwargs: Any,
    ) -> RedisMemory:
        """Connect to ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``; ACL user in the URL).

        Args:
            url: Redis URL, e.g. ``rediss://worker:s3cret@redis.example:6380/0?ssl_ca_certs=/ca.pem``.
            key_prefix: See :class:`RedisMemory`.
            cluster_mode: Build a ``RedisCluster`` client and keep scripts within one slot.
            instance_retention_s: See :class:`RedisMemory` (``0``: finished instances kept forever).
            wait_replicas: See :class:`RedisMemory` (``0``: commits do not wait for replicas).
            wait_timeout_ms: See :class:`RedisMemory`; added to the default socket timeout, so a
                ``WAIT`` that runs its full time never times out the connection.
            **kwargs: Passed to ``Redis.from_url`` / ``RedisCluster.from_url`` (query arguments in
                ``url`` win over them); they override the defaults here (2 s socket and connect
                timeouts, no retry on timeout, one immediate
                reconnect on a dead connection).

        Returns:
            A memory owning the new client (:meth:`close` closes it).

        """
        _check_wait(wait_replicas, wait_timeout_ms, cluster_mode=cluster_mode)
        options: dict[str, Any] = {
            "socket_timeout": DEFAULT_SOCKET_TIMEOUT_S + (wait_timeout_ms / 1000 if wait_replicas else 0),
            "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT_S,
        }
        client: Redis | RedisCluster
        hot: PipelinedRedis | ClusterPipelinedRedis | None
        if cluster_mode:
            # The cluster client keeps its own retry policy: it is what follows MOVED/ASK redirects
            # and re-reads the topology after a failover. The lean client routes by its slot map.
            client = RedisCluster.from_url(url, **(options | kwargs))
            hot = ClusterPipelinedRedis.from_redis_py(client)
        else:
            options["retry"] = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
            client = Redis.from_url(url, **(options | kwargs))
            hot = PipelinedRedis.from_redis_py(client)
        return cls(
            client=client,
            key_prefix=key_prefix,
            cluster_mode=cluster_mode,
            instance_retention_s=instance_retention_s,
            hot_client=hot,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    @property
    def client(self) -> Redis | RedisCluster:
        """The underlying redis-py client."""
        return self._client

    @property
    def hot_client(self) -> PipelinedRedis | ClusterPipelinedRedis | None:
        """The lean client of the per-event calls, or ``None`` when redis-py serves them too."""
        return self._hot

    @property
    def script_operations(self) -> dict[str, str]:
        """SHA1 of each Lua script → the method that runs it (names the ``EVALSHA`` spans in traces)."""
        return {
            self._lease_script.sha: "lease_and_read",
            self._commit_script.sha: "commit_and_release",
            self._release_script.sha: "release",
            self._renew_script.sha: "renew",
            self._set_status_script.sha: "set_status",
            self._index_move_script.sha: "index_move",
        }

    @property
    def key_prefix(self) -> str:
        """The prefix of every key of this memory."""
        return self._prefix

    @property
    def instance_retention_s(self) -> float:
        """How long finished instances are kept (``0``: forever)."""
        return self._retention_ms / 1000

    @property
    def cluster_mode(self) -> bool:
        """Whether scripts are kept within one hash slot (see the module docstring)."""
        return self._cluster_mode

    @property
    def wait_replicas(self) -> int:
        """Replica acknowledgements each commit waits for (``0``: none; see :class:`RedisMemory`)."""
        return self._wait_replicas

    @property
    def wait_timeout_ms(self) -> int:
        """How long each ``WAIT`` blocks at most."""
        return self._wait_timeout_ms

    def instance_keys(self, key: str) -> InstanceKeys:
        """Return the Redis keys of instance ``key`` (for tooling and tests).

        Raises:
            ValueError: ``key`` is not ``"<orchestrator>:<execution id>"``.

        """
        split_instance_key(key)
        base = f"{self._prefix}:{{{_tag(key)}}}"
        return InstanceKeys(
            state=f"{base}:state", lock=f"{base}:lock", fence=f"{base}:fence", wfence=f"{base}:wfence"
        )

    def index_key(self, orchestrator: str, status: InstanceStatus) -> str:
        """Return the sorted-set key listing ``orchestrator``'s instances in ``status``."""
        return f"{self._prefix}:index:{{{_tag(orchestrator)}}}:{status.value}"

    @property
    def orchestrators_key(self) -> str:
        """The set of orchestrator names that have indexed instances."""
        return f"{self._prefix}:orchestrators"

    def _index_fences_key(self, orchestrator: str) -> str:
        return f"{self._prefix}:index:{{{_tag(orchestrator)}}}:fences"

    def _index_keys(self, orchestrator: str) -> list[str]:
        return [self.index_key(orchestrator, status) for status in _STATUSES]

    @contextlib.asynccontextmanager
    async def _redis_errors(self, operation: str, key: str | None) -> AsyncIterator[None]:
        """Re-raise Redis and socket failures as :class:`RedisMemoryError` subclasses."""
        try:
            yield
        except (RedisError, RedisClusterException, OSError) as exc:
            raise redis_failure(exc, operation, key) from exc

    # ------------------------------------------------------------------------------------------
    # Memory port

    async def lease_and_read(self, key: str, *, ttl_ms: int) -> LeaseGrant:
        """Take the lease of ``key`` and read its record in one round trip.

        A denied lease reports the holder's remaining TTL (``None`` if the lock has no expiry). If
        the stored record cannot be decoded, the fresh lease is released again (best effort) and
        :class:`StateReadError` is raised, so the instance is not blocked for a whole TTL.

        Raises:
            ValueError: ``key`` is not an instance key or ``ttl_ms`` is not positive.
            StateReadError: the stored record is not a JSON object.
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable).

        """
        keys = self.instance_keys(key)
        _check_ttl(ttl_ms)
        if self._unconfirmed:
            # The record read now may be a commit its replicas never acknowledged: never act on it.
            await self._confirm_replication("lease_and_read", key)
        token = _new_lease_token()
        # With retention, the fence of an instance without a record expires too (see the script).
        orphan_ttl = max(ttl_ms, self._retention_ms) if self._retention_ms else 0
        hot = self._hot
        if hot is not None:
            try:
                reply = await hot.evalsha(
                    self._hot_lease, [keys.lock, keys.fence, keys.state], [token, ttl_ms, orphan_ttl]
                )
            except (OSError, RespReplyError) as exc:
                raise _hot_failure(exc, "lease_and_read", key) from exc
        else:
            async with self._redis_errors("lease_and_read", key):
                reply = await self._lease_script(
                    keys=[keys.lock, keys.fence, keys.state], args=[token, ttl_ms, orphan_ttl]
                )
        if int(reply[0]) == 0:
            holder_ttl = int(reply[1])
            return LeaseGrant(
                acquired=False, lease=None, record=None, holder_ttl_ms=holder_ttl if holder_ttl >= 0 else None
            )
        lease = Lease(key=key, token=token, fence=int(reply[1]))
        raw = reply[2] if len(reply) > 2 else None
        if raw is None:
            return LeaseGrant(acquired=True, lease=lease, record=None)
        try:
            record = self._decode_record(key, keys.state, raw)
        except StateReadError:
            with contextlib.suppress(MemoryStoreError):
                await self.release(lease)
            raise
        return LeaseGrant(acquired=True, lease=lease, record=record)

    async def commit_and_release(
        self, lease: Lease, record: Mapping[str, Any], *, status: InstanceStatus
    ) -> None:
        """Write ``record`` and release ``lease`` in one round trip, if the lease still holds.

        In ``cluster_mode`` the status index is updated by a second command (see module docstring).

        Raises:
            LeaseLostError: the lease expired, was taken over or a newer fence wrote; nothing written.
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable); the
                commit may or may not have been applied.

        """
        keys = self.instance_keys(lease.key)
        orchestrator, execution_id = split_instance_key(lease.key)
        payload = orjson.dumps(record if isinstance(record, dict) else dict(record))
        score = _now_ms()
        status = InstanceStatus(status)
        status_pos = _STATUSES.index(status) + 1
        script_keys = [keys.lock, keys.wfence, keys.state, keys.fence]
        if not self._cluster_mode:
            script_keys += [*self._index_keys(orchestrator), self.orchestrators_key]
        args: list[str | bytes | int | float] = [
            lease.token,
            lease.fence,
            payload,
            status_pos,
            score,
            execution_id,
            orchestrator,
            self._expire_ms(status),
            self._prune_before(score, status),
        ]
        hot = self._hot
        acks: int | None = None
        if self._wait_replicas:
            outcome, acks = await self._commit_and_wait(lease.key, script_keys, args)
        elif hot is not None:
            try:
                outcome = int(await hot.evalsha(self._hot_commit, script_keys, args))
            except (OSError, RespReplyError) as exc:
                raise _hot_failure(exc, "commit_and_release", lease.key) from exc
        else:
            async with self._redis_errors("commit_and_release", lease.key):
                outcome = int(await self._commit_script(keys=script_keys, args=args))
        if outcome == 0:
            raise LeaseLostError(
                f"lease on {lease.key!r} (fence {lease.fence}) expired or was taken over before the commit;"
                " nothing was written"
            )
        if outcome < 0:
            raise LeaseLostError(
                f"lease on {lease.key!r} (fence {lease.fence}) was fenced out by a newer writer;"
                " nothing was written"
            )
        if acks is not None and acks < self._wait_replicas:
            self._unconfirmed = True
            raise RedisReplicationError(
                f"redis commit_and_release of {lease.key!r}: written on the master, but only {acks} of"
                f" wait_replicas={self._wait_replicas} replicas acknowledged it within"
                f" {self._wait_timeout_ms} ms (ARVO_REDIS_WAIT_REPLICAS, ARVO_REDIS_WAIT_TIMEOUT_MS);"
                " Redis unavailable: the record waits and is replayed once the replicas caught up",
                operation="commit_and_release",
                key=lease.key,
            )
        if self._cluster_mode:
            await self._cluster_index_move(orchestrator, execution_id, status_pos, score, fence=lease.fence)

    async def release(self, lease: Lease) -> bool:
        """Release ``lease`` without writing (compare-and-delete on the token, one round trip).

        Raises:
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable).

        """
        keys = self.instance_keys(lease.key)
        hot = self._hot
        if hot is not None:
            try:
                released = await hot.evalsha(
                    self._hot_release, [keys.lock, keys.wfence], [lease.token, lease.fence]
                )
            except (OSError, RespReplyError) as exc:
                raise _hot_failure(exc, "release", lease.key) from exc
            return int(released) == 1
        async with self._redis_errors("release", lease.key):
            released = await self._release_script(
                keys=[keys.lock, keys.wfence], args=[lease.token, lease.fence]
            )
        return int(released) == 1

    async def renew(self, lease: Lease, *, ttl_ms: int) -> bool:
        """Extend ``lease`` to ``ttl_ms`` from now (compare-and-PEXPIRE, one round trip).

        Raises:
            ValueError: ``ttl_ms`` is not positive.
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable).

        """
        keys = self.instance_keys(lease.key)
        _check_ttl(ttl_ms)
        hot = self._hot
        if hot is not None:
            try:
                renewed = await hot.evalsha(
                    self._hot_renew, [keys.lock, keys.wfence], [lease.token, lease.fence, ttl_ms]
                )
            except (OSError, RespReplyError) as exc:
                raise _hot_failure(exc, "renew", lease.key) from exc
            return int(renewed) == 1
        async with self._redis_errors("renew", lease.key):
            renewed = await self._renew_script(
                keys=[keys.lock, keys.wfence], args=[lease.token, lease.fence, ttl_ms]
            )
        return int(renewed) == 1

    async def inspect(self, key: str) -> dict[str, Any] | None:
        """Read the record of ``key`` without a lease (one ``GET``).

        Raises:
            StateReadError: the stored record is not a JSON object.
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable).

        """
        keys = self.instance_keys(key)
        async with self._redis_errors("inspect", key):
            raw = await self._client.get(keys.state)
        if raw is None:
            return None
        return self._decode_record(key, keys.state, raw)

    async def set_status(self, key: str, status: InstanceStatus, *, reason: str | None = None) -> None:
        """Move ``key`` to ``status`` outside a lease; write ``reason`` into an existing record.

        The reason goes to ``"parkedReason"`` for :attr:`InstanceStatus.PARKED`, else to
        ``"statusReason"`` (as :class:`~service.arvo.memory.InMemoryMemory`). It is a read plus a
        compare-and-set script (retried if a commit lands in between); in standalone mode the script
        also moves the index atomically, in cluster mode the index move is a second command.

        Raises:
            ValueError: ``key`` is not an instance key.
            StateReadError: ``reason`` is given and the stored record is not a JSON object.
            RedisMemoryError: Redis failed, or the record kept changing during 5 attempts.

        """
        keys = self.instance_keys(key)
        orchestrator, execution_id = split_instance_key(key)
        status = InstanceStatus(status)
        status_pos = _STATUSES.index(status) + 1
        script_keys = [keys.state, keys.fence, keys.wfence]
        if not self._cluster_mode:
            script_keys += [*self._index_keys(orchestrator), self.orchestrators_key]
        score = _now_ms()
        expire_ms, prune_before = self._expire_ms(status), self._prune_before(score, status)
        for _attempt in range(_SET_STATUS_ATTEMPTS):
            mode, expected, updated = "keep", b"", b""
            if reason is not None:
                async with self._redis_errors("set_status", key):
                    current: bytes | str | None = await self._client.get(keys.state)
                if current is None:
                    mode = "absent"
                else:
                    record = self._decode_record(key, keys.state, current)
                    record["parkedReason" if status is InstanceStatus.PARKED else "statusReason"] = reason
                    expected = current.encode() if isinstance(current, str) else current
                    mode, updated = "replace", orjson.dumps(record)
            async with self._redis_errors("set_status", key):
                applied = await self._set_status_script(
                    keys=script_keys,
                    args=[
                        mode,
                        expected,
                        updated,
                        status_pos,
                        score,
                        execution_id,
                        orchestrator,
                        expire_ms,
                        prune_before,
                    ],
                )
            if int(applied) == 1:
                break
        else:
            raise RedisMemoryError(
                f"set_status of {key!r} to {status.value!r} gave up: the record changed during"
                f" {_SET_STATUS_ATTEMPTS} compare-and-set attempts",
                operation="set_status",
                key=key,
            )
        if self._cluster_mode:
            await self._cluster_index_move(orchestrator, execution_id, status_pos, score, fence=None)

    async def list_instances(
        self,
        *,
        orchestrator: str | None = None,
        status: InstanceStatus | None = None,
        limit: int = 1000,
    ) -> list[InstanceSummary]:
        """List instances, most recently updated first (one pipelined round trip, plus ``SMEMBERS``).

        Raises:
            ValueError: ``limit`` is negative.
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable).

        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit!r}")
        if limit == 0:
            return []
        statuses = _STATUSES if status is None else (InstanceStatus(status),)
        oldest_listed = _now_ms() - self._retention_ms
        async with self._redis_errors("list_instances", None):
            if orchestrator is None:
                names = sorted(_text(name) for name in await self._client.smembers(self.orchestrators_key))
            else:
                names = [orchestrator]
            queries = [(name, st) for name in names for st in statuses]
            if not queries:
                return []
            pipe: Any = (
                self._client.pipeline() if self._cluster_mode else self._client.pipeline(transaction=False)
            )
            for name, st in queries:
                if self._retention_ms and st in FINISHED_STATUSES:
                    # Entries past the retention belong to expired instances (pruned by later commits).
                    pipe.zrevrangebyscore(
                        self.index_key(name, st), "+inf", oldest_listed, start=0, num=limit, withscores=True
                    )
                else:
                    pipe.zrevrange(self.index_key(name, st), 0, limit - 1, withscores=True)
            replies: list[list[tuple[bytes | str, float]]] = await pipe.execute()
        newest: dict[str, InstanceSummary] = {}
        for (name, st), rows in zip(queries, replies, strict=True):
            for member, score in rows:
                execution_id = _text(member)
                row = InstanceSummary(
                    key=f"{name}:{execution_id}",
                    orchestrator=name,
                    execution_id=execution_id,
                    status=st,
                    updated_at_ms=int(score),
                )
                seen = newest.get(row.key)
                if seen is None or seen.updated_at_ms < row.updated_at_ms:
                    newest[row.key] = row
        return sorted(newest.values(), key=lambda row: row.updated_at_ms, reverse=True)[:limit]

    # ------------------------------------------------------------------------------------------
    # Lifecycle

    async def ping(self) -> bool:
        """Return whether Redis answers ``PING`` (``False`` on any failure; for readiness probes).

        ``PING`` also checks the credentials: a client Redis refuses is not ready either. Why the last
        ping failed is kept in :attr:`last_ping_error`.
        """
        try:
            answered = bool(await self._client.ping())
        except (RedisError, RedisClusterException, OSError) as exc:
            self.last_ping_error = f"{type(exc).__name__}: {exc}"
            return False
        if answered and self._unconfirmed:
            try:
                await self._confirm_replication("ping", None)
            except RedisMemoryError as exc:
                self.last_ping_error = str(exc)
                return False
        self.last_ping_error = None if answered else "PING was not answered with PONG"
        return answered

    async def close(self) -> None:
        """Close the client and its connection pool, and the lean client if any."""
        if self._hot is not None:
            await self._hot.close()
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------
    # Internals

    async def _commit_and_wait(
        self, key: str, script_keys: list[str], args: list[str | bytes | int | float]
    ) -> tuple[int, int]:
        """The commit script and ``WAIT`` behind it, one round trip: its outcome and the replicas' acks."""
        wait = ("WAIT", self._wait_replicas, self._wait_timeout_ms)
        try:
            hot = self._hot
            if hot is not None:
                try:
                    outcome, acks = await hot.evalsha_then(self._hot_commit, script_keys, args, wait)
                except (OSError, RespReplyError) as exc:
                    raise _hot_failure(exc, "commit_and_release", key) from exc
            else:
                async with self._redis_errors("commit_and_release", key):
                    pipe = cast("Redis", self._client).pipeline(transaction=False)  # standalone only
                    await self._commit_script(keys=script_keys, args=args, client=pipe)
                    pipe.execute_command(*wait)
                    outcome, acks = await pipe.execute()
        except RedisMemoryError:
            # Applied or not, the commit may be on the master without its replicas: confirm first.
            self._unconfirmed = True
            raise
        return int(outcome), int(acks)

    async def _confirm_replication(self, operation: str, key: str | None) -> None:
        """Return once ``wait_replicas`` replicas have every write so far; else raise (shared check).

        Raises:
            RedisReplicationError: still fewer acknowledgements than ``wait_replicas``.
            RedisMemoryError: Redis failed (:class:`RedisUnavailableError` when unreachable).

        """
        check = self._replication_check
        if check is None or check.done():
            check = self._replication_check = asyncio.ensure_future(self._check_replication(operation, key))
            check.add_done_callback(_retrieve_failure)
        await asyncio.shield(check)

    async def _check_replication(self, operation: str, key: str | None) -> None:
        # A write and WAIT behind it on one connection: replicas that acknowledge the write have every
        # write before it too (replication is in order), on any connection of any client.
        marker = f"{self._prefix}:replication-check"
        wait = ("WAIT", self._wait_replicas, self._wait_timeout_ms)
        hot = self._hot
        if hot is not None:
            try:
                _, acks = await hot.execute_all(
                    ("SET", marker, _now_ms(), "PX", _REPLICATION_CHECK_TTL_MS), wait
                )
            except (OSError, RespReplyError) as exc:
                raise _hot_failure(exc, operation, key) from exc
        else:
            async with self._redis_errors(operation, key):
                pipe = self._client.pipeline(transaction=False)
                pipe.set(marker, _now_ms(), px=_REPLICATION_CHECK_TTL_MS)
                pipe.execute_command(*wait)
                _, acks = await pipe.execute()
        if int(acks) < self._wait_replicas:
            raise RedisReplicationError(
                f"redis {operation} of {key!r}: an earlier commit is still acknowledged by only {acks}"
                f" of wait_replicas={self._wait_replicas} replicas (checked with WAIT, timeout"
                f" {self._wait_timeout_ms} ms); Redis unavailable until they catch up",
                operation=operation,
                key=key,
            )
        self._unconfirmed = False

    def _expire_ms(self, status: InstanceStatus) -> int:
        """TTL (ms) for the keys of an instance moving to ``status``; ``0``: no TTL (persist them)."""
        return self._retention_ms if status in FINISHED_STATUSES else 0

    def _prune_before(self, score: int, status: InstanceStatus) -> int | str:
        """Finished-index entries scored before this are pruned (``""``: none).

        Only a move to a finished status prunes: it is what adds entries to those indexes, so each
        addition removes up to :data:`PRUNE_BATCH` expired ones (a backlog drains), and the far more
        frequent commits of live instances pay nothing.
        """
        return score - self._retention_ms if self._retention_ms and status in FINISHED_STATUSES else ""

    async def _cluster_index_move(
        self, orchestrator: str, execution_id: str, status_pos: int, score: int, *, fence: int | None
    ) -> None:
        keys = [*self._index_keys(orchestrator), self._index_fences_key(orchestrator)]
        args: list[str | bytes | int | float] = [
            status_pos,
            score,
            execution_id,
            "" if fence is None else fence,
            self._prune_before(score, _STATUSES[status_pos - 1]),
        ]
        hot = self._hot
        try:
            if hot is not None:
                try:
                    await hot.evalsha(self._hot_index_move, keys, args)
                    await hot.execute("SADD", self.orchestrators_key, orchestrator)
                except (OSError, RespReplyError) as exc:
                    raise _hot_failure(exc, "index update", f"{orchestrator}:{execution_id}") from exc
            else:
                async with self._redis_errors("index update", f"{orchestrator}:{execution_id}"):
                    await self._index_move_script(keys=keys, args=args)
                    await self._client.sadd(self.orchestrators_key, orchestrator)
        except RedisMemoryError as exc:
            # The record is committed; the index is secondary and heals with the next commit.
            _log.warning(
                "redis_memory.index_update_failed",
                orchestrator=orchestrator,
                execution_id=execution_id,
                status=_STATUSES[status_pos - 1].value,
                error=str(exc),
            )

    @staticmethod
    def _decode_record(key: str, redis_key: str, raw: bytes | str) -> dict[str, Any]:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StateReadError(
                f"record of {key!r} (redis key {redis_key!r}) is not valid JSON: {exc}"
                f" (first bytes {bytes(raw[:40]) if isinstance(raw, bytes) else raw[:40]!r})"
            ) from exc
        if not isinstance(record, dict):
            raise StateReadError(
                f"record of {key!r} (redis key {redis_key!r}) is a JSON {type(record).__name__},"
                " expected a JSON object"
            )
        return record
