"""The Arvo primitives: events, contracts, subjects, factories, handlers, orchestrators, resumables.

Pure and I/O-free apart from the :class:`~service.arvo.memory.Memory` port; no Kafka or Redis here.
The curated public API is re-exported by :mod:`service`.
"""
