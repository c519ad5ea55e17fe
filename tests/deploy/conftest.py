"""Fixtures of the deployment tests: the session's test broker and the shared Redis (for the e2e
test), and a process environment without the developer's own ``ARVO_*`` variables, so settings built
from the deployment files see only what those files set (``ARVO_TEST_*`` test switches are kept)."""

import os

import pytest

from tests.integration._kafka import kafka_bootstrap  # noqa: F401 - pytest fixtures are found by name
from tests.integration._redis import (  # noqa: F401 - pytest fixtures are found by name
    redis_key_prefix,
    shared_redis_url,
)


@pytest.fixture(autouse=True)
def _no_arvo_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ARVO_") and not name.upper().startswith("ARVO_TEST_"):
            monkeypatch.delenv(name)
