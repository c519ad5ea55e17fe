"""Fixtures of the end-to-end tests: the session's test broker and the shared Redis."""

from tests.integration._kafka import (  # noqa: F401 - pytest fixtures are found by name
    kafka_bootstrap,
    kafka_names,
)
from tests.integration._redis import (  # noqa: F401 - pytest fixtures are found by name
    redis_key_prefix,
    shared_redis_url,
)
