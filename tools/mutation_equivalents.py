"""Equivalent mutants: changes no test can detect, because the behaviour stays the same.

``make mutation`` (:mod:`tools.mutation`) reports a surviving mutant listed here as "equivalent" and
leaves it out of the score. An entry names the mutant (as mutmut names it) and a piece of the line the
mutant adds (as the diff shows it); if the mutant no longer makes that change (the source moved on and
mutmut renumbered its mutants) or a test kills it, the report says the entry is stale. Every entry
carries a one-line reason; list a mutant here only when no input can tell it apart.
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

_R1 = "codec names are case-insensitive"
_R2 = "b64decode ignores surplus '=' after the last quantum: '===' decodes like '='"
_R3 = "the strict regex and length check already admit only valid base64, so validate= changes nothing"
_R4 = "unreachable except branch (pragma: no cover): the regex and length check exclude binascii errors"
_R5 = "the default of lenient is never used: every caller passes it"
_R6 = "require_domain_key=None is falsy like False"
_R7 = "orjson replaces the default hook's TypeError message with its own"
_R8 = "a constant hash is still consistent with equality (only set/dict speed changes)"
_R9 = (
    "matching descriptors are nested prefixes of one type ('*' sorts before every type character): "
    "reverse string order is longest first"
)
_R10 = (
    "a cache lookup or store disabled: the value is recomputed identically (configurations stay "
    "shared via the order cache)"
)
_R11 = "a cache bound off by one entry: only memory changes"
_R12 = "unreachable (pragma: no cover): a descriptor ending in '.*' always returns at its '*' token"
_R13 = "the pre-initial configuration's value is never read (a stateless machine's value is {} either way)"
_R14 = "resolving the absent output of a final state gives None, as skipping it does"
_R15 = "the value of an ordered-set dict entry is never read"
_R16 = (
    "entries are in document order: a parallel state is final only at its last final descendant, so "
    "it is never reached twice"
)
_R17 = "changed is only read after an eventless microstep, never on this path"
_R18 = "None is falsy like False wherever this flag is read"
_R19 = "once the machine is done no caller reads the changed flag"
_R20 = "children are built from keys one for one: strict= cannot fire"
_R21 = "state keys are strings: a non-string key is not found either way"
_R22 = "only the emptiness of a node's adjacency list is read"
_R23 = "a parent is always registered before its children, so the default is never used"
_R24 = (
    "every listed node's ancestors are already listed (values name whole paths, initial nodes come "
    "with theirs)"
)
_R25 = "type(None) is never dict: the isinstance check alone decides, as before"
_R26 = "conflicts are removed again by the microstep for several transitions; one transition has none"
_R27 = "the step's timer operations were already applied with now: nothing left for now to date"
_R28 = "without delayed transitions the result never reads the timer book"
_R29 = "sorting one child, or all non-index children by one equal key, changes no order"
_R30 = (
    "configurations are built in document (= JavaScript key) order and regions are re-entered "
    "together: the sort never reorders"
)

_ZIP = "zip is not strict by default and None is false too; the values never outnumber the fields anyway"
_LOG_VARS = (
    "the cache of structlog's context variables disabled: every scope binds its fields the first-use way,"
    " with the same result"
)
_SPAN_EXIT = (
    "the record span is started with record_exception and set_status_on_exception off: it ends the same"
    " way whatever exception it is told of, and the caller's exception propagates unchanged"
)

EQUIVALENT: dict[str, Equivalent] = {
    # service/arvo/subject.py
    "service.arvo.subject.x__create_error__mutmut_10": Equivalent('on.OPT_INDENT_2).decode("UTF-8")', _R1),
    "service.arvo.subject.x__node_base64_decode__mutmut_9": Equivalent(
        'ubject = subject.encode("UTF-16-LE", "surrogatepass")[::2].', _R1
    ),
    "service.arvo.subject.x__node_base64_decode__mutmut_14": Equivalent(
        'ogatepass")[::2].decode("LATIN-1")', _R1
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_32": Equivalent(
        'if base64.b64encode(raw).decode("ASCII") != subject:', _R1
    ),
    "service.arvo.subject.xǁArvoOrchestrationSubjectǁcreate__mutmut_35": Equivalent(
        'subject = base64.b64encode(zlib.compress(payload)).decode("ASCII")', _R1
    ),
    "service.arvo.subject.x__node_base64_decode__mutmut_43": Equivalent(
        'return base64.b64decode(body + "=" * (+len(body) % 4))', _R2
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_22": Equivalent(
        "raw = base64.b64decode(subject, )", _R3
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_23": Equivalent(
        "raw = base64.b64decode(subject, validate=False)", _R3
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_24": Equivalent(
        "raise SubjectError(None) from None", _R4
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_25": Equivalent(
        "raise SubjectError(_parse_error(None, subject)) from None", _R4
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_26": Equivalent(
        'nvalid base64: {error}", None)) from None', _R4
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_27": Equivalent(
        "raise SubjectError(_parse_error(subject)) from None", _R4
    ),
    "service.arvo.subject.x__strict_base64_decode__mutmut_28": Equivalent(
        'nvalid base64: {error}", )) from None', _R4
    ),
    "service.arvo.subject.x__decode_subject__mutmut_1": Equivalent(
        "ct: str, lenient: bool = True) -> ParsedSubject:", _R5
    ),
    "service.arvo.subject.x__decode_subject__mutmut_25": Equivalent(
        "problems = _content_problems(content, require_domain_key=None)", _R6
    ),
    "service.arvo.subject.x__json_default__mutmut_2": Equivalent("raise TypeError(None)", _R7),
    "service.arvo.subject.x__json_default__mutmut_3": Equivalent(
        'JSON serializable: {type(None).__name__}")', _R7
    ),
    "service.arvo.subject.xǁParsedSubjectǁ__hash____mutmut_1": Equivalent("return hash(None)", _R8),
    # service/arvo/machine/statechart.py
    "service.arvo.machine.statechart.x__candidates__mutmut_9": Equivalent(
        "matching.sort(key=None, reverse=True)  # stable", _R9
    ),
    "service.arvo.machine.statechart.x__candidates__mutmut_11": Equivalent(
        "matching.sort(reverse=True)  # stable: ", _R9
    ),
    "service.arvo.machine.statechart.x__plain__mutmut_2": Equivalent("raise TypeError(None)", _R7),
    "service.arvo.machine.statechart.x__plain__mutmut_3": Equivalent(
        'JSON serializable: {type(None).__name__}")', _R7
    ),
    "service.arvo.machine.statechart.x__selection_tree__mutmut_10": Equivalent("candidates = None", _R10),
    "service.arvo.machine.statechart.x__selection_tree__mutmut_11": Equivalent(
        "candidates = node.candidates.get(None)", _R10
    ),
    "service.arvo.machine.statechart.x__selection_tree__mutmut_19": Equivalent(
        "node.candidates[event_type] = None", _R10
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_configuration__mutmut_1": Equivalent(
        "cached = None", _R10
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_configuration__mutmut_2": Equivalent(
        "cached = self._order_cache.get(None)", _R10
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_5": Equivalent("plan = None", _R10),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_6": Equivalent(
        "plan = plans.get(None)", _R10
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_17": Equivalent(
        "plans[transitions[0]] = None", _R10
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_restore__mutmut_9": Equivalent("cached = None", _R10),
    "service.arvo.machine.statechart.xǁStatechartǁ_restore__mutmut_10": Equivalent(
        "cached = self._value_cache.get(None)", _R10
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_plan__mutmut_13": Equivalent("entries = None", _R10),
    "service.arvo.machine.statechart.x__selection_tree__mutmut_18": Equivalent(
        "if len(node.candidates) <= _CANDIDATE_CACHE_LIMIT:", _R11
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_configuration__mutmut_4": Equivalent(
        "if len(self._order_cache) > _CACHE_LIMIT:", _R11
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_16": Equivalent(
        "if len(plans) <= _CANDIDATE_CACHE_LIMIT:", _R11
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_restore__mutmut_14": Equivalent(
        "if len(self._value_cache) > _CACHE_LIMIT:", _R11
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_select__mutmut_11": Equivalent(
        "if len(trees) <= _CANDIDATE_CACHE_LIMIT:", _R11
    ),
    "service.arvo.machine.statechart.x__wildcard_matches__mutmut_25": Equivalent(
        "return False  # pragma: no cover - a", _R12
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ__init____mutmut_24": Equivalent(
        "self._pre_initial = _Configuration((self._root,), None)", _R13
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_enter_states__mutmut_25": Equivalent(
        "tput, run.ctx, event) if (node.has_output) or True else None", _R14
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_enter_states__mutmut_4": Equivalent(
        'active[node] = ""', _R15
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_exit_set__mutmut_7": Equivalent(
        'exits[domain] = ""', _R15
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_exit_set__mutmut_11": Equivalent('exits[n] = ""', _R15),
    "service.arvo.machine.statechart.xǁStatechartǁ_plan__mutmut_38": Equivalent('after[node] = ""', _R15),
    "service.arvo.machine.statechart.xǁStatechartǁ_enter_states__mutmut_47": Equivalent(
        "completed.add(None)", _R16
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_macrostep__mutmut_74": Equivalent("changed = None", _R17),
    "service.arvo.machine.statechart.xǁStatechartǁ_macrostep__mutmut_75": Equivalent("changed = True", _R17),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_27": Equivalent(
        "plan = self._plan(transitions, configuration, None)", _R18
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_31": Equivalent(
        "run.assigned = None", _R18
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_remove_conflicts__mutmut_13": Equivalent(
        "preempted = None", _R18
    ),
    "service.arvo.machine.statechart.xǁStatechartǁstart__mutmut_32": Equivalent(
        "un, init_event, external=None)", _R18
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_microstep__mutmut_72": Equivalent(
        "return next_configuration, False", _R19
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_24": Equivalent(
        "for key, child in zip(keys, children, strict=None):", _R20
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_27": Equivalent(
        "for key, child in zip(keys, children, ):", _R20
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_28": Equivalent(
        "for key, child in zip(keys, children, strict=False):", _R20
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_4": Equivalent(
        " node.states.get(key) if (isinstance(key, str)) or True else None", _R21
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_44": Equivalent(
        "adjacency.setdefault(None, [])", _R22
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_49": Equivalent(
        "adjacency.setdefault(n.parent, []).append(None)", _R22
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_51": Equivalent(
        "adjacency.setdefault(n.parent, None).append(n)", _R23
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_53": Equivalent(
        "adjacency.setdefault(n.parent, ).append(n)", _R23
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_8": Equivalent(
        "adj.setdefault(n.parent, None).append(n)", _R23
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_10": Equivalent(
        "adj.setdefault(n.parent, ).append(n)", _R23
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_75": Equivalent(
        "index = 1", _R24
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_nodes_from_value__mutmut_80": Equivalent(
        "index += 2", _R24
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_restore_snapshot__mutmut_2": Equivalent(
        "if type(None) is not dict and not isinstance(snapshot, Mapping):", _R25
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_restore_snapshot__mutmut_83": Equivalent(
        "if type(None) is not dict and not isinstance(context, Mapping):", _R25
    ),
    "service.arvo.machine.statechart.xǁStatechartǁsend__mutmut_2": Equivalent(
        "if type(None) is not dict and not isinstance(event, Mapping):", _R25
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_select_eventless__mutmut_18": Equivalent(
        "if len(enabled) >= 1:", _R26
    ),
    "service.arvo.machine.statechart.xǁStatechartǁ_select_eventless__mutmut_19": Equivalent(
        "if len(enabled) > 2:", _R26
    ),
    "service.arvo.machine.statechart.xǁStatechartǁadvance__mutmut_41": Equivalent(
        "onfiguration, run, book, None, fired=tuple(fired))", _R27
    ),
    "service.arvo.machine.statechart.xǁStatechartǁfire_timer__mutmut_21": Equivalent(
        "return self._result(configuration, run, book, None)", _R27
    ),
    "service.arvo.machine.statechart.xǁStatechartǁfire_timer__mutmut_40": Equivalent(
        "return self._result(configuration, run, book, None, fired=(timer_id,))", _R27
    ),
    "service.arvo.machine.statechart.xǁStatechartǁstart__mutmut_47": Equivalent(
        "un, _TimerBook([], 0) if (self._has_after) or True else _NO_TIMERS, now)", _R28
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_11": Equivalent(
        "if len(children) > 1 or any(c.array_index is not", _R29
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_12": Equivalent(
        "if len(children) >= 1 and any(c.array_index ", _R29
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_22": Equivalent(
        "_index is not None else (2, 0))", _R29
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_23": Equivalent(
        "dex is not None else (1, 1))", _R29
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_13": Equivalent(
        "if len(children) > 2 and any(c.array_index is", _R30
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_15": Equivalent(
        "if len(children) > 1 and any(c.array_index is None for c in children):", _R30
    ),
    "service.arvo.machine.statechart.xǁ_Configurationǁ__init____mutmut_18": Equivalent(
        "c: (0, c.array_index) if (c.array_index is not None) and False else (1, 0))", _R30
    ),
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
    # service/runtime/consumer/publishing.py
    "service.runtime.consumer.publishing.xǁEmissionPublisherǁ_publish_and_finish__mutmut_42": Equivalent(
        "return True",
        "LaneStopping only comes from a closed lane, and wait_for_instance (the only reader of the result)"
        " raises LaneStopping for a closed lane anyway",
    ),
    # service/runtime/consumer/loop.py
    "service.runtime.consumer.loop.xǁConsumerLoopǁ__init____mutmut_53": Equivalent(
        "self._ends_checked_at = 1.0",
        "time.monotonic() counts from boot and is far past 6 s wherever the loop runs: the first"
        " partition-end check is due at the first idle poll either way",
    ),
    "service.runtime.consumer.loop.xǁConsumerLoopǁ__init____mutmut_45": Equivalent(
        "self._stopping = None",
        "_stopping is only read as a truth value (is_running, stop, the fetch loop): None is false too",
    ),
    "service.runtime.consumer.loop.xǁConsumerLoopǁstart__mutmut_16": Equivalent(
        "self._stopping = None",
        "_stopping is only read as a truth value (is_running, stop, the fetch loop): None is false too",
    ),
    # service/runtime/consumer/processing.py
    "service.runtime.consumer.processing.xǁRecordProcessorǁ_execute_with_retries__mutmut_9": Equivalent(
        'waited_for: str | None = ""',
        "report_up of a dependency that is not down does nothing, and no dependency is named ''",
    ),
    # service/runtime/consumer/scope.py
    "service.runtime.consumer.scope.x__header_text__mutmut_10": Equivalent(
        'return bytes(raw).decode("UTF-8")', _R1
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__enter____mutmut_13": Equivalent(
        "zip(LOG_FIELDS, values, strict=None)", _ZIP
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__enter____mutmut_16": Equivalent(
        "zip(LOG_FIELDS, values, )", _ZIP
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__enter____mutmut_27": Equivalent(
        "zip(log_vars, values, strict=None)", _ZIP
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__enter____mutmut_30": Equivalent(
        "zip(log_vars, values, )", _ZIP
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__enter____mutmut_7": Equivalent(
        "log_vars = None", _LOG_VARS
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__enter____mutmut_19": Equivalent(
        "RecordScope.log_vars = None", _LOG_VARS
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__exit____mutmut_3": Equivalent(
        "__exit__(None, exc, tb)", _SPAN_EXIT
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__exit____mutmut_4": Equivalent(
        "__exit__(exc_type, None, tb)", _SPAN_EXIT
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ__init____mutmut_3": Equivalent(
        "self._log_tokens: list[contextvars.Token[Any]] = None",
        "__enter__ sets _log_tokens before it is read",
    ),
    "service.runtime.consumer.scope.xǁRecordScopeǁ_reset_log_context__mutmut_3": Equivalent(
        "self._log_tokens = None",
        "a scope is left once per entry, and __enter__ sets _log_tokens again before it is read",
    ),
    # service/runtime/consumer/dependencies.py
    "service.runtime.consumer.dependencies.xǁDependencyMonitorǁ_probe_until_up__mutmut_4": Equivalent(
        "answered = None", "answered is only read as a truth value: None is false like False"
    ),
    "service.runtime.consumer.dependencies.xǁDependencyMonitorǁup_event__mutmut_5": Equivalent(
        "if self.is_up(None):",
        "report_down creates (and clears) the event first: a new one is only ever made for a dependency"
        " that is up",
    ),
}
"""Mutant name → the line it adds and why it is equivalent."""
