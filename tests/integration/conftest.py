"""Fixtures of the integration tests: one import line per backend, implementations in ``_<backend>.py``."""

from tests.integration._kafka import (  # noqa: F401 - pytest fixtures are found by name
    kafka_bootstrap,
    kafka_names,
)
from tests.integration._redis import (  # noqa: F401 - pytest fixtures are found by name
    private_redis,
    redis_key_prefix,
    redis_memory,
    shared_redis_url,
)
