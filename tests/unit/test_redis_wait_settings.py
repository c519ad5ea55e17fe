"""``ARVO_REDIS_WAIT_REPLICAS`` / ``ARVO_REDIS_WAIT_TIMEOUT_MS``: validated, and reach the Redis memory."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from service.runtime.redis_memory import RedisMemory
from service.runtime.settings import SettingsError, load_settings
from service.runtime.stores import open_memory


def test_defaults_do_not_wait() -> None:
    settings = load_settings(env_file=None)
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (0, 500)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"redis_wait_replicas": -1},
            r"ARVO_REDIS_WAIT_REPLICAS=-1: Input should be greater than or equal to 0",
        ),
        (
            {"redis_wait_timeout_ms": 0},
            r"ARVO_REDIS_WAIT_TIMEOUT_MS=0: Input should be greater than or equal to 1",
        ),
        (
            {"redis_wait_replicas": 1, "redis_cluster": True},
            r"ARVO_REDIS_WAIT_REPLICAS=1 needs a standalone Redis, not ARVO_REDIS_CLUSTER=true",
        ),
    ],
)
def test_invalid_values_name_the_variable(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env_file=None, **overrides)


async def test_the_memory_of_the_settings_waits_and_its_clients_outlast_a_full_wait() -> None:
    settings = load_settings(
        env_file=None, redis_url="redis://127.0.0.1:9/0", redis_wait_replicas=2, redis_wait_timeout_ms=1_500
    )
    memory = open_memory(settings)
    try:
        assert isinstance(memory, RedisMemory)
        assert (memory.wait_replicas, memory.wait_timeout_ms) == (2, 1_500)
        # The socket timeout covers the WAIT's own: a WAIT running its full time never times out.
        client = memory.client
        assert isinstance(client, Redis)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == pytest.approx(2.0 + 1.5)
        assert memory.hot_client is not None
        assert memory.hot_client._timeout_s == pytest.approx(3.5)
    finally:
        await memory.close()
