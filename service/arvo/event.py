"""The ArvoEvent: a CloudEvents 1.0 JSON event with Arvo's extensions (spec section 1).

:class:`ArvoEvent` is immutable and validated on construction: every broken rule of spec 1.1-1.8 is
collected into one :class:`~service.arvo.errors.ArvoEventValidationError`. Building an event from Python
values (:class:`ArvoEvent` or :func:`create_arvo_event`) and decoding one from the wire
(:meth:`ArvoEvent.from_json`) enforce the same rules; decoding takes fast paths because the JSON parser
already guarantees most of them.

Differences from the original, on purpose (spec 15.1):

* custom extension keys that collide with a core, Arvo or OTel attribute are rejected (the original let
  them silently overwrite core attributes in ``toJSON``);
* NaN/Infinity and integers beyond +/-(2**53 - 1) are rejected in ``data``, ``executionunits`` and
  extension values instead of being mangled by JavaScript;
* timestamps are true UTC (the original labels local wall time ``+00:00`` on non-UTC hosts);
* decoding is lenient about *missing* nullable keys so arvo-core 2.x events (no ``parentid``/``domain``)
  are accepted.

This module has no OpenTelemetry dependency: callers pass ``traceparent``/``tracestate`` explicitly.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import time as time_module
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, NoReturn, Self, TypeAlias

import orjson

from service.arvo.errors import ArvoEventValidationError, ValidationProblem
from service.arvo.uri import URIError, encode_uri, uri_problem
from service.arvo.validation import (
    DATETIME_RE,
    DOMAIN_RE,
    EXTENSION_KEY_RE,
    MAX_JSON_DEPTH,
    TYPE_RE,
    is_json_object_clean,
    is_parsed_json_clean,
    is_parsed_scalar_clean,
    json_object_problems,
    make_problem,
    number_problem,
    string_problem,
)

__all__ = [
    "ARVO_DATA_CONTENT_TYPE",
    "ARVO_EXTENSION_KEYS",
    "CORE_KEYS",
    "MAX_EVENT_ID_CHARS",
    "OTEL_EXTENSION_KEYS",
    "OTEL_NULL",
    "RESERVED_EXTENSION_KEYS",
    "WIRE_KEY_ORDER",
    "ArvoEvent",
    "EventIdSpec",
    "ExtensionValue",
    "create_arvo_event",
    "create_arvo_event_id",
    "create_timestamp",
    "data_schema_of",
    "engine_event",
    "mark_data_schema",
    "parse_arvo_event_id",
]

ARVO_DATA_CONTENT_TYPE: Final = "application/cloudevents+json;charset=UTF-8;profile=arvo"
"""The content type of Arvo events (WIRE); with it, ``to`` is mandatory."""
OTEL_NULL: Final = "N/A"
"""Stands for a null attribute in :attr:`ArvoEvent.otel_attributes` (the original's ``OTelNull``)."""

CORE_KEYS: Final = (
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "time",
)
"""CloudEvents core attributes, in wire order."""
ARVO_EXTENSION_KEYS: Final = ("to", "accesscontrol", "redirectto", "executionunits", "parentid", "domain")
"""Arvo's extension attributes."""
OTEL_EXTENSION_KEYS: Final = ("traceparent", "tracestate")
"""The CloudEvents distributed-tracing extension attributes."""
_TAIL_KEYS: Final = (
    "to",
    "accesscontrol",
    "redirectto",
    "executionunits",
    "traceparent",
    "tracestate",
    "parentid",
    "domain",
)
WIRE_KEY_ORDER: Final = (*CORE_KEYS, *_TAIL_KEYS)
"""Key order of :meth:`ArvoEvent.to_dict` (custom extensions go between ``time`` and ``to``)."""
_WIRE_KEY_COUNT: Final = len(WIRE_KEY_ORDER)
RESERVED_EXTENSION_KEYS: Final = frozenset(WIRE_KEY_ORDER)
"""Names a custom extension may not use (spec 15.1 hazard 6)."""

MAX_EVENT_ID_CHARS: Final = 4096
"""Longest id :func:`parse_arvo_event_id` tries to decode."""
_MAX_EVENT_ID_JSON_BYTES: Final = 16 * 1024

ExtensionValue: TypeAlias = str | bool | int | float | None
"""Allowed values of a custom extension attribute."""


class _Missing:
    """Marks a required key absent from a decoded event."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final[Any] = _Missing()
_CONTENT_TYPES: Final = ("application/cloudevents+json", "application/json")
_MAX_ARRAY_INDEX: Final = 2**32 - 1
_SUMMARY: Final = "Invalid ArvoEvent"

# Bound methods: one attribute lookup less on the hot path.
_uri_fast = re.compile(r"[A-Za-z0-9;,/?:@&=+$\-_.!~*'()#]+").fullmatch
_type_match = TYPE_RE.match
_time_match = DATETIME_RE.match
_domain_match = DOMAIN_RE.match
_extension_key_match = EXTENSION_KEY_RE.match
_is_reserved_superset = RESERVED_EXTENSION_KEYS.issuperset
_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


# --------------------------------------------------------------------------------------------------
# Field checks. Each hot-path test is one boolean expression; these helpers run only when it fails and
# work out exactly which rule broke.


def _missing(problems: list[ValidationProblem], path: str, message: str) -> None:
    problems.append(make_problem(path, "required", f"{message} (the key is missing)", _MISSING))


def _string_field(problems: list[ValidationProblem], path: str, value: object, message: str) -> bool:
    """Check type, non-emptiness and UTF-8 of a string field; ``True`` if the value is a usable string.

    Nullable fields only get here when they are not ``None``.
    """
    if value is _MISSING:
        _missing(problems, path, message)
        return False
    if value is None:
        problems.append(make_problem(path, "non-empty", message, value))
        return False
    if not isinstance(value, str):
        problems.append(make_problem(path, "string", f"{message} (got {type(value).__name__})", value))
        return False
    if not value:
        problems.append(make_problem(path, "non-empty", message, value))
        return False
    problem = string_problem(value, path, label=message)
    if problem is not None:
        problems.append(problem)
        return False
    return True


def _uri_field(
    problems: list[ValidationProblem],
    path: str,
    value: object,
    empty_message: str,
    uri_message: str,
) -> None:
    if not _string_field(problems, path, value, empty_message):
        return
    assert isinstance(value, str)
    reason = uri_problem(value)
    if reason is not None:
        problems.append(make_problem(path, "uri", f"{uri_message}: {reason}", value))


def _regex_field(  # noqa: PLR0917 - internal helper, called positionally from the rule table
    problems: list[ValidationProblem],
    path: str,
    value: object,
    match: Any,
    rule: str,
    message: str,
    empty_message: str,
) -> None:
    if not _string_field(problems, path, value, empty_message):
        return
    if match(value) is None:
        problems.append(make_problem(path, rule, message, value))


def _content_type_field(problems: list[ValidationProblem], value: object) -> None:
    message = "Datacontenttype must be a non-empty string"
    if not _string_field(problems, "datacontenttype", value, message):
        return
    assert isinstance(value, str)
    if not any(part in value for part in _CONTENT_TYPES):
        problems.append(
            make_problem(
                "datacontenttype",
                "datacontenttype",
                "Datacontenttype must contain 'application/cloudevents+json' or 'application/json'",
                value,
            )
        )


def _data_field(problems: list[ValidationProblem], value: object) -> None:
    if value is _MISSING:
        _missing(problems, "data", "The Arvo data object must be a JSON serializable object")
        return
    problems.extend(json_object_problems(value, "data", max_depth=MAX_JSON_DEPTH))


def _executionunits_field(problems: list[ValidationProblem], value: object) -> None:
    problem = number_problem(value, "executionunits", label="Execution units")
    if problem is not None:
        problems.append(problem)


def _is_array_index(key: str) -> bool:
    """Whether JavaScript treats ``key`` as an integer index (such keys come first in object order)."""
    return (
        key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and (len(key) < 10 or int(key) < _MAX_ARRAY_INDEX)
    )


def _extension_problems(
    problems: list[ValidationProblem], extensions: Mapping[Any, Any], *, parsed: bool
) -> dict[str, ExtensionValue]:
    """Validate custom extensions and return them in JavaScript object key order."""
    ordered: dict[str, ExtensionValue] = {}
    integer_keys: list[str] = []
    for key, value in extensions.items():
        path = f"extensions[{key!r}]" if not isinstance(key, str) else key
        if not isinstance(key, str) or _extension_key_match(key) is None:
            problems.append(
                make_problem(
                    path,
                    "extension-key",
                    "Extension keys must contain only lowercase letters and numbers (^[a-z0-9]+$)",
                    key,
                )
            )
            continue
        if key in RESERVED_EXTENSION_KEYS:
            problems.append(
                make_problem(
                    path,
                    "extension-collision",
                    f"Extension key {key!r} collides with a core, Arvo or OTel attribute of the event",
                    key,
                )
            )
            continue
        kind = type(value)
        if value is None or kind is bool:
            pass
        elif kind is str or isinstance(value, str):
            if not parsed:
                problem = string_problem(value, path, label="Extension value")
                if problem is not None:
                    problems.append(problem)
        elif isinstance(value, int | float):
            problem = number_problem(value, path, label="Extension value")
            if problem is not None:
                problems.append(problem)
        else:
            problems.append(
                make_problem(
                    path,
                    "extension-value",
                    f"Extension values must be a string, boolean, number or null, not {kind.__name__}",
                    value,
                )
            )
            continue
        ordered[key] = value
        if key[0] in "0123456789" and _is_array_index(key):
            integer_keys.append(key)
    if integer_keys:
        integer_keys.sort(key=int)
        ordered = {
            **{key: ordered[key] for key in integer_keys},
            **{key: item for key, item in ordered.items() if key not in integer_keys},
        }
    return ordered


class _Fields(NamedTuple):
    """The 17 attributes of an event, in wire order (one tuple: one slot write per event)."""

    id: str
    source: str
    specversion: str
    type: str
    subject: str
    datacontenttype: str
    dataschema: str | None
    data: dict[str, Any]
    time: str
    to: str | None
    accesscontrol: str | None
    redirectto: str | None
    executionunits: int | float | None
    traceparent: str | None
    tracestate: str | None
    parentid: str | None
    domain: str | None


def _new_fields(values: Iterable[Any]) -> _Fields:
    """Build :class:`_Fields` from 17 values in wire order, skipping the namedtuple's Python ``__new__``."""
    return tuple.__new__(_Fields, values)


assert _Fields._fields == WIRE_KEY_ORDER
_CORE_COUNT: Final = len(CORE_KEYS)


def _validate(fields: _Fields, *, parsed: bool) -> list[ValidationProblem]:
    """Return every problem of the event attributes (custom extensions are checked separately).

    ``parsed`` means the values come from ``orjson.loads`` and passed
    :func:`~service.arvo.validation.is_parsed_json_clean`: strings are valid UTF-8 and numbers are in
    range, so those checks are skipped.
    """
    (
        id_,
        source,
        specversion,
        type_,
        subject,
        datacontenttype,
        dataschema,
        data,
        time,
        to,
        accesscontrol,
        redirectto,
        executionunits,
        traceparent,
        tracestate,
        parentid,
        domain,
    ) = fields
    problems: list[ValidationProblem] = []
    if not (type(id_) is str and id_ and (parsed or id_.isascii())):
        _string_field(problems, "id", id_, "ID must be a non-empty string")
    if not (type(source) is str and _uri_fast(source) is not None):
        _uri_field(
            problems,
            "source",
            source,
            "Source must be a non-empty reference of the producer of the event",
            "The source must be a properly encoded URI",
        )
    if type(specversion) is not str or specversion != "1.0":
        message = "Spec version must be '1.0' for this version of the specification"
        if specversion is _MISSING:
            _missing(problems, "specversion", message)
        else:
            problems.append(make_problem("specversion", "specversion", message, specversion))
    if not (type(type_) is str and _type_match(type_) is not None):
        _regex_field(
            problems,
            "type",
            type_,
            _type_match,
            "type-format",
            "Type should be prefixed with a reverse-DNS name "
            "(at least three dot-separated segments of [a-z0-9], e.g. 'com.example.created')",
            "Type should be prefixed with a reverse-DNS name",
        )
    if not (type(subject) is str and _uri_fast(subject) is not None):
        _uri_field(
            problems,
            "subject",
            subject,
            "Subject must be a non-empty string",
            "The subject must be a properly encoded URI",
        )
    arvo_content_type = datacontenttype is ARVO_DATA_CONTENT_TYPE or (
        type(datacontenttype) is str and datacontenttype == ARVO_DATA_CONTENT_TYPE
    )
    if not arvo_content_type:
        _content_type_field(problems, datacontenttype)
    if dataschema is not None and not (type(dataschema) is str and _uri_fast(dataschema) is not None):
        _uri_field(
            problems,
            "dataschema",
            dataschema,
            "Dataschema must be null or a non-empty string",
            "The dataschema must be a properly encoded URI",
        )
    if not (type(data) is dict and parsed):
        _data_field(problems, data)
    if not (type(time) is str and _time_match(time) is not None):
        _regex_field(
            problems,
            "time",
            time,
            _time_match,
            "time-format",
            "Time must be an RFC 3339 date-time with an offset, e.g. '2025-01-01T00:00:00.000+00:00'"
            " (Invalid datetime)",
            "Time must be a non-empty string",
        )
    if to is not None and not (type(to) is str and _uri_fast(to) is not None):
        _uri_field(
            problems,
            "to",
            to,
            "The 'to' must be null or a non-empty string",
            "The 'to' must be a properly encoded URI",
        )
    if accesscontrol is not None and not (
        type(accesscontrol) is str and accesscontrol and (parsed or accesscontrol.isascii())
    ):
        _string_field(
            problems, "accesscontrol", accesscontrol, "Accesscontrol must be null or a non-empty string"
        )
    if redirectto is not None and not (type(redirectto) is str and _uri_fast(redirectto) is not None):
        _uri_field(
            problems,
            "redirectto",
            redirectto,
            "The 'redirectto' must be null or a non-empty string",
            "The 'redirectto' must be a properly encoded URI",
        )
    if executionunits is not None:
        kind = type(executionunits)
        if not ((kind is float or kind is int) and parsed):
            _executionunits_field(problems, executionunits)
    if traceparent is not None and not (
        type(traceparent) is str and traceparent and (parsed or traceparent.isascii())
    ):
        _string_field(problems, "traceparent", traceparent, "Traceparent must be null or a non-empty string")
    if tracestate is not None and not (
        type(tracestate) is str and tracestate and (parsed or tracestate.isascii())
    ):
        _string_field(problems, "tracestate", tracestate, "Tracestate must be null or a non-empty string")
    if parentid is not None and not (type(parentid) is str and parentid and (parsed or parentid.isascii())):
        _string_field(problems, "parentid", parentid, "Parentid must be null or a non-empty string")
    if domain is not None and not (type(domain) is str and _domain_match(domain) is not None):
        _regex_field(
            problems,
            "domain",
            domain,
            _domain_match,
            "domain-format",
            "Domain must contain only lowercase letters, numbers, and dots",
            "Domain must be non-empty string",
        )
    if arvo_content_type and (to is None or (isinstance(to, str) and not to)):
        problems.append(
            make_problem(
                "to",
                "to-required",
                "The ArvoEvent must have a non-empty 'to' field (required with the Arvo datacontenttype)",
                to,
            )
        )
    return problems


def _fail(problems: list[ValidationProblem]) -> NoReturn:
    raise ArvoEventValidationError(
        f"{_SUMMARY}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", problems
    )


def _fail_input(rule: str, message: str, value: object) -> NoReturn:
    _fail([make_problem("$", rule, message, value)])


def _exact_reparse(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse again with the standard library, whose integers are exact (orjson makes huge ones floats)."""
    try:
        return json.loads(bytes(raw) if isinstance(raw, memoryview | bytearray) else raw)
    except (ValueError, RecursionError):  # deeper than the stdlib parser's recursion limit
        return None


class ArvoEvent:
    r"""An immutable, validated Arvo event (CloudEvents 1.0 + Arvo and OTel extensions).

    Construct with keyword arguments (no normalisation: values are validated as given), with
    :func:`create_arvo_event` (defaults and ``encodeURI`` normalisation of spec 1.9), or from the wire
    with :meth:`from_json`. Every broken rule is reported in one
    :class:`~service.arvo.errors.ArvoEventValidationError`.

    Equality compares :meth:`to_dict`; events are not hashable. ``data`` is kept by reference: treat it
    as read-only.

    Args:
        id: Event id, non-empty.
        source: Producer reference, a non-empty properly encoded URI (spec 1.2).
        type: Event type, ``^[a-z0-9]+(\.[a-z0-9]+)+\.[a-z0-9]+$``.
        subject: Non-empty properly encoded URI (for orchestrations, the subject string).
        data: JSON object (``dict`` with ``str`` keys and JSON values, spec 1.5).
        time: RFC 3339 date-time with offset (spec 1.4).
        specversion: Must be ``"1.0"``.
        datacontenttype: Must contain ``application/cloudevents+json`` or ``application/json``.
        dataschema: ``None`` or a non-empty properly encoded URI.
        to: ``None`` or a non-empty properly encoded URI; required with the Arvo content type.
        accesscontrol: ``None`` or a non-empty string.
        redirectto: ``None`` or a non-empty properly encoded URI.
        executionunits: ``None`` or a finite number (``bool`` is not a number).
        traceparent: ``None`` or a non-empty string (W3C trace context).
        tracestate: ``None`` or a non-empty string.
        parentid: ``None`` or a non-empty string.
        domain: ``None`` or ``^[a-z0-9.]+$``.
        extensions: Custom extension attributes: keys ``^[a-z0-9]+$`` not colliding with any attribute
            above, values ``str``/``bool``/``int``/``float``/``None``.

    Raises:
        ArvoEventValidationError: Any rule is broken; the error lists every problem.

    """

    __slots__ = ("_data_schema", "_extensions", "_fields")

    _fields: _Fields
    _extensions: dict[str, ExtensionValue]
    _data_schema: object | None

    def __init__(
        self,
        *,
        id: str,
        source: str,
        type: str,
        subject: str,
        data: dict[str, Any],
        time: str,
        specversion: str = "1.0",
        datacontenttype: str = ARVO_DATA_CONTENT_TYPE,
        dataschema: str | None = None,
        to: str | None = None,
        accesscontrol: str | None = None,
        redirectto: str | None = None,
        executionunits: float | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        parentid: str | None = None,
        domain: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> None:
        fields = _new_fields(
            (
                id,
                source,
                specversion,
                type,
                subject,
                datacontenttype,
                dataschema,
                data,
                time,
                to,
                accesscontrol,
                redirectto,
                executionunits,
                traceparent,
                tracestate,
                parentid,
                domain,
            )
        )
        problems = _validate(fields, parsed=False)
        ordered: dict[str, ExtensionValue] = {}
        if extensions is not None:
            if isinstance(extensions, Mapping):
                ordered = _extension_problems(problems, extensions, parsed=False)
            else:
                problems.append(
                    make_problem(
                        "extensions",
                        "extensions",
                        f"Extensions must be a mapping of key to value, not {extensions.__class__.__name__}",
                        extensions,
                    )
                )
        if problems:
            _fail(problems)
        _set_fields(self, fields)
        _set_extensions(self, ordered)
        _set_data_schema(self, None)

    # -- decoding ---------------------------------------------------------------------------------

    @classmethod
    def from_json(
        cls,
        raw: bytes | bytearray | memoryview | str | Mapping[str, Any],
        *,
        max_bytes: int | None = None,
    ) -> Self:
        """Decode and validate an event from its JSON form (spec 1.13).

        Missing nullable keys (``dataschema``, ``to``, ``accesscontrol``, ``redirectto``,
        ``executionunits``, ``traceparent``, ``tracestate``, ``parentid``, ``domain``) read as ``None``,
        so arvo-core 2.x events are accepted; a missing ``datacontenttype`` reads as
        :data:`ARVO_DATA_CONTENT_TYPE`. Every other top-level key is a custom extension. Values are not
        re-encoded (no ``encodeURI``): they must already be valid.

        Args:
            raw: The JSON document (``bytes``-like or ``str``), or an already parsed mapping.
            max_bytes: Reject documents longer than this many bytes before parsing (ignored for
                mappings).

        Returns:
            The validated event.

        Raises:
            ArvoEventValidationError: The input is too large, not JSON, not a JSON object, or breaks any
                event rule. No other exception escapes, whatever the input.

        """
        if isinstance(raw, bytes | bytearray | memoryview | str):
            if max_bytes is not None:
                size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
                if size > max_bytes:
                    _fail_input(
                        "max-bytes",
                        f"The event JSON is {size} bytes, above the limit of {max_bytes} bytes",
                        _head(raw),
                    )
            syntax_error: str | None
            try:
                obj = _loads(raw)
            except _JSONDecodeError as error:
                syntax_error = str(error)
            else:
                syntax_error = None
            if syntax_error is not None:
                _fail_input("json-syntax", f"The event is not valid JSON: {syntax_error}", _head(raw))
            if type(obj) is not dict:
                _fail_input(
                    "json-object", f"The event must be a JSON object, not {_json_kind(obj)}", _head(raw)
                )
            event = cls._from_mapping(obj, parsed=True)
            if event is not None:
                return event
            # Something needs a closer look (an integer out of range, deep nesting, or an integral
            # float orjson may have made out of an integer literal beyond 64 bits): parse again with
            # exact integers and run the full checks, which name the offending path.
            exact = _exact_reparse(raw)
            if type(exact) is dict:
                obj = exact
        elif isinstance(raw, Mapping):
            obj = raw
        else:
            _fail_input(
                "json-input",
                f"The event must be JSON text, bytes or a mapping, not {type(raw).__name__}",
                raw,
            )
        event = cls._from_mapping(obj, parsed=False)
        assert event is not None
        return event

    @classmethod
    def _from_mapping(cls, obj: Mapping[str, Any], *, parsed: bool) -> Self | None:
        """Validate and build; in ``parsed`` mode return ``None`` when the fast checks are not enough."""
        # Fast path: exactly the 17 attributes in wire order (what Arvo producers, TS or ours, send).
        exact_wire = len(obj) == _WIRE_KEY_COUNT and tuple(obj) == WIRE_KEY_ORDER
        if exact_wire:
            fields = _new_fields(obj.values())
        else:
            get = obj.get
            fields = _new_fields(
                (
                    get("id", _MISSING),
                    get("source", _MISSING),
                    get("specversion", _MISSING),
                    get("type", _MISSING),
                    get("subject", _MISSING),
                    get("datacontenttype", ARVO_DATA_CONTENT_TYPE),
                    get("dataschema"),
                    get("data", _MISSING),
                    get("time", _MISSING),
                    get("to"),
                    get("accesscontrol"),
                    get("redirectto"),
                    get("executionunits"),
                    get("traceparent"),
                    get("tracestate"),
                    get("parentid"),
                    get("domain"),
                )
            )
        if parsed and (
            (type(fields.data) is dict and not is_parsed_json_clean(fields.data, MAX_JSON_DEPTH))
            or not is_parsed_scalar_clean(fields.executionunits)
        ):
            return None
        problems = _validate(fields, parsed=parsed)
        extensions: dict[str, ExtensionValue] = {}
        if not exact_wire and not _is_reserved_superset(obj):
            extra = obj.keys() - RESERVED_EXTENSION_KEYS
            candidates = {key: obj[key] for key in obj if key in extra}
            if parsed and not is_parsed_json_clean(candidates, 1):
                return None
            extensions = _extension_problems(problems, candidates, parsed=parsed)
        if problems:
            _fail(problems)
        event = cls.__new__(cls)
        _set_fields(event, fields)
        _set_extensions(event, extensions)
        _set_data_schema(event, None)
        return event

    # -- immutability -----------------------------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ArvoEvent is immutable: cannot set {name!r} (use replace())")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ArvoEvent is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        return (_rebuild, (self.to_dict(),))

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ArvoEvent:
        return _rebuild(orjson.loads(self.to_json()))

    # -- attributes -------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Event id (a UUID, a developer id, or an ARVO_MANAGED compressed id, spec 1.10)."""
        return self._fields.id

    @property
    def source(self) -> str:
        """Reference of the producer (URI-encoded)."""
        return self._fields.source

    @property
    def specversion(self) -> str:
        """CloudEvents spec version, always ``"1.0"``."""
        return self._fields.specversion

    @property
    def type(self) -> str:
        """Event type (reverse-DNS, e.g. ``com.example.created``)."""
        return self._fields.type

    @property
    def subject(self) -> str:
        """Subject (URI-encoded); the orchestration subject string for orchestrations."""
        return self._fields.subject

    @property
    def datacontenttype(self) -> str:
        """Content type of the event (usually :data:`ARVO_DATA_CONTENT_TYPE`)."""
        return self._fields.datacontenttype

    @property
    def dataschema(self) -> str | None:
        """``<contract uri>/<version>`` of the data, or ``None``."""
        return self._fields.dataschema

    @property
    def data(self) -> dict[str, Any]:
        """The payload (the stored dict: do not mutate)."""
        return self._fields.data

    @property
    def time(self) -> str:
        """Creation time, RFC 3339 with offset."""
        return self._fields.time

    @property
    def to(self) -> str | None:
        """Intended consumer (routing destination)."""
        return self._fields.to

    @property
    def accesscontrol(self) -> str | None:
        """Opaque access-control string, propagated but never enforced."""
        return self._fields.accesscontrol

    @property
    def redirectto(self) -> str | None:
        """Where replies should go instead of ``source``."""
        return self._fields.redirectto

    @property
    def executionunits(self) -> int | float | None:
        """Cost metric of the execution that produced the event."""
        return self._fields.executionunits

    @property
    def traceparent(self) -> str | None:
        """W3C ``traceparent`` header of the producing span."""
        return self._fields.traceparent

    @property
    def tracestate(self) -> str | None:
        """W3C ``tracestate`` header of the producing span."""
        return self._fields.tracestate

    @property
    def parentid(self) -> str | None:
        """Id of the event that directly caused this one."""
        return self._fields.parentid

    @property
    def domain(self) -> str | None:
        """Routing domain; ``None`` is the default (local) domain."""
        return self._fields.domain

    @property
    def extensions(self) -> dict[str, ExtensionValue]:
        """The custom extensions only (a copy; Arvo and OTel attributes excluded)."""
        return dict(self._extensions)

    @property
    def cloudevent(self) -> dict[str, dict[str, Any]]:
        """The event split into CloudEvents ``default`` attributes and all ``extensions`` (spec 1.14)."""
        fields = self._fields
        return {
            "default": dict(zip(CORE_KEYS, fields[:_CORE_COUNT], strict=True)),
            "extensions": {
                **self._extensions,
                **dict(zip(_TAIL_KEYS, fields[_CORE_COUNT:], strict=True)),
            },
        }

    @property
    def otel_attributes(self) -> dict[str, str | int | float]:
        """Span attributes describing the event (spec 1.15); ``None`` values read :data:`OTEL_NULL`."""
        fields = self._fields
        executionunits = fields.executionunits
        return {
            "cloudevents.event_id": fields.id,
            "cloudevents.event_source": fields.source,
            "cloudevents.event_spec_version": fields.specversion,
            "cloudevents.event_subject": fields.subject,
            "cloudevents.event_type": fields.type,
            "cloudevents.event_time": fields.time,
            "cloudevents.event_datacontenttype": fields.datacontenttype,
            "cloudevents.event_dataschema": fields.dataschema or OTEL_NULL,
            "cloudevents.arvo.event_redirectto": fields.redirectto or OTEL_NULL,
            "cloudevents.arvo.event_to": fields.to or OTEL_NULL,
            "cloudevents.arvo.event_executionunits": OTEL_NULL if executionunits is None else executionunits,
            "cloudevents.arvo.event_parentid": fields.parentid or OTEL_NULL,
            "cloudevents.arvo.event_domain": fields.domain or OTEL_NULL,
        }

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The wire form: one flat dict in the key order of spec 1.12, every attribute present.

        ``data`` is the stored dict, not a copy.
        """
        (
            id_,
            source,
            specversion,
            type_,
            subject,
            datacontenttype,
            dataschema,
            data,
            time,
            to,
            accesscontrol,
            redirectto,
            executionunits,
            traceparent,
            tracestate,
            parentid,
            domain,
        ) = self._fields
        extensions = self._extensions
        if not extensions:
            # A dict display is the fastest way to build the 17-key dict.
            return {
                "id": id_,
                "source": source,
                "specversion": specversion,
                "type": type_,
                "subject": subject,
                "datacontenttype": datacontenttype,
                "dataschema": dataschema,
                "data": data,
                "time": time,
                "to": to,
                "accesscontrol": accesscontrol,
                "redirectto": redirectto,
                "executionunits": executionunits,
                "traceparent": traceparent,
                "tracestate": tracestate,
                "parentid": parentid,
                "domain": domain,
            }
        return {
            "id": id_,
            "source": source,
            "specversion": specversion,
            "type": type_,
            "subject": subject,
            "datacontenttype": datacontenttype,
            "dataschema": dataschema,
            "data": data,
            "time": time,
            **extensions,
            "to": to,
            "accesscontrol": accesscontrol,
            "redirectto": redirectto,
            "executionunits": executionunits,
            "traceparent": traceparent,
            "tracestate": tracestate,
            "parentid": parentid,
            "domain": domain,
        }

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict` (non-ASCII not escaped, like ``JSON.stringify``)."""
        return _dumps(self.to_dict())

    def __str__(self) -> str:
        return self.to_json().decode("utf-8")

    def __repr__(self) -> str:
        fields = self._fields
        subject = fields.subject
        return (
            f"ArvoEvent(id={fields.id!r}, type={fields.type!r}, source={fields.source!r}, "
            f"subject={subject[:40]!r}{'...' if len(subject) > 40 else ''}, "
            f"to={fields.to!r}, domain={fields.domain!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArvoEvent):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def replace(self, **changes: Any) -> ArvoEvent:
        """Return a new, validated event with some attributes changed.

        Args:
            **changes: Constructor keyword arguments to override (``extensions`` replaces all custom
                extensions).

        Returns:
            The new event.

        Raises:
            ArvoEventValidationError: The changed event breaks a rule.
            TypeError: An unknown attribute name was given.

        """
        unknown = changes.keys() - _CONSTRUCTOR_ARGS
        if unknown:
            raise TypeError(f"ArvoEvent.replace() got unknown attribute(s): {', '.join(sorted(unknown))}")
        current: dict[str, Any] = self._fields._asdict()
        current["extensions"] = self._extensions
        current.update(changes)
        return ArvoEvent(**current)


# Slot setters: the public ``__setattr__`` refuses every write, construction goes through these.
_set_fields: Callable[[ArvoEvent, _Fields], None] = ArvoEvent.__dict__["_fields"].__set__
_set_extensions: Callable[[ArvoEvent, dict[str, ExtensionValue]], None] = ArvoEvent.__dict__[
    "_extensions"
].__set__
_set_data_schema: Callable[[ArvoEvent, object | None], None] = ArvoEvent.__dict__["_data_schema"].__set__

_CONSTRUCTOR_ARGS: Final = frozenset((*WIRE_KEY_ORDER, "extensions"))


def _rebuild(wire: dict[str, Any]) -> ArvoEvent:
    return ArvoEvent.from_json(wire)


def _head(raw: bytes | bytearray | memoryview | str) -> bytes | str:
    """The first 64 characters/bytes of a document, for error messages."""
    return raw[:64] if isinstance(raw, str | bytes) else bytes(raw[:64])


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


# --------------------------------------------------------------------------------------------------
# Event ids (spec 1.10)

# JavaScript's String.prototype.trim(): WhiteSpace and LineTerminator code points.
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_surrogate = re.compile("[\ud800-\udfff]")
_base64_shape = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")


@dataclass(frozen=True, slots=True)
class EventIdSpec:
    """How :func:`create_arvo_event_id` should build an id (the original's ``id`` input)."""

    deduplication: Literal["DEVELOPER_MANAGED", "ARVO_MANAGED"]
    """``DEVELOPER_MANAGED``: use ``value`` verbatim; ``ARVO_MANAGED``: compress ``{uuid, value}``."""
    value: str
    """The developer's id (trimmed); empty or whitespace means "generate a UUID"."""


def _js_json_string(value: str) -> str:
    """``JSON.stringify`` of a string: like ``json.dumps(ensure_ascii=False)``, lone surrogates escaped."""
    text = json.dumps(value, ensure_ascii=False)
    if _surrogate.search(text) is None:
        return text
    return _surrogate.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def create_arvo_event_id(spec: EventIdSpec | None = None, *, uuid: str | None = None) -> str:
    """Build an event id (spec 1.10).

    Args:
        spec: ``None`` (or an empty/whitespace value) gives a UUID v4; ``DEVELOPER_MANAGED`` gives the
            trimmed value; ``ARVO_MANAGED`` gives base64(zlib(``{"uuid":...,"value":...}``)), unique per
            call because of the UUID.
        uuid: Use this instead of a fresh UUID v4 (deterministic ids, tests).

    Returns:
        The id.

    """
    identifier = uuid if uuid is not None else _uuid4()
    if spec is None or not isinstance(spec.value, str):
        return identifier
    value = spec.value.strip(_JS_WHITESPACE)
    if not value:
        return identifier
    if spec.deduplication == "DEVELOPER_MANAGED":
        return value
    if spec.deduplication == "ARVO_MANAGED":
        document = f'{{"uuid":{_js_json_string(identifier)},"value":{_js_json_string(value)}}}'
        return base64.b64encode(zlib.compress(document.encode("utf-8"), 6)).decode("ascii")
    return identifier


def parse_arvo_event_id(event_id: str) -> tuple[dict[str, str] | str, Exception | None]:
    """Decode an ``ARVO_MANAGED`` id; never raises.

    Decoding is bounded: at most :data:`MAX_EVENT_ID_CHARS` characters of canonical standard base64, a
    zlib stream inflating to at most 16 KiB with nothing after it, holding a JSON object with string
    ``uuid`` and ``value``.

    Args:
        event_id: The id to decode.

    Returns:
        ``({"uuid": ..., "value": ...}, None)`` on success, else ``(event_id, error)``.

    """
    try:
        return _parse_arvo_event_id(event_id), None
    except Exception as error:  # the contract is "never raises"
        return event_id, error


def _parse_arvo_event_id(event_id: str) -> dict[str, str]:
    if not isinstance(event_id, str):
        raise TypeError(f"event id must be a string, not {type(event_id).__name__}")
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise ValueError(f"event id is {len(event_id)} characters, above the limit of {MAX_EVENT_ID_CHARS}")
    if len(event_id) % 4 or _base64_shape.match(event_id) is None:
        raise ValueError(f"event id is not standard padded base64: {event_id[:80]!r}")
    try:
        compressed = base64.b64decode(event_id, validate=True)
    except binascii.Error as error:  # pragma: no cover - the shape check above already rules this out
        raise ValueError(f"event id is not valid base64: {error}") from None
    if base64.b64encode(compressed).decode("ascii") != event_id:
        raise ValueError("event id is not canonical base64")
    inflater = zlib.decompressobj(wbits=15)
    try:
        document = inflater.decompress(compressed, _MAX_EVENT_ID_JSON_BYTES)
    except zlib.error as error:
        raise ValueError(f"event id is not zlib data: {error}") from None
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise ValueError(
            f"event id does not hold one complete zlib stream of at most {_MAX_EVENT_ID_JSON_BYTES} bytes"
        )
    try:
        content = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"event id does not hold JSON: {error}") from None
    if (
        type(content) is not dict
        or not isinstance(content.get("uuid"), str)
        or not isinstance(content.get("value"), str)
    ):
        raise ValueError('event id JSON must be an object with string "uuid" and "value"')
    return {"uuid": content["uuid"], "value": content["value"]}


# --------------------------------------------------------------------------------------------------
# Timestamps (spec 1.11)


def create_timestamp(offset_hours: int = 0, *, now: datetime | None = None) -> str:
    """Current time as ``YYYY-MM-DDTHH:MM:SS.mmm+HH:00`` (true UTC shifted by ``offset_hours``).

    Args:
        offset_hours: Whole hours east of UTC, -23..23; the suffix is ``+00:00`` for 0.
        now: Use this instant instead of the clock (naive values are taken as UTC).

    Returns:
        The timestamp, millisecond precision (truncated, like JavaScript's ``Date``).

    Raises:
        ValueError: ``offset_hours`` is not an integer in -23..23.

    """
    if type(offset_hours) is not int or not -23 <= offset_hours <= 23:
        raise ValueError(f"offset_hours must be an integer in -23..23, got {offset_hours!r}")
    suffix = _OFFSET_SUFFIXES[offset_hours]
    if now is None:
        global _clock_cache  # noqa: PLW0603 - one-entry cache of the formatted second
        seconds, millis = divmod(_time_ns() // 1_000_000, 1000)
        seconds += offset_hours * 3600
        cached_seconds, prefix = _clock_cache
        if cached_seconds != seconds:
            prefix = _strftime("%Y-%m-%dT%H:%M:%S", _gmtime(seconds))
            _clock_cache = (seconds, prefix)
        return f"{prefix}.{millis:03d}{suffix}"
    instant = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    local = instant + timedelta(hours=offset_hours)
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:{local.minute:02d}:"
        f"{local.second:02d}.{local.microsecond // 1000:03d}{suffix}"
    )


_OFFSET_SUFFIXES: Final = {
    hours: f"{'-' if hours < 0 else '+'}{abs(hours):02d}:00" for hours in range(-23, 24)
}
_clock_cache: tuple[int, str] = (-1, "")
_time_ns = time_module.time_ns
_strftime = time_module.strftime
_gmtime = time_module.gmtime
_VARIANT_NIBBLE: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _uuid4() -> str:
    """A random RFC 4122 version-4 UUID string (what ``str(uuid.uuid4())`` gives, twice as fast)."""
    digits = os.urandom(16).hex()
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANT_NIBBLE[digits[16]]}{digits[17:20]}-{digits[20:]}"
    )


# --------------------------------------------------------------------------------------------------
# createArvoEvent (spec 1.9)


def _encoded(value: Any) -> Any:
    """``encodeURI`` for a string; anything else (or a lone surrogate) is left for validation to report."""
    if isinstance(value, str):
        try:
            return encode_uri(value)
        except URIError:
            return value
    return value


def create_arvo_event(
    *,
    source: str,
    type: str,
    subject: str,
    data: dict[str, Any],
    id: str | EventIdSpec | None = None,
    time: str | None = None,
    specversion: str | None = None,
    datacontenttype: str | None = None,
    dataschema: str | None = None,
    to: str | None = None,
    accesscontrol: str | None = None,
    redirectto: str | None = None,
    executionunits: float | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    parentid: str | None = None,
    domain: str | None = None,
    extensions: Mapping[str, ExtensionValue] | None = None,
) -> ArvoEvent:
    """Build an event with the original's defaults and normalisation (spec 1.9).

    ``source``, ``subject``, ``to`` (default: ``type``), ``redirectto``, ``dataschema`` and ``parentid``
    go through ``encodeURI`` (so ``"a b"`` becomes ``"a%20b"``, and ``"a%20b"`` becomes
    ``"a%2520b"``, as in the original); empty ``redirectto``/``dataschema``/``parentid`` become
    ``None``. ``domain`` is not encoded.

    Args:
        source: Producer reference.
        type: Event type.
        subject: Subject.
        data: JSON object payload.
        id: A ``str`` is used verbatim; an :class:`EventIdSpec` goes through
            :func:`create_arvo_event_id`; ``None`` gives a UUID v4.
        time: Default :func:`create_timestamp`.
        specversion: Default ``"1.0"``.
        datacontenttype: Default :data:`ARVO_DATA_CONTENT_TYPE`.
        dataschema: Optional data schema URI.
        to: Destination; defaults to ``type``.
        accesscontrol: Optional access-control string.
        redirectto: Optional reply destination.
        executionunits: Optional cost metric.
        traceparent: Explicit W3C ``traceparent`` (this module reads no OpenTelemetry context).
        tracestate: Explicit W3C ``tracestate``.
        parentid: Id of the causing event.
        domain: Routing domain.
        extensions: Custom extension attributes.

    Returns:
        The validated event.

    Raises:
        ArvoEventValidationError: Any rule is broken (including a lone surrogate in an encoded field).

    """
    if id is None:
        event_id: Any = _uuid4()
    elif isinstance(id, EventIdSpec):
        event_id = create_arvo_event_id(id)
    else:
        event_id = id
    return ArvoEvent(
        id=event_id,
        source=_encoded(source),
        type=type,
        subject=_encoded(subject),
        data=data,
        time=create_timestamp() if time is None else time,
        specversion="1.0" if specversion is None else specversion,
        datacontenttype=ARVO_DATA_CONTENT_TYPE if datacontenttype is None else datacontenttype,
        dataschema=_encoded(dataschema) if dataschema else None,
        to=_encoded(to) if to else _encoded(type),
        accesscontrol=accesscontrol,
        redirectto=_encoded(redirectto) if redirectto else None,
        executionunits=executionunits,
        traceparent=traceparent,
        tracestate=tracestate,
        parentid=_encoded(parentid) if parentid else None,
        domain=domain,
        extensions=extensions,
    )


# --------------------------------------------------------------------------------------------------
# Events the engine builds itself (the trusted path)

_class_of = type
_new_event = object.__new__
_SAFE_INT: Final = 2**53 - 1
_isfinite = math.isfinite
_verify_engine_events = False
"""Tests set this: every :func:`engine_event` is also built by :func:`create_arvo_event` and compared."""


def _is_plain_uri(value: object) -> bool:
    """A non-empty string ``encodeURI`` leaves unchanged, hence a valid URI as it is."""
    return _class_of(value) is str and _uri_fast(value) is not None


def engine_event(
    *,
    id: str,
    source: str,
    type: str,
    subject: str,
    data: dict[str, Any],
    dataschema: str | None,
    to: str | None,
    parentid: str | None,
    domain: str | None,
    accesscontrol: str | None = None,
    redirectto: str | None = None,
    executionunits: float | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    time: str | None = None,
    extensions: Mapping[str, ExtensionValue] | None = None,
    data_schema: object | None = None,
) -> ArvoEvent:
    """:func:`create_arvo_event` for an event the engine emits, without re-validating what it built.

    The result is the event ``create_arvo_event`` returns for the same arguments (the same
    ``encodeURI`` normalisation, defaults and wire form; the same error when a value is invalid).
    What the engine derived itself is taken as it is: ``source`` (the emitting handler's own source,
    a validated type-format name), ``specversion``, ``datacontenttype``, a generated ``time``, and
    ``traceparent``/``tracestate`` (the handler span's headers). Every value a user's code can supply
    gets the cheap form of its rule: ``id``, ``type``, ``data`` (a JSON object: safe integers, finite
    numbers, UTF-8 strings), ``to``, ``accesscontrol``, ``redirectto``, ``executionunits``, ``domain``,
    ``time`` when given, ``extensions``; ``subject``, ``dataschema``, ``parentid``, ``to`` and
    ``redirectto`` must be strings ``encodeURI`` leaves unchanged. A value that does not pass takes the
    full path (:func:`create_arvo_event`), which normalises it or raises exactly as before.

    Not for data from outside the process: events consumed from a broker are decoded with
    :meth:`ArvoEvent.from_json`, and the public constructors validate every field.

    Args:
        id: The event id (the engine's derived UUID, or the id a handler asked for).
        source: The emitting handler's source.
        type: The event type.
        subject: The subject.
        data: The payload (usually the contract's validated, JSON-ready copy).
        dataschema: ``<contract uri>/<version>`` or ``None``.
        to: The destination; ``None`` or empty means ``type``.
        parentid: The id of the causing event.
        domain: The resolved domain.
        accesscontrol: Propagated access-control string.
        redirectto: Where replies should go.
        executionunits: The cost metric.
        traceparent: W3C ``traceparent`` of the emitting span.
        tracestate: W3C ``tracestate`` of the emitting span.
        time: The event time; default now (:func:`create_timestamp`).
        extensions: Custom extension attributes.
        data_schema: The contract schema ``data`` was validated and stripped by (see
            :func:`data_schema_of`), ``None`` when it was not.

    Returns:
        The event.

    Raises:
        ArvoEventValidationError: A value breaks a rule (as :func:`create_arvo_event` raises it).

    """
    stamped = create_timestamp() if time is None else time
    target = to or type
    ordered: dict[str, ExtensionValue] = {}
    unusual = False
    if extensions:
        if isinstance(extensions, Mapping):
            problems: list[ValidationProblem] = []
            ordered = _extension_problems(problems, extensions, parsed=False)
            unusual = bool(problems)
        else:
            unusual = True
    if (
        unusual
        or not (_class_of(id) is str and id and id.isascii())
        or not (_class_of(type) is str and _type_match(type) is not None)
        or not _is_plain_uri(subject)
        or not _is_plain_uri(target)
        or (dataschema and not _is_plain_uri(dataschema))
        or (redirectto and not _is_plain_uri(redirectto))
        or (parentid and not _is_plain_uri(parentid))
        or (time is not None and not (_class_of(time) is str and _time_match(time) is not None))
        or (
            accesscontrol is not None
            and not (_class_of(accesscontrol) is str and accesscontrol and accesscontrol.isascii())
        )
        or (
            executionunits is not None
            and not (
                (_class_of(executionunits) is float and _isfinite(executionunits))
                or (_class_of(executionunits) is int and -_SAFE_INT <= executionunits <= _SAFE_INT)
            )
        )
        or (domain is not None and not (_class_of(domain) is str and _domain_match(domain) is not None))
        or not is_json_object_clean(data)
    ):
        return create_arvo_event(
            id=id,
            source=source,
            type=type,
            subject=subject,
            data=data,
            time=stamped,
            dataschema=dataschema,
            to=to,
            accesscontrol=accesscontrol,
            redirectto=redirectto,
            executionunits=executionunits,
            traceparent=traceparent,
            tracestate=tracestate,
            parentid=parentid,
            domain=domain,
            extensions=extensions,
        )
    event = _new_event(ArvoEvent)
    _set_fields(
        event,
        _new_fields(
            (
                id,
                source,
                "1.0",
                type,
                subject,
                ARVO_DATA_CONTENT_TYPE,
                dataschema or None,
                data,
                stamped,
                target,
                accesscontrol,
                redirectto or None,
                executionunits,
                traceparent,
                tracestate,
                parentid or None,
                domain,
            )
        ),
    )
    _set_extensions(event, ordered)
    _set_data_schema(event, data_schema)
    if _verify_engine_events:
        _verify_engine_event(
            event,
            id=id,
            source=source,
            type=type,
            subject=subject,
            data=data,
            time=stamped,
            dataschema=dataschema,
            to=to,
            accesscontrol=accesscontrol,
            redirectto=redirectto,
            executionunits=executionunits,
            traceparent=traceparent,
            tracestate=tracestate,
            parentid=parentid,
            domain=domain,
            extensions=extensions,
        )
    return event


def _verify_engine_event(event: ArvoEvent, **arguments: Any) -> None:
    """Check ``event`` against what the validating path builds from the same arguments (tests)."""
    expected = create_arvo_event(**arguments)
    if expected.to_json() != event.to_json() or expected.extensions != event.extensions:
        raise AssertionError(
            f"engine_event differs from create_arvo_event:\n{event.to_json()!r}\n{expected.to_json()!r}"
        )


def data_schema_of(event: ArvoEvent) -> object | None:
    """The contract schema the event's ``data`` was validated and stripped by in this process, if any.

    Set by the engine's emitters and the event factories (the data *is* that schema's output);
    ``None`` for events decoded from the wire or built by the public constructors. A handler that
    would validate ``data`` against the very same schema object again skips it.
    """
    return event._data_schema


def mark_data_schema(event: ArvoEvent, schema: object) -> None:
    """Record that ``event.data`` is the output of ``schema``'s validation (see :func:`data_schema_of`)."""
    _set_data_schema(event, schema)
