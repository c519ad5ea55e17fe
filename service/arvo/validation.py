r"""Format rules shared by events, contracts and subjects, and the JSON-data checks (spec 1.3-1.6, App. C).

The regexes behave like their JavaScript originals: they are ASCII-only (``\d`` is ``[0-9]``) and the
final ``$`` is compiled as ``\Z`` so a trailing newline does not match (Python's ``$`` would accept
``"com.a.b\n"``). The ``*_PATTERN`` strings keep the original JavaScript sources, for JSON Schema and
pydantic ``pattern=`` (which anchor the same way).

The JSON checks return lists of :class:`~service.arvo.errors.ValidationProblem` so callers can collect
every problem of an input before raising. Rules enforced on event data (spec 1.5, PORT):

* a ``dict`` with ``str`` keys whose values are ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``
  or ``dict``, recursively;
* no NaN or +/-Infinity (JavaScript would silently write ``null``);
* integers within +/-(2**53 - 1), the range a JavaScript number holds exactly;
* strings encodable as UTF-8 (no lone surrogates);
* at most :data:`MAX_JSON_DEPTH` nested containers.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable
from typing import Any, Final

from service.arvo.errors import ValidationProblem, truncate_value

__all__ = [
    "DATETIME_PATTERN",
    "DATETIME_RE",
    "DOMAIN_PATTERN",
    "DOMAIN_RE",
    "EXTENSION_KEY_PATTERN",
    "EXTENSION_KEY_RE",
    "MAX_JSON_DEPTH",
    "MAX_SAFE_INTEGER",
    "SEMVER_PATTERN",
    "SEMVER_RE",
    "TYPE_PATTERN",
    "TYPE_RE",
    "describe_value",
    "is_json_number",
    "is_json_object_clean",
    "is_parsed_json_clean",
    "is_parsed_scalar_clean",
    "is_safe_integer",
    "is_valid_datetime",
    "is_valid_domain",
    "is_valid_extension_key",
    "is_valid_semver",
    "is_valid_type",
    "json_object_problems",
    "json_value_problems",
    "make_problem",
    "number_problem",
    "string_problem",
]

TYPE_PATTERN: Final = r"^[a-z0-9]+(\.[a-z0-9]+)+\.[a-z0-9]+$"
"""Event types, contract types, orchestrator names, initiators: >= 3 dot-separated ``[a-z0-9]+``."""
DOMAIN_PATTERN: Final = r"^[a-z0-9.]+$"
"""Event and execution domains."""
EXTENSION_KEY_PATTERN: Final = r"^[a-z0-9]+$"
"""CloudEvents extension attribute names."""
SEMVER_PATTERN: Final = r"^\d+\.\d+\.\d+$"
"""Contract versions (``0.0.0`` is the wildcard)."""
_DATE_SOURCE = (
    r"((\d\d[2468][048]|\d\d[13579][26]|\d\d0[48]|[02468][048]00|[13579][26]00)-02-29"
    r"|\d{4}-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)|(02)-(0[1-9]|1\d|2[0-8])))"
)
DATETIME_PATTERN: Final = (
    rf"^{_DATE_SOURCE}T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|([+-]\d{{2}}:?\d{{2}}))$"
)
"""zod 3.25 ``z.string().datetime({offset: true})``, literally (spec 1.4)."""

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""JavaScript's ``Number.MAX_SAFE_INTEGER``: larger integers lose precision in TypeScript consumers."""
MAX_JSON_DEPTH: Final = 64
"""Maximum number of nested containers in event data (the data object itself counts as one)."""


def _js_regex(pattern: str) -> re.Pattern[str]:
    r"""Compile a JavaScript ``^...$`` source with JavaScript's anchoring and ASCII ``\d``."""
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z", re.ASCII)


# Same language as TYPE_PATTERN (>= 3 dot-separated segments) without its backtracking: 2-3x faster.
TYPE_RE: Final = re.compile(r"[a-z0-9]++(?:\.[a-z0-9]++){2,}+\Z", re.ASCII)
DOMAIN_RE: Final = _js_regex(DOMAIN_PATTERN)
EXTENSION_KEY_RE: Final = _js_regex(EXTENSION_KEY_PATTERN)
SEMVER_RE: Final = _js_regex(SEMVER_PATTERN)
DATETIME_RE: Final = _js_regex(DATETIME_PATTERN)


def _predicate(regex: re.Pattern[str]) -> Callable[[object], bool]:
    match = regex.match

    def check(value: object) -> bool:
        return isinstance(value, str) and match(value) is not None

    return check


is_valid_type: Callable[[object], bool] = _predicate(TYPE_RE)
"""Whether a value is a ``str`` matching :data:`TYPE_PATTERN`."""
is_valid_domain: Callable[[object], bool] = _predicate(DOMAIN_RE)
"""Whether a value is a ``str`` matching :data:`DOMAIN_PATTERN`."""
is_valid_extension_key: Callable[[object], bool] = _predicate(EXTENSION_KEY_RE)
"""Whether a value is a ``str`` matching :data:`EXTENSION_KEY_PATTERN`."""
is_valid_semver: Callable[[object], bool] = _predicate(SEMVER_RE)
"""Whether a value is a ``str`` matching :data:`SEMVER_PATTERN`."""
is_valid_datetime: Callable[[object], bool] = _predicate(DATETIME_RE)
"""Whether a value is a ``str`` matching :data:`DATETIME_PATTERN` (RFC 3339 with offset, zod rules)."""


_MAX_VALUE_CHARS: Final = 80
_short_repr = reprlib.Repr()
_short_repr.maxlevel = 3
_short_repr.maxstring = _MAX_VALUE_CHARS
_short_repr.maxother = _MAX_VALUE_CHARS


def describe_value(value: object) -> str:
    """A bounded ``repr`` of ``value`` for error messages (at most 80 characters).

    Unlike plain ``repr`` it never recurses deeply (a 1000-level list would overflow the stack), never
    formats a huge integer in full, and never raises, whatever ``__repr__`` does.
    """
    if value is None or isinstance(value, str | bytes | bool | float):
        return truncate_value(value, _MAX_VALUE_CHARS)
    if isinstance(value, int):
        try:
            return truncate_value(value, _MAX_VALUE_CHARS)
        except ValueError:  # more digits than Python agrees to format
            return f"<int of {value.bit_length()} bits>"
    # reprlib bounds depth and width, and falls back to "<Type instance at ...>" when __repr__ raises.
    text = _short_repr.repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def make_problem(path: str, rule: str, message: str, value: object) -> ValidationProblem:
    """Build a :class:`ValidationProblem` with a bounded description of ``value``."""
    return ValidationProblem(path=path, rule=rule, message=message, value=describe_value(value))


def is_safe_integer(value: object) -> bool:
    """Whether ``value`` is an ``int`` (not ``bool``) within +/-(2**53 - 1)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    )


def is_json_number(value: object) -> bool:
    """Whether ``value`` is a number JSON and JavaScript carry exactly: a safe int or a finite float."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    return isinstance(value, float) and math.isfinite(value)


def number_problem(value: object, path: str, *, label: str = "Value") -> ValidationProblem | None:
    """Check that ``value`` is a JSON number (``bool`` is not a number).

    Args:
        value: The candidate.
        path: Where it sits, for the problem (``executionunits``, ``data.items[2].count``).
        label: How the message names the value.

    Returns:
        ``None`` if the value is fine, else the problem.

    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return make_problem(path, "number", f"{label} must be a number, not {type(value).__name__}", value)
    if isinstance(value, float):
        if type(value) is not float:
            # orjson cannot serialise float subclasses (numpy.float64...): refuse them here, not at send time.
            return make_problem(
                path,
                "number",
                f"{label} must be a plain float, not {type(value).__name__} (convert it with float())",
                value,
            )
        if not math.isfinite(value):
            return make_problem(
                path, "finite-number", f"{label} must be a finite number (JSON has no NaN or Infinity)", value
            )
        return None
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return make_problem(
            path,
            "safe-integer",
            f"{label} must be an integer within +/-(2**53 - 1) (JavaScript loses precision beyond)",
            value,
        )
    return None


def string_problem(value: str, path: str, *, label: str = "Value") -> ValidationProblem | None:
    """Check that a ``str`` can be written as UTF-8 JSON (no lone surrogates)."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return make_problem(
            path,
            "utf8",
            f"{label} must not contain lone surrogates"
            f" (U+{ord(value[error.start]):04X} at index {error.start})",
            value,
        )
    return None


_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


def _child_path(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{truncate_value(key)}]"


_SCALARS: Final = (str, int, float, bool, type(None))
_MAX_SAFE: Final = MAX_SAFE_INTEGER
_MIN_SAFE: Final = -MAX_SAFE_INTEGER


def _collect(value: object, path: str, depth: int, max_depth: int, problems: list[ValidationProblem]) -> None:
    """Append every problem of a JSON value (full checks, for values not produced by a JSON parser)."""
    if isinstance(value, str):
        problem = string_problem(value, path)
        if problem is not None:
            problems.append(problem)
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int | float):
        problem = number_problem(value, path)
        if problem is not None:
            problems.append(problem)
        return
    if isinstance(value, dict | list):
        if depth >= max_depth:
            problems.append(
                make_problem(
                    path, "max-depth", f"Value nests more than {max_depth} levels of objects/arrays", value
                )
            )
            return
        if isinstance(value, dict):
            for key, item in value.items():
                child = _child_path(path, key)
                if not isinstance(key, str):
                    problems.append(make_problem(child, "json-key", "Object keys must be strings", key))
                    continue
                key_problem = string_problem(key, child, label="Object key")
                if key_problem is not None:
                    problems.append(key_problem)
                _collect(item, child, depth + 1, max_depth, problems)
        else:
            for index, item in enumerate(value):
                _collect(item, f"{path}[{index}]", depth + 1, max_depth, problems)
        return
    problems.append(
        make_problem(
            path,
            "json-value",
            "Value must be null, a boolean, a number, a string, a list or a dict (JSON), "
            f"not {type(value).__name__}",
            value,
        )
    )


def json_value_problems(
    value: object, path: str, *, max_depth: int = MAX_JSON_DEPTH, depth: int = 0
) -> list[ValidationProblem]:
    """Every problem of a JSON value built in Python.

    Args:
        value: The value to check.
        path: Its location, used as prefix of every problem path.
        max_depth: Maximum number of nested containers, counting ``value`` itself.
        depth: Containers already around ``value``.

    Returns:
        The problems, empty if the value is fine.

    """
    problems: list[ValidationProblem] = []
    _collect(value, path, depth, max_depth, problems)
    return problems


def json_object_problems(
    value: object,
    path: str = "data",
    *,
    max_depth: int = MAX_JSON_DEPTH,
    message: str = "The Arvo data object must be a JSON serializable object",
) -> list[ValidationProblem]:
    """Every problem of a JSON *object* (event ``data``): a ``dict`` with ``str`` keys and JSON values.

    Args:
        value: The candidate object.
        path: Its location (``data``).
        max_depth: Maximum number of nested containers, counting ``value`` itself.
        message: The message used when ``value`` is not a ``dict`` at all.

    Returns:
        The problems, empty if the value is fine.

    """
    if not isinstance(value, dict):
        return [make_problem(path, "json-object", f"{message} (got {type(value).__name__})", value)]
    if _is_clean(value, 1, max_depth):
        return []
    problems: list[ValidationProblem] = []
    _collect(value, path, 0, max_depth, problems)
    return problems


def is_json_object_clean(value: object, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` is event data without any problem: the boolean form of :func:`json_object_problems`.

    ``False`` does not always mean a problem (a ``dict`` subclass or a ``StrEnum`` value is only
    judged by the full check): callers then run :func:`json_object_problems`.
    """
    return type(value) is dict and _is_clean(value, 1, max_depth)


def _is_clean(container: Any, depth: int, max_depth: int) -> bool:
    """Fast boolean form of :func:`_collect` for the common, valid case (full checks)."""
    if depth > max_depth:
        return False
    values: Any
    if type(container) is dict:
        for key in container:
            if type(key) is not str or (not key.isascii() and string_problem(key, "") is not None):
                return False
        values = container.values()
    elif type(container) is list:
        values = container
    else:
        return False
    for item in values:
        kind = type(item)
        if kind is str:
            if not item.isascii() and string_problem(item, "") is not None:
                return False
        elif kind is int:
            if not _MIN_SAFE <= item <= _MAX_SAFE:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict or kind is list:
            if not _is_clean(item, depth + 1, max_depth):
                return False
        elif kind is not bool and item is not None:
            # Subclasses (StrEnum, OrderedDict...) and foreign types: let the full check decide.
            return False
    return True


# A float this large and integral may be an integer literal beyond 64 bits that orjson turned into a float.
_SUSPECT_FLOAT: Final = 2.0**63


def is_parsed_json_clean(value: dict[str, Any] | list[Any], max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Fast check of a container produced by ``orjson.loads``.

    The parser already guarantees ``str`` keys, valid UTF-8 and no NaN/Infinity, so only integer range
    and nesting depth are checked. Integral floats of magnitude >= 2**63 also fail the check, because
    orjson turns integer literals beyond 64 bits into floats: the caller re-parses exactly to tell an
    integer literal (rejected) from a genuine float (accepted).

    Args:
        value: The parsed container; it counts as one level.
        max_depth: Maximum number of nested containers.

    Returns:
        ``True`` if nothing needs a closer look.

    """
    return _is_parsed_clean(value, 1, max_depth)


def is_parsed_scalar_clean(value: Any) -> bool:
    """:func:`is_parsed_json_clean` for one parsed scalar: not an unsafe int, not a suspect float."""
    kind = type(value)
    if kind is int:
        return bool(_MIN_SAFE <= value <= _MAX_SAFE)
    if kind is float:
        return not (abs(value) >= _SUSPECT_FLOAT and value.is_integer())
    return True


def _is_parsed_clean(container: Any, depth: int, max_depth: int) -> bool:
    if depth > max_depth:
        return False
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if kind is str:
            continue
        if kind is int:
            if not _MIN_SAFE <= item <= _MAX_SAFE:
                return False
        elif kind is dict or kind is list:
            if not _is_parsed_clean(item, depth + 1, max_depth):
                return False
        elif kind is float and abs(item) >= _SUSPECT_FLOAT and item.is_integer():
            return False
    return True
