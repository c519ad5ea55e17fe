"""Equivalent mutants: changes no test can detect, because the behaviour stays the same.

``make mutation`` (:mod:`tools.mutation`) reports a surviving mutant listed here as "equivalent" and
leaves it out of the score. An entry names the mutant (as mutmut names it) and the line the mutant
adds (as it appears in the diff, without the leading ``+``); if the mutant no longer makes that change
(the source moved on and mutmut renumbered its mutants) or a test kills it, the report says the entry
is stale. Every entry carries a one-line reason; list a mutant here only when no input can tell it apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EQUIVALENT", "Equivalent"]


@dataclass(frozen=True)
class Equivalent:
    """Why a mutant cannot change behaviour, and the line it adds (to notice renumbering)."""

    change: str
    reason: str


_TYPE_CHECKED = (
    "is_violation_error() already requires a non-empty str `type`: the getattr default is never used"
)

EQUIVALENT: dict[str, Equivalent] = {
    # service/runtime/consumer/decisions.py
    "service.runtime.consumer.decisions.x_classify_error__mutmut_6": Equivalent(
        'return _PERMANENT_VIOLATIONS.get(str(getattr(error, "type", None)))', _TYPE_CHECKED
    ),
    "service.runtime.consumer.decisions.x_classify_error__mutmut_9": Equivalent(
        'return _PERMANENT_VIOLATIONS.get(str(getattr(error, "type", )))', _TYPE_CHECKED
    ),
    "service.runtime.consumer.decisions.x_classify_error__mutmut_12": Equivalent(
        'return _PERMANENT_VIOLATIONS.get(str(getattr(error, "type", "XXXX")))', _TYPE_CHECKED
    ),
    # service/runtime/consumer/offsets.py
    "service.runtime.consumer.offsets.xǁOffsetTrackerǁ__init____mutmut_5": Equivalent(
        'self._committed: int | None = ""',
        "_committed is only compared (!=) with a non-None int position: None and '' both differ from it",
    ),
    # service/runtime/consumer/lanes.py
    "service.runtime.consumer.lanes.xǁLaneǁ__init____mutmut_6": Equivalent(
        "self.busy = None", "busy is only read as a truth value (idle, size): None and False are both false"
    ),
    "service.runtime.consumer.lanes.xǁLaneǁ__init____mutmut_8": Equivalent(
        "self.paused = None",
        "paused is only read as a truth value (should_pause/should_resume feed an if): None is false too",
    ),
    "service.runtime.consumer.lanes.xǁLaneǁ__init____mutmut_10": Equivalent(
        'self.task: asyncio.Task[None] | None = ""',
        "the loop assigns lane.task right after building every Lane, before anything reads it",
    ),
    "service.runtime.consumer.lanes.xǁLaneǁ__init____mutmut_12": Equivalent(
        "self.progress_at = None",
        "read only by stalled_for of a lane with work, and enqueue (the only way work arrives) sets it first",
    ),
}
"""Mutant name → the line it adds and why it is equivalent."""
