"""docker-compose.yml's Redis is durable: an append-only file fsynced before every reply, in a volume.

The delivery promise needs every commit Redis acknowledged to survive a Redis crash or restart
(docs/operating.md, "Redis durability": what ``everysec`` and no persistence lose, measured with
``make fault-test FAULT=redis-restart``). The Makefile's ``down`` removes the volume with the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.deploy._deployfiles import compose

REPO_ROOT = Path(__file__).resolve().parents[2]


def redis_service() -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"]["redis"]
    return service


def redis_options() -> dict[str, str]:
    command = redis_service()["command"]
    assert isinstance(command, list), "exec form, so no shell mangles the empty --save argument"
    assert command[0] == "redis-server"
    arguments = command[1:]
    assert len(arguments) % 2 == 0, arguments
    assert all(name.startswith("--") for name in arguments[::2]), arguments
    return dict(zip(arguments[::2], arguments[1::2], strict=True))


def test_redis_writes_an_append_only_file_fsynced_before_every_reply() -> None:
    options = redis_options()
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"


def test_redis_takes_no_rdb_snapshots_besides_the_append_only_file() -> None:
    assert redis_options()["--save"] == ""


def test_redis_data_lives_in_a_named_volume_that_make_down_removes() -> None:
    volumes = redis_service()["volumes"]
    assert "redis-data:/data" in volumes  # /data: the official image's working directory
    assert "redis-data" in compose()["volumes"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    down = re.search(r"^down:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert down is not None
    assert "--volumes" in down.group(1)
