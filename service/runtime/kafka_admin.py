"""Topic creation at start-up (``ARVO_CREATE_TOPICS``), with the configured partitions and replication.

Creating is idempotent: topics that exist are left as they are (their partition count is not
changed: adding partitions would move keys, and with them the per-subject ordering).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from service.runtime.routing import validate_topic_name

if TYPE_CHECKING:
    from service.runtime.settings import ServiceSettings

__all__ = ["TopicCreationError", "ensure_topics", "topic_partitions"]

_METADATA_WAIT_S = 10.0


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic (other than because it already exists)."""


async def ensure_topics(
    settings: ServiceSettings,
    topics: Iterable[str],
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create the missing ``topics`` and wait until the broker lists them.

    Args:
        settings: Connection settings; ``topic_partitions`` and ``topic_replication_factor`` are
            the defaults for new topics.
        topics: Topic names (validated as legal Kafka names).
        partitions: Override of ``settings.topic_partitions``.
        replication_factor: Override of ``settings.topic_replication_factor``.

    Returns:
        The topics this call created (sorted).

    Raises:
        TopicCreationError: the broker rejected a topic for a reason other than "already exists".
        RoutingError: a name is not a legal Kafka topic name.

    """
    wanted = sorted({validate_topic_name(topic) for topic in topics})
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(**settings.admin_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic not in existing]
        if not missing:
            return []
        response: Any = await admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=partitions or settings.topic_partitions,
                    replication_factor=replication_factor or settings.topic_replication_factor,
                )
                for topic in missing
            ]
        )
        created: list[str] = []
        failures: list[str] = []
        for topic_error in response.topic_errors:
            topic, code, message = topic_error[0], topic_error[1], topic_error[-1]
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                failures.append(f"{topic!r}: {for_code(code).__name__} {message or ''}".rstrip())
        if failures:
            raise TopicCreationError("cannot create topics: " + "; ".join(failures))
        await _wait_listed(admin, missing)
        return sorted(created)
    finally:
        await admin.close()


async def _wait_listed(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    deadline = time.monotonic() + _METADATA_WAIT_S
    while True:
        listed = set(await admin.list_topics())
        if listed.issuperset(topics):
            return
        if time.monotonic() > deadline:
            missing = sorted(set(topics) - listed)
            raise TopicCreationError(f"topics created but not listed after {_METADATA_WAIT_S} s: {missing}")
        await asyncio.sleep(0.05)


async def topic_partitions(settings: ServiceSettings, topic: str) -> list[int]:
    """The partition ids of ``topic`` (sorted), or ``[]`` when the topic does not exist.

    Lists topics first: describing an unknown topic makes brokers with topic auto-creation enabled
    (Tansu always) create it.
    """
    admin = AIOKafkaAdminClient(**settings.admin_kwargs())
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
            return sorted(int(partition["partition"]) for partition in entry.get("partitions", []))
    return []
