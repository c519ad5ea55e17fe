"""Lease tokens of the Redis memory: unique per request, and not shared with a forked child."""

from __future__ import annotations

import os

from service.runtime import redis_memory


def test_lease_tokens_are_unique_in_a_process_and_differ_in_a_forked_child() -> None:
    tokens = {redis_memory._new_lease_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, redis_memory._new_lease_token().encode())
        os._exit(0)
    os.close(write)
    child_token = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_token
    assert child_token not in tokens
    assert child_token[:24] != redis_memory._new_lease_token()[:24]  # a fresh random prefix
