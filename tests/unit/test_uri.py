"""JavaScript-exact encodeURI/decodeURI and the URI-validity predicate (spec 1.2, Appendix B)."""

from __future__ import annotations

import pytest

from service.arvo.uri import (
    RESERVED_CHARS,
    UNESCAPED_CHARS,
    URIError,
    decode_uri,
    encode_uri,
    is_uri_valid,
    uri_problem,
)

# Every row of the table in spec 1.2 (verified against Node 20).
VALID_TABLE = [
    "#/test/handler/increment",
    "http://x.com/?q=1&r=2#f",
    "a'b",
    "eJw+/=",
    "a%20b",
    "%C3%A9",
]
INVALID_TABLE = [
    "a b",
    "é",
    'a"b',
    "a\\b",
    "a^b",
    "a`b",
    "a{b}",
    "a|b",
    "a[b]",
    "a%41",
    "a%2F",
    "a%2f",
    "%c3%a9",
    "a%",
]


@pytest.mark.parametrize("value", VALID_TABLE)
def test_spec_table_rows_that_are_uri_valid(value: str) -> None:
    assert is_uri_valid(value)
    assert uri_problem(value) is None


@pytest.mark.parametrize("value", INVALID_TABLE)
def test_spec_table_rows_that_are_not_uri_valid(value: str) -> None:
    assert not is_uri_valid(value)
    assert uri_problem(value)


def test_encode_uri_keeps_every_unescaped_character() -> None:
    text = "".join(sorted(UNESCAPED_CHARS))
    assert encode_uri(text) == text


def test_encode_uri_writes_utf8_bytes_as_uppercase_hex_escapes() -> None:
    assert encode_uri("é") == "%C3%A9"
    assert encode_uri("€") == "%E2%82%AC"
    assert encode_uri("😀") == "%F0%9F%98%80"
    assert encode_uri("a b\n") == "a%20b%0A"
    assert encode_uri("%") == "%25"
    assert encode_uri('"<>\\^`{|}[]') == "%22%3C%3E%5C%5E%60%7B%7C%7D%5B%5D"


def test_encode_uri_double_encodes_an_existing_escape_like_javascript() -> None:
    assert encode_uri("a%20b") == "a%2520b"


def test_encode_uri_of_test_source_with_spaces() -> None:
    assert encode_uri("test source with spaces") == "test%20source%20with%20spaces"


def test_encode_uri_raises_on_a_lone_high_surrogate() -> None:
    with pytest.raises(URIError, match=r"lone surrogate U\+D800 at index 1"):
        encode_uri("a\ud800b")


def test_encode_uri_raises_on_a_lone_low_surrogate() -> None:
    with pytest.raises(URIError, match="lone surrogate"):
        encode_uri("\udc00")


def test_encode_uri_treats_a_surrogate_pair_as_one_character_like_utf16() -> None:
    assert encode_uri("\ud83d\ude00") == "%F0%9F%98%80"


def test_decode_uri_keeps_escapes_of_reserved_characters_verbatim() -> None:
    for char in RESERVED_CHARS:
        escape = f"%{ord(char):02X}"
        assert decode_uri(escape) == escape
        assert decode_uri(escape.lower()) == escape.lower()


def test_decode_uri_decodes_escapes_of_other_characters() -> None:
    assert decode_uri("a%20b") == "a b"
    assert decode_uri("%41%25") == "A%"
    assert decode_uri("%C3%A9%c3%a9") == "éé"
    assert decode_uri("%F0%9F%98%80") == "😀"
    assert decode_uri("plain") == "plain"


@pytest.mark.parametrize(
    "value",
    [
        "%",
        "%4",
        "a%G0",
        "%+1",
        "% 1",
        "%٣٣",  # Arabic-Indic digits are not hex digits in JavaScript
        "%80",  # continuation byte cannot start a sequence
        "%FF",
        "%F8%80%80%80%80",  # five-byte form
        "%C3",  # truncated
        "%C3%",
        "%C3A9",  # continuation not escaped
        "%C3%41",  # not a continuation byte
        "%C0%80",  # overlong NUL
        "%E0%80%80",  # overlong
        "%ED%A0%80",  # UTF-16 surrogate encoded in UTF-8
        "%F4%90%80%80",  # above U+10FFFF
    ],
)
def test_decode_uri_raises_on_malformed_escapes(value: str) -> None:
    with pytest.raises(URIError, match="URI malformed"):
        decode_uri(value)


def test_uri_valid_means_unescaped_chars_plus_uppercase_escapes_of_escaped_chars() -> None:
    assert is_uri_valid("a%25b")  # '%' itself is escaped
    assert is_uri_valid("%E2%82%AC")
    assert is_uri_valid("")  # non-emptiness is a separate rule


def test_uri_is_invalid_with_a_lone_surrogate() -> None:
    assert not is_uri_valid("a\ud800")
    assert "lone surrogate" in (uri_problem("a\ud800") or "")


def test_uri_is_invalid_for_non_strings() -> None:
    assert not is_uri_valid(None)
    assert not is_uri_valid(b"abc")
    assert not is_uri_valid(42)


def test_uri_problem_names_the_character_that_must_be_encoded() -> None:
    assert uri_problem("a b") == "character ' ' at index 1 must be percent-encoded"


def test_uri_problem_names_a_non_canonical_escape() -> None:
    problem = uri_problem("a%41")
    assert problem is not None
    assert "'%41' at index 1 is not canonical" in problem
    problem = uri_problem("x%c3%a9")
    assert problem is not None
    assert "'%c3' at index 1" in problem


def test_uri_problem_names_a_malformed_escape() -> None:
    problem = uri_problem("ab%zz")
    assert problem is not None
    assert "'%zz' at index 2 is not a %XX escape" in problem


def test_uri_problem_after_a_valid_escape_points_at_the_raw_character() -> None:
    assert uri_problem("%20 ") == "character ' ' at index 3 must be percent-encoded"


def test_encode_of_decode_is_identity_on_valid_uris() -> None:
    for value in [*VALID_TABLE, "a%25b", "%E2%82%AC/?x=%7B%7D"]:
        assert encode_uri(decode_uri(value)) == value
