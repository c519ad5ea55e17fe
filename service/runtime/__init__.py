"""The microservice: settings, the Kafka binding and consumer loop, the producer, Redis memory, DLQ.

Depends on :mod:`service.arvo`, never the other way round (enforced by import-linter).
"""
