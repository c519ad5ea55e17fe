"""Test suite of arvo-service."""
