"""Integration tests: real Redis and the Kafka-protocol test broker."""
