"""Service configuration: environment first (``ARVO_*``), with ``.env`` support.

Every field maps to the environment variable ``ARVO_<FIELD NAME IN UPPER CASE>``, e.g.
``lease_ttl_ms`` is ``ARVO_LEASE_TTL_MS``. :func:`load_settings` turns validation failures into a
:class:`SettingsError` whose message is one line naming the variable, the (truncated, or masked when
secret) value and the rule, so a misconfigured deployment fails with a readable log line.

The ``*_kwargs()`` builders translate the settings into keyword arguments of the aiokafka clients,
including TLS (:meth:`ServiceSettings.ssl_context`) and SASL.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ENV_PREFIX",
    "EnvFiles",
    "ServiceSettings",
    "SettingsError",
    "UnknownVariable",
    "env_var_name",
    "known_variables",
    "load_settings",
    "unknown_variables",
]

ENV_PREFIX: Final = "ARVO_"
"""Prefix of every environment variable read by :class:`ServiceSettings`."""

_SECRET_FIELDS: Final = frozenset({"kafka_sasl_password", "kafka_ssl_key_password", "redis_url"})
_TOPIC_CHARS = re.compile(r"^[a-zA-Z0-9._-]*$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
_MAX_ERROR_VALUE_CHARS: Final = 60
_NOT_SETTINGS_PREFIX: Final = "ARVO_TEST_"
"""Variables of the test suite (``ARVO_TEST_KAFKA_BOOTSTRAP``, ...): not settings, never reported."""

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Acks = Literal["all", "1", "0"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def env_var_name(field: str) -> str:
    """Return the environment variable that sets ``field`` (``lease_ttl_ms`` -> ``ARVO_LEASE_TTL_MS``)."""
    return f"{ENV_PREFIX}{field.upper()}"


class SettingsError(ValueError):
    """The configuration is invalid; ``str()`` is one line per problem, naming the variable."""


class ServiceSettings(BaseSettings):
    """All knobs of the service. Read from ``ARVO_*`` environment variables and an optional ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        frozen=True,
    )

    # --- Kafka connection -------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list."""
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    """SASL mechanism for the ``SASL_*`` protocols."""
    kafka_sasl_username: str | None = None
    """SASL user (required with ``SASL_*``)."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password (required with ``SASL_*``)."""
    kafka_ssl_cafile: Path | None = None
    """CA bundle to verify the brokers; the system store when unset."""
    kafka_ssl_certfile: Path | None = None
    """Client certificate (mutual TLS)."""
    kafka_ssl_keyfile: Path | None = None
    """Client private key (mutual TLS)."""
    kafka_ssl_key_password: SecretStr | None = None
    """Password of the client private key, if encrypted."""
    kafka_ssl_check_hostname: bool = True
    """Verify the broker host name against its certificate."""
    kafka_client_id: str = "arvo-service"
    """Client id sent to the brokers (shows up in broker logs and quotas)."""
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)
    """Client request timeout."""

    # --- Consumer ---------------------------------------------------------------------------------
    consumer_group: str = Field(default="arvo-service", min_length=1)
    """Consumer group id; every replica of one service shares it."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group without committed offsets starts (``earliest`` loses nothing)."""
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    """How long the broker holds a fetch waiting for data (latency of every hop on idle topics)."""
    max_poll_records: int = Field(default=500, ge=1)
    """Upper bound of records taken per poll (bounds the overshoot of a partition buffer)."""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    """Group session timeout (failure detection)."""
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    """Heartbeat interval; must be below the session timeout."""
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    """Maximum time between polls before the member is considered stuck (the poll loop never blocks)."""
    partition_buffer_size: int = Field(default=256, ge=1)
    """Records buffered per partition; the partition is paused when full and resumed below half."""
    partition_concurrency: int = Field(default=1, ge=1, le=1_024)
    """Records of one partition processed at once, each of another key (orchestration subject):
    records of one key always run one after the other, in offset order, and offsets are committed
    only up to the first record not done. ``1`` processes each partition strictly in order."""
    admission_backlog: int = Field(default=0, ge=0, le=1_000_000)
    """Admission under overload (opt-in): per partition of an orchestrator or resumable, how many
    new root workflow inits may wait while records of workflows already started (replies, timer and
    cancel events, child inits) run first — records of one subject stay in order, the commit stops
    at the first waiting init (so a graceful stop redelivers what was done above it). At this many
    the partition is paused (resumed at half). ``0`` (the default) processes each partition
    strictly in offset order."""
    max_inflight_publishes_per_partition: int = Field(default=32, ge=1)
    """Records per partition whose emissions may await the broker's acks while later records run
    (records of one orchestration instance still wait for each other); ``1`` waits for every ack."""
    commit_interval_ms: int = Field(default=200, ge=1)
    """How often done offsets are committed (also on revoke and shutdown)."""
    drain_timeout_s: float = Field(default=10.0, gt=0)
    """How long a revoke or shutdown waits for in-flight records before abandoning them."""

    # --- Topics -----------------------------------------------------------------------------------
    topic_prefix: str = ""
    """Prepended to every topic name (``[a-zA-Z0-9._-]*``), e.g. ``staging.``."""
    topic_router: str | None = None
    """Optional ``module:attribute`` of a ``(to, domain, prefix) -> topic`` function replacing the default."""
    create_topics: bool = True
    """Create missing topics at start-up with the settings below."""
    topic_partitions: int = Field(default=6, ge=1)
    """Partition count of topics created at start-up."""
    topic_replication_factor: int = Field(default=1, ge=1)
    """Replication factor of topics created at start-up."""
    dead_letter_topic: str | None = None
    """Dead-letter topic; ``<topic_prefix>arvo.dlq`` when unset."""

    # --- Producer ---------------------------------------------------------------------------------
    producer_idempotence: bool = True
    """Idempotent producer (needs ``acks=all``); switch off only for brokers without support."""
    producer_acks: Acks = "all"
    """Acknowledgements awaited per record: ``all``, ``1`` or ``0``."""
    producer_linger_ms: int = Field(default=0, ge=0)
    """Batching delay of the producer. It adds to every hop of one orchestration (an instance's next
    event waits for the acks of its previous emissions); other instances' records keep flowing and
    share batches while a request is in flight. Raise it only for many partitions per member."""
    producer_compression: Literal["none", "gzip"] = "none"
    """Compression codec of produced batches."""

    # --- Redis and execution ----------------------------------------------------------------------
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; ``user:password@`` for ACLs."""
    redis_key_prefix: str = Field(default="arvo", min_length=1)
    """First segment of every Redis key."""
    redis_cluster: bool = False
    """Connect with the Redis Cluster client."""
    redis_wait_replicas: int = Field(default=0, ge=0, le=100)
    """After each state commit, wait until this many Redis replicas acknowledged it (``WAIT``, sent
    behind the commit in the same round trip); fewer within ``ARVO_REDIS_WAIT_TIMEOUT_MS`` is a Redis
    outage: the record waits (nothing published, no retry budget spent) and is replayed once the
    replicas caught up. ``0`` does not wait. Standalone Redis only (not with ``ARVO_REDIS_CLUSTER``)."""
    redis_wait_timeout_ms: int = Field(default=500, ge=1, le=60_000)
    """How long each ``WAIT`` of ``ARVO_REDIS_WAIT_REPLICAS`` blocks at most."""
    lease_ttl_ms: int = Field(default=30_000, ge=100)
    """TTL of an instance lease; a crashed holder blocks its instance at most this long."""
    handler_timeout_s: float = Field(default=20.0, gt=0)
    """Bound on one handler execution; must be below the lease TTL so a lease never outlives its work."""
    stateless_outbox_ttl_s: int = Field(default=86_400, ge=0)
    """How long a stateless handler's emissions are kept so a re-execution republishes them byte for
    byte (0 disables the outbox); longer than any redelivery delay you expect."""
    instance_retention_s: int = Field(default=604_800, ge=0)
    """How long a finished (``done`` or ``failed``) orchestration instance is kept in Redis (default 7
    days): then all its keys expire together and its status-index entries are pruned; a later event
    for it is a ``no_state`` dead letter. ``0`` keeps finished instances forever (archive and delete
    them yourself). Live instances (``active``, ``parked``) never expire."""

    # --- Retry of transient failures --------------------------------------------------------------
    retry_initial_ms: int = Field(default=100, ge=1)
    """First backoff delay."""
    retry_max_ms: int = Field(default=10_000, ge=1)
    """Cap of a backoff delay."""
    retry_max_attempts: int = Field(default=8, ge=1)
    """Attempts (first included) before a record is parked in the dead-letter topic."""
    retry_jitter: float = Field(default=1.0, ge=0.0, le=1.0)
    """Fraction of each delay that is randomised: ``1.0`` is full jitter, ``0.0`` none."""
    dependency_wait_max_s: float = Field(default=0.0, ge=0.0)
    """How long a record waits for Redis (or another dependency) that is down — unreachable, refusing
    the credentials, a cluster slot without master — before its failures count towards parking like
    any other; ``0`` waits without bound (an outage is never the event's fault)."""
    idle_trim_s: float = Field(default=30.0, ge=0.0)
    """After work, once no record finished for this long, give the process's free heap back to the
    kernel once (``malloc_trim``; an overload's peak is not kept for good); ``0`` never does."""
    timer_poll_interval_ms: int = Field(default=200, ge=10, le=60_000)
    """How often each member looks for due timers (delayed transitions, deadlines) in the schedules
    of the orchestrator partitions it owns: a timer fires up to this much after its due time (plus
    one hop through the broker)."""
    timer_batch_size: int = Field(default=500, ge=1, le=100_000)
    """Most due timers one partition publishes per round trip (more are fired at once in batches)."""
    stall_timeout_s: float = Field(default=300.0, gt=0)
    """A partition whose lane has records waiting but finished none for this long is reported
    stalled: ``/readyz`` 503 naming it, the ``arvo_stalled_partitions`` gauge; offset commits failing
    for this long turn ``/readyz`` 503 too."""
    publish_give_up_attempts: int = Field(default=5, ge=1)
    """Attempts after which a publish error not known to be transient, or emissions naming a topic
    that does not exist, dead-letter the record (``unpublishable``/``unroutable``) instead of stalling
    its partition. Broker outages are waited out without bound."""
    instance_history_events: int = Field(default=20, ge=0)
    """Consumed and produced events kept in each instance's record (``arvo inspect --history``),
    written in the same commit as the state; 0 keeps none."""
    instance_history_bytes: int = Field(default=4_096, ge=0)
    """Bytes of JSON history kept per instance at most (the newest entries that fit)."""
    reply_source_check: Literal["off", "addressed", "strict"] = "addressed"
    """Whose replies an orchestrator or resumable accepts: ``addressed`` — only from the handler of a
    service contract that emits the reply's type (a service's source is its contract's type, a child
    orchestration's its name); others are dropped, counted, logged and dead-lettered as
    ``foreign_source``. ``strict`` — as ``addressed``, and the reply's ``parentid`` must be the id of
    an event the instance emitted (its record keeps the ids of its last 256 emissions). ``off``
    accepts any source. Kafka ACLs are what keeps producers off a topic."""
    dead_letter_no_state: bool = True
    """Write an event that is not an init, for an instance with no state, to the dead-letter topic
    with reason ``no_state`` (it is always counted and logged at WARNING): its state was lost (Redis
    without durability restarted) or expired (``ARVO_INSTANCE_RETENTION_S``), and the letter lets it
    be replayed after a restore."""
    dependency_probe_interval_ms: int = Field(default=500, ge=10)
    """How often a dependency that is down is probed (Redis: ``PING``); waiting records resume as
    soon as it answers."""

    # --- Handler threads and the event loop -------------------------------------------------------
    handler_threads: int = Field(default=8, ge=0, le=1_024)
    """Worker threads that run synchronous (``def``, not ``async def``) handler functions, so blocking
    code never freezes the event loop; calls beyond it wait for a free thread. One execution per
    assigned partition runs at a time, so more threads than partitions are never used; a thread whose
    execution timed out stays busy until its function returns (it cannot be stopped; logged). ``0``
    runs them on the event loop."""
    loop_lag_check_interval_s: float = Field(default=0.25, gt=0, le=60)
    """How often the event loop's lag is sampled (``arvo_event_loop_lag_seconds``) and checked for a
    block."""
    loop_lag_warning_s: float = Field(default=1.0, gt=0)
    """An event loop blocked this long is logged while it lasts (WARNING naming the running handler,
    its event and the code location), and once more with the total when it runs again."""

    # --- Limits, app, observability ---------------------------------------------------------------
    max_event_bytes: int = Field(default=1_048_576, ge=1_024)
    """Largest record value accepted (bigger ones are dead-lettered unread)."""
    app: str = "service.examples:default_app"
    """``module:attribute`` of the workflow application to run."""
    workers: int = Field(default=1, ge=1, le=64)
    """Service processes ``arvo run`` starts (``--workers``). ``1`` runs the service in the ``arvo run``
    process itself. With N > 1 that process becomes a supervisor: N worker processes in one consumer
    group, signals passed on to them, crashed workers restarted, one health and metrics port for all
    (docs/operating.md, "Several worker processes on one VM"). In Kubernetes keep 1 and scale with
    replicas."""
    health_port: int = Field(default=8080, ge=0, le=65_535)
    """HTTP port of ``/healthz``, ``/readyz`` and ``/metrics`` (0 disables)."""
    health_host: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104 - probes come from outside the pod
    """Address the health and metrics server binds: ``0.0.0.0`` (every IPv4 interface: Kubernetes
    probes and Prometheus scrapes come from outside the pod), ``::`` for IPv6, ``127.0.0.1`` to keep
    it local to the host."""
    log_format: LogFormat = "auto"
    """``json`` lines, ``console`` (pretty) or ``auto`` (console on a terminal)."""
    log_level: LogLevel = "INFO"
    """Minimum log level."""
    include_error_stack: bool = False
    """Ship stack traces in system error events (off in production: information disclosure)."""
    strict_settings: bool = False
    """Refuse to start when an ``ARVO_*`` variable of the environment or ``.env`` is not a setting
    (a misspelt name would otherwise leave its setting at the default); off, each is a warning naming
    the closest setting. ``ARVO_TEST_*`` variables are never reported."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("topic_prefix", "dead_letter_topic")
    @classmethod
    def _topic_chars(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_CHARS.match(value):
            raise PydanticCustomError(
                "topic_chars", "must contain only Kafka topic characters [a-zA-Z0-9._-]"
            )
        if value is not None and len(value) > 200:
            raise PydanticCustomError("topic_length", "must be at most 200 characters")
        return value

    @field_validator("app", "topic_router")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.match(value):
            raise PydanticCustomError("import_path", "must be 'module:attribute', e.g. 'myapp.workflows:app'")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",")]
        if not servers or any(not server for server in servers):
            raise PydanticCustomError("bootstrap", "must be a comma-separated list of host:port")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(_REDIS_SCHEMES):
            raise PydanticCustomError("redis_url", "must start with redis://, rediss:// or unix://")
        return value

    @field_validator("heartbeat_interval_ms")
    @classmethod
    def _heartbeat_below_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("session_timeout_ms")
        if session is not None and value >= session:
            raise PydanticCustomError(
                "heartbeat",
                "must be less than {other}={session} ms",
                {"other": env_var_name("session_timeout_ms"), "session": session},
            )
        return value

    @field_validator("handler_timeout_s")
    @classmethod
    def _timeout_below_lease(cls, value: float, info: ValidationInfo) -> float:
        ttl_ms = info.data.get("lease_ttl_ms")
        if ttl_ms is not None and value * 1000 >= ttl_ms:
            raise PydanticCustomError(
                "handler_timeout",
                "must be less than the lease TTL {other}={ttl} ms (a lease must outlive the work it guards)",
                {"other": env_var_name("lease_ttl_ms"), "ttl": ttl_ms},
            )
        return value

    @field_validator("retry_max_ms")
    @classmethod
    def _max_above_initial(cls, value: int, info: ValidationInfo) -> int:
        initial = info.data.get("retry_initial_ms")
        if initial is not None and value < initial:
            raise PydanticCustomError(
                "retry_max",
                "must be at least {other}={initial}",
                {"other": env_var_name("retry_initial_ms"), "initial": initial},
            )
        return value

    @model_validator(mode="after")
    def _request_timeout_above_waits(self) -> ServiceSettings:
        # aiokafka sends JoinGroup (which the coordinator may hold for a session timeout or more) and
        # fetches (held up to fetch_max_wait_ms) with the plain request timeout: below either, every
        # join or fetch times out and the consumer never gets partitions.
        for other in ("session_timeout_ms", "fetch_max_wait_ms"):
            bound = getattr(self, other)
            if self.kafka_request_timeout_ms <= bound:
                raise PydanticCustomError(
                    "request_timeout",
                    "{timeout}={value} must be greater than {other}={bound} (joins and fetches would"
                    " time out)",
                    {
                        "timeout": env_var_name("kafka_request_timeout_ms"),
                        "value": self.kafka_request_timeout_ms,
                        "other": env_var_name(other),
                        "bound": bound,
                    },
                )
        return self

    @model_validator(mode="after")
    def _security_consistency(self) -> ServiceSettings:
        if self.kafka_security_protocol.startswith("SASL_") and (
            not self.kafka_sasl_username or self.kafka_sasl_password is None
        ):
            raise PydanticCustomError(
                "sasl_credentials",
                "{protocol} needs {user} and {password}",
                {
                    "protocol": f"{env_var_name('kafka_security_protocol')}={self.kafka_security_protocol}",
                    "user": env_var_name("kafka_sasl_username"),
                    "password": env_var_name("kafka_sasl_password"),
                },
            )
        if self.producer_idempotence and self.producer_acks != "all":
            raise PydanticCustomError(
                "idempotence_acks",
                "{idem}=true needs {acks}=all (got {value})",
                {
                    "idem": env_var_name("producer_idempotence"),
                    "acks": env_var_name("producer_acks"),
                    "value": repr(self.producer_acks),
                },
            )
        if self.redis_wait_replicas and self.redis_cluster:
            raise PydanticCustomError(
                "wait_cluster",
                "{wait}={value} needs a standalone Redis, not {cluster}=true (use min-replicas-to-write"
                " on the cluster's masters)",
                {
                    "wait": env_var_name("redis_wait_replicas"),
                    "value": self.redis_wait_replicas,
                    "cluster": env_var_name("redis_cluster"),
                },
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise PydanticCustomError(
                "ssl_keyfile",
                "{key} needs {cert}",
                {"key": env_var_name("kafka_ssl_keyfile"), "cert": env_var_name("kafka_ssl_certfile")},
            )
        return self

    # --- derived values ---------------------------------------------------------------------------

    @property
    def dead_letter_topic_name(self) -> str:
        """The dead-letter topic: :attr:`dead_letter_topic` or ``<topic_prefix>arvo.dlq``.

        ``arvo.dlq`` has two segments, so it can never equal a handler topic (types have three or more).
        """
        return self.dead_letter_topic or f"{self.topic_prefix}arvo.dlq"

    @property
    def uses_ssl(self) -> bool:
        """Whether the Kafka connection is TLS-wrapped."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the TLS context for ``SSL``/``SASL_SSL`` (``None`` for plaintext protocols).

        Raises:
            SettingsError: a CA, certificate or key file cannot be loaded.

        """
        if not self.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(
                purpose=ssl.Purpose.SERVER_AUTH,
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
            )
            context.check_hostname = self.kafka_ssl_check_hostname
            if self.kafka_ssl_certfile is not None:
                password = self.kafka_ssl_key_password
                context.load_cert_chain(
                    certfile=str(self.kafka_ssl_certfile),
                    keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                    password=password.get_secret_value() if password else None,
                )
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"invalid TLS settings ({env_var_name('kafka_ssl_cafile')}/"
                f"{env_var_name('kafka_ssl_certfile')}/{env_var_name('kafka_ssl_keyfile')}): {exc}"
            ) from exc
        return context

    def kafka_common_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments shared by the aiokafka consumer, producer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "client_id": self.kafka_client_id,
            "security_protocol": self.kafka_security_protocol,
            "request_timeout_ms": self.kafka_request_timeout_ms,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.kafka_security_protocol.startswith("SASL_"):
            password = self.kafka_sasl_password
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = password.get_secret_value() if password else None
        return kwargs

    def consumer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaConsumer``: manual commits, group and fetch tuning."""
        return {
            **self.kafka_common_kwargs(),
            "group_id": self.consumer_group,
            "enable_auto_commit": False,
            "auto_offset_reset": self.auto_offset_reset,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "max_poll_records": self.max_poll_records,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            # Records up to max_event_bytes (plus headers) must be fetchable, or a partition stalls.
            "max_partition_fetch_bytes": max(1_048_576, self.max_event_bytes + 65_536),
        }

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaProducer``: acks, idempotence, batching."""
        acks: str | int = "all" if self.producer_acks == "all" else int(self.producer_acks)
        return {
            **self.kafka_common_kwargs(),
            "acks": acks,
            "enable_idempotence": self.producer_idempotence,
            "linger_ms": self.producer_linger_ms,
            "compression_type": None if self.producer_compression == "none" else self.producer_compression,
            # A dead letter carries the original value plus diagnostic headers.
            "max_request_size": max(1_048_576, self.max_event_bytes + 65_536),
        }

    def admin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaAdminClient``."""
        return self.kafka_common_kwargs()


def _describe(error: Any) -> str:
    loc = tuple(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid value"))
    if not loc:
        return f"invalid settings: {message}"
    field = loc[0]
    name = env_var_name(field)
    if field in _SECRET_FIELDS:
        shown = "'***'"
    else:
        raw = error.get("input")
        if isinstance(raw, str) and len(raw) > _MAX_ERROR_VALUE_CHARS:
            raw = raw[: _MAX_ERROR_VALUE_CHARS - 1] + "…"
        shown = repr(raw)
        if len(shown) > _MAX_ERROR_VALUE_CHARS + 2:
            shown = shown[: _MAX_ERROR_VALUE_CHARS + 1] + "…"
    return f"invalid setting {name}={shown}: {message}"


EnvFiles = str | Path | Sequence[str | Path] | None
"""One ``.env`` file, several (later ones win), or none."""


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """An ``ARVO_*`` variable that is not a setting, where it was found, and the closest setting."""

    name: str
    source: str
    """``environment``, or the ``.env`` file that sets it."""
    suggestion: str | None
    """The closest setting's variable (``difflib``), ``None`` when nothing is close."""

    def __str__(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"{self.name} (in the {self.source}) is not a setting{hint}"


def _env_file_paths(env_file: EnvFiles) -> list[Path]:
    if env_file is None:
        return []
    if isinstance(env_file, str | Path):
        return [Path(env_file)]
    return [Path(item) for item in env_file]


def known_variables() -> frozenset[str]:
    """The environment variable of every setting (``ARVO_KAFKA_BOOTSTRAP_SERVERS``, ...)."""
    return frozenset(env_var_name(field) for field in ServiceSettings.model_fields)


def unknown_variables(
    *, environ: Mapping[str, str] | None = None, env_file: EnvFiles = ".env"
) -> list[UnknownVariable]:
    """The ``ARVO_*`` variables that no setting reads, each with the closest setting's variable.

    Looks in ``environ`` (default: the process environment) and ``env_file``. pydantic-settings
    ignores them silently (``extra="ignore"``), so a misspelt name leaves its setting at the default.
    Names are compared case-insensitively, as the settings read them; ``ARVO_TEST_*`` (the test
    suite's switches) are not reported.
    """
    import difflib
    import os

    known = known_variables()
    found: dict[str, UnknownVariable] = {}

    def check(names: Iterable[str], source: str) -> None:
        for raw in names:
            name = raw.upper()
            if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS_PREFIX):
                continue
            if name in known or name in found:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            found[name] = UnknownVariable(name=raw, source=source, suggestion=close[0] if close else None)

    check(os.environ if environ is None else environ, "environment")
    for path in _env_file_paths(env_file):
        if path.is_file():
            from dotenv import dotenv_values

            check(dotenv_values(path, encoding="utf-8"), f"file {path}")
    return sorted(found.values(), key=lambda item: item.name)


def load_settings(*, env_file: EnvFiles = ".env", **overrides: Any) -> ServiceSettings:
    """Read the settings from the environment (and ``env_file``), with keyword overrides winning.

    Args:
        env_file: ``.env`` file to read, several (later ones win), or ``None`` to read only the
            process environment.
        **overrides: Field values that take precedence over the environment.

    Raises:
        SettingsError: one line per invalid value, e.g.
            ``invalid setting ARVO_LEASE_TTL_MS='abc': Input should be a valid integer...``; with
            ``ARVO_STRICT_SETTINGS=true``, one line per ``ARVO_*`` variable that is not a setting
            (see :func:`unknown_variables`).

    """
    try:
        settings = ServiceSettings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors(include_url=False)]
        raise SettingsError("\n".join(lines)) from None
    if settings.strict_settings:
        unknown = unknown_variables(env_file=env_file)
        if unknown:
            strict = f"{env_var_name('strict_settings')}=true"
            raise SettingsError("\n".join(f"invalid settings: {item} ({strict})" for item in unknown))
    return settings
