"""The one execution pipeline shared by orchestrators and resumables (the seed sequence diagrams).

Handlers reuse its emission and system-error code; see :mod:`.pipeline` for the flow.
"""
