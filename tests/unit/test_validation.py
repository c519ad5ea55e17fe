"""Format regexes and JSON-data checks shared by events, contracts and subjects."""

from __future__ import annotations

import enum
import math
import re
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.arvo.validation import (
    DATETIME_PATTERN,
    DOMAIN_PATTERN,
    EXTENSION_KEY_PATTERN,
    MAX_JSON_DEPTH,
    MAX_SAFE_INTEGER,
    SEMVER_PATTERN,
    TYPE_PATTERN,
    TYPE_RE,
    is_json_number,
    is_parsed_json_clean,
    is_parsed_scalar_clean,
    is_safe_integer,
    is_valid_datetime,
    is_valid_domain,
    is_valid_extension_key,
    is_valid_semver,
    is_valid_type,
    json_object_problems,
    json_value_problems,
    make_problem,
    number_problem,
    string_problem,
)


def test_patterns_are_the_original_javascript_sources() -> None:
    assert TYPE_PATTERN == r"^[a-z0-9]+(\.[a-z0-9]+)+\.[a-z0-9]+$"
    assert DOMAIN_PATTERN == r"^[a-z0-9.]+$"
    assert EXTENSION_KEY_PATTERN == r"^[a-z0-9]+$"
    assert SEMVER_PATTERN == r"^\d+\.\d+\.\d+$"


@pytest.mark.parametrize(
    "value",
    ["com.hello.world", "evt.value.read.success", "sys.com.hello.world.error", "arvo.orc.inc", "a.b.c"],
)
def test_type_with_three_or_more_lowercase_segments_is_valid(value: str) -> None:
    assert is_valid_type(value)


@pytest.mark.parametrize(
    "value",
    [
        "com.test",
        "com.Test.x",
        "com..test.x",
        ".com.test.x",
        "com.test.x.",
        "com-a.b.c",
        "com_a.b.c",
        "",
        "a b.c.d",
    ],
)
def test_type_with_fewer_segments_or_other_characters_is_invalid(value: str) -> None:
    assert not is_valid_type(value)


def test_regexes_do_not_accept_a_trailing_newline_unlike_python_dollar() -> None:
    assert re.match(TYPE_PATTERN, "com.a.b\n")  # what a naive port would accept
    assert not is_valid_type("com.a.b\n")
    assert not TYPE_RE.match("com.a.b\n")
    assert not is_valid_domain("a.b\n")
    assert not is_valid_extension_key("abc\n")
    assert not is_valid_semver("1.0.0\n")
    assert not is_valid_datetime("2023-05-01T12:00:00Z\n")


def test_regex_digits_are_ascii_only_like_javascript() -> None:
    assert not is_valid_semver("١.٢.٣")
    assert not is_valid_datetime("٢٠٢٣-05-01T12:00:00Z")


def test_predicates_reject_non_strings() -> None:
    for predicate in (
        is_valid_type,
        is_valid_domain,
        is_valid_extension_key,
        is_valid_semver,
        is_valid_datetime,
    ):
        assert not predicate(None)
        assert not predicate(123)


def test_domain_allows_lowercase_digits_and_dots_only() -> None:
    assert is_valid_domain("test.domain")
    assert is_valid_domain("a1")
    assert not is_valid_domain("test.test.TEST")
    assert not is_valid_domain("")
    assert not is_valid_domain("a-b")


def test_extension_key_allows_lowercase_letters_and_digits_only() -> None:
    assert is_valid_extension_key("custom")
    assert is_valid_extension_key("123")
    assert not is_valid_extension_key("Custom")
    assert not is_valid_extension_key("my_key")
    assert not is_valid_extension_key("")


def test_semver_needs_three_numeric_parts() -> None:
    assert is_valid_semver("0.0.0")
    assert is_valid_semver("10.20.300")
    assert not is_valid_semver("1.0")
    assert not is_valid_semver("1.0.0-beta")
    assert not is_valid_semver("v1.0.0")


@pytest.mark.parametrize(
    "value",
    [
        "2023-05-01T12:00:00Z",
        "2023-05-01T12:00Z",
        "2023-05-01T12:00:00.123456789+10:00",
        "2023-05-01T12:00:00+1000",
        "2024-02-29T12:00:00Z",
        "2000-02-29T00:00:00Z",
        "2025-01-01T00:00:00.000+00:00",
        "2023-12-31T23:59:59.999-05:30",
    ],
)
def test_datetime_examples_accepted_by_zod(value: str) -> None:
    assert is_valid_datetime(value)


@pytest.mark.parametrize(
    "value",
    [
        "2023-05-01T12:00:00+10",
        "2023-02-29T12:00:00Z",
        "1900-02-29T12:00:00Z",
        "2023-05-01 12:00:00Z",
        "2023-05-01T12:00:00",
        "2023-05-01T24:00:00Z",
        "2023-05-01T12:00:60Z",
        "2023-05-01t12:00:00Z",
        "2023-05-01T12:00:00z",
        "2023-04-31T12:00:00Z",
        "2023-05-01T12:00:00.Z",
        "",
    ],
)
def test_datetime_examples_rejected_by_zod(value: str) -> None:
    assert not is_valid_datetime(value)


def test_datetime_pattern_is_the_zod_regex_literally() -> None:
    assert DATETIME_PATTERN.startswith("^((\\d\\d[2468][048]|")
    assert DATETIME_PATTERN.endswith(
        "T([01]\\d|2[0-3]):[0-5]\\d(:[0-5]\\d(\\.\\d+)?)?(Z|([+-]\\d{2}:?\\d{2}))$"
    )


def test_safe_integer_bounds_are_javascripts() -> None:
    assert MAX_SAFE_INTEGER == 9007199254740991
    assert is_safe_integer(MAX_SAFE_INTEGER)
    assert is_safe_integer(-MAX_SAFE_INTEGER)
    assert not is_safe_integer(MAX_SAFE_INTEGER + 1)
    assert not is_safe_integer(True)
    assert not is_safe_integer(1.0)


def test_json_number_is_a_safe_int_or_a_finite_float_but_not_a_bool() -> None:
    assert is_json_number(1)
    assert is_json_number(-0.5)
    assert not is_json_number(True)
    assert not is_json_number(math.nan)
    assert not is_json_number(math.inf)
    assert not is_json_number(2**53)
    assert not is_json_number("1")


def test_number_problem_names_the_rule_broken() -> None:
    assert number_problem(1.5, "x") is None
    assert number_problem(3, "x") is None
    problem = number_problem(True, "executionunits", label="Execution units")
    assert problem is not None
    assert (problem.path, problem.rule) == ("executionunits", "number")
    assert "Execution units must be a number, not bool" in problem.message
    nan = number_problem(math.nan, "x")
    assert nan is not None
    assert nan.rule == "finite-number"
    inf = number_problem(-math.inf, "x")
    assert inf is not None
    assert inf.rule == "finite-number"
    big = number_problem(2**53, "x")
    assert big is not None
    assert big.rule == "safe-integer"
    assert big.value == "9007199254740992"


def test_number_problem_rejects_float_subclasses_orjson_cannot_write() -> None:
    class MyFloat(float):
        pass

    problem = number_problem(MyFloat(1.5), "x")
    assert problem is not None
    assert "plain float" in problem.message


def test_string_problem_flags_lone_surrogates_only() -> None:
    assert string_problem("héllo 😀", "x") is None
    problem = string_problem("a\udc80", "data.name")
    assert problem is not None
    assert problem.rule == "utf8"
    assert "U+DC80 at index 1" in problem.message


def test_make_problem_truncates_the_value_repr() -> None:
    problem = make_problem("p", "r", "m", "x" * 500)
    assert len(problem.value) <= 80
    assert str(problem).startswith("p: m (rule=r, value='xxx")


def test_json_object_accepts_nested_json_values() -> None:
    data: dict[str, object] = {"a": None, "b": True, "c": 1, "d": 1.5, "e": "é", "f": [1, {"g": []}], "h": {}}
    assert json_object_problems(data) == []


@pytest.mark.parametrize("value", [[1, 2], None, "text", 3, (1,)])
def test_json_object_rejects_non_objects_with_the_original_message(value: object) -> None:
    [problem] = json_object_problems(value)
    assert problem.path == "data"
    assert problem.rule == "json-object"
    assert "The Arvo data object must be a JSON serializable object" in problem.message


def test_json_object_problem_paths_name_the_offending_element() -> None:
    data = {"items": [{"count": 1}, {"count": 2}, {"count": math.nan}]}
    [problem] = json_object_problems(data)
    assert problem.path == "data.items[2].count"
    assert problem.rule == "finite-number"


def test_json_object_collects_every_problem() -> None:
    data = {
        "nan": math.nan,
        "inf": math.inf,
        "big": -(2**60),
        "obj": object(),
        "tuple": (1, 2),
        "set": {1},
        "bytes": b"x",
        "surrogate": "\ud800",
        1: "int key",
        "odd key": [math.inf],
    }
    problems = json_object_problems(data)
    assert {(p.path, p.rule) for p in problems} == {
        ("data.nan", "finite-number"),
        ("data.inf", "finite-number"),
        ("data.big", "safe-integer"),
        ("data.obj", "json-value"),
        ("data.tuple", "json-value"),
        ("data.set", "json-value"),
        ("data.bytes", "json-value"),
        ("data.surrogate", "utf8"),
        ("data[1]", "json-key"),
        ("data['odd key'][0]", "finite-number"),
    }


def test_json_object_flags_a_surrogate_in_a_key() -> None:
    [problem] = json_object_problems({"k\ud800": 1})
    assert problem.rule == "utf8"


def test_json_object_accepts_subclasses_orjson_can_write() -> None:
    class Colour(enum.StrEnum):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 2

    assert json_object_problems({"c": Colour.RED, "s": Size.BIG, "o": OrderedDict(a=1)}) == []


def _nested(levels: int) -> dict[str, object]:
    data: dict[str, object] = {}
    current = data
    for _ in range(levels - 1):
        child: dict[str, object] = {}
        current["x"] = child
        current = child
    return data


def test_json_object_allows_max_depth_nested_containers() -> None:
    assert json_object_problems(_nested(MAX_JSON_DEPTH)) == []


def test_json_object_rejects_deeper_nesting_once() -> None:
    [problem] = json_object_problems(_nested(MAX_JSON_DEPTH + 1))
    assert problem.rule == "max-depth"
    assert problem.path.startswith("data.x.x")


def test_json_value_problems_checks_any_value() -> None:
    assert json_value_problems("x", "v") == []
    assert json_value_problems([1, [2]], "v", max_depth=2) == []
    [problem] = json_value_problems([1, [2, [3]]], "v", max_depth=2)
    assert (problem.path, problem.rule) == ("v[1][1]", "max-depth")


def test_parsed_json_clean_checks_int_range_and_depth_only() -> None:
    assert is_parsed_json_clean({"a": [1, "x", None, True, 1.5, {"b": MAX_SAFE_INTEGER}]})
    assert not is_parsed_json_clean({"a": [2**53]})
    assert not is_parsed_json_clean(_nested(MAX_JSON_DEPTH + 1))
    assert is_parsed_json_clean(_nested(MAX_JSON_DEPTH))


def test_parsed_json_clean_flags_integral_floats_beyond_64_bits_for_an_exact_reparse() -> None:
    assert not is_parsed_json_clean({"a": 1.8446744073709552e19})
    assert is_parsed_json_clean({"a": 1.25, "b": -9.0e18})
    assert not is_parsed_json_clean({"a": -1e300})  # every float that large is integral: re-parsed
    assert not is_parsed_scalar_clean(1e20)
    assert is_parsed_scalar_clean(9.0e18)  # below 2**63: orjson keeps such literals as ints
    assert is_parsed_scalar_clean(0.1)
    assert is_parsed_scalar_clean("x")
    assert is_parsed_scalar_clean(None)
    assert not is_parsed_scalar_clean(2**60)


def test_json_object_reports_only_the_bad_values_next_to_good_ones() -> None:
    [problem] = json_object_problems({"a": None, "b": True, "c": "x", "d": math.nan})
    assert problem.path == "data.d"


def test_json_object_accepts_a_dict_subclass_at_the_top() -> None:
    assert json_object_problems(OrderedDict(a=1)) == []


def test_problem_values_are_bounded_for_deep_huge_and_broken_values() -> None:
    from service.arvo.validation import describe_value

    deep: list[object] = []
    current = deep
    for _ in range(5000):
        child: list[object] = []
        current.append(child)
        current = child
    assert describe_value(deep) == "[[[[...]]]]"
    assert describe_value(10**5000).startswith("<int of ")
    assert describe_value(-(2**60)) == "-1152921504606846976"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert describe_value(Broken()).startswith("<Broken instance at ")
    assert len(describe_value("x" * 1000)) == 80
    assert len(describe_value(list(range(1000)))) <= 80


def test_json_object_reports_an_integer_too_large_to_format() -> None:
    [problem] = json_object_problems({"n": 10**5000})
    assert problem.rule == "safe-integer"
    assert problem.value.startswith("<int of ")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab09.A-_\n", max_size=12))
def test_type_regex_accepts_exactly_the_language_of_the_javascript_pattern(value: str) -> None:
    javascript = re.fullmatch(TYPE_PATTERN[1:-1], value, re.ASCII) is not None
    assert is_valid_type(value) == javascript
