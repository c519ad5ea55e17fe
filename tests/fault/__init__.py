"""Fault tests: worker crashes (``kill -9``) under load, with counts of lost, divergent and duplicate events."""
