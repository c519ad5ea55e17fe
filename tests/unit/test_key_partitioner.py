"""The service's partitioner picks exactly the partitions of Kafka's default (murmur2) partitioner."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from service.runtime.producer import KeyPartitioner, murmur2


def test_murmur2_equals_the_kafka_clients_hash_for_every_length() -> None:
    rng = random.Random(7)
    for length in range(300):
        data = bytes(rng.randrange(256) for _ in range(length))
        assert murmur2(data) == aiokafka_murmur2(data), length


def test_keyed_records_land_on_the_default_partitioners_partition_also_when_cached() -> None:
    partitioner = KeyPartitioner(max_keys=4)
    default = DefaultPartitioner()
    partitions = list(range(6))
    keys = [f"subject-{index}".encode() * (index % 7 + 1) for index in range(40)]
    for _ in range(2):  # second round: from the cache (and evictions)
        for key in keys:
            assert partitioner(key, partitions, partitions) == default(key, partitions, partitions)


def test_records_without_a_key_go_to_an_available_partition() -> None:
    partitioner = KeyPartitioner()
    assert {partitioner(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert partitioner(None, [0, 1, 2], []) in {0, 1, 2}
