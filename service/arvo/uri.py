"""JavaScript-exact ``encodeURI`` / ``decodeURI`` and Arvo's URI-validity predicate (spec 1.2, Appendix B).

Arvo calls a string URI-valid when ``encodeURI(decodeURI(s)) === s`` and neither call throws. That is a
JavaScript-specific notion, so both functions are reproduced exactly:

* :func:`encode_uri` keeps ``A-Z a-z 0-9 ; , / ? : @ & = + $ - _ . ! ~ * ' ( ) #`` and writes every other
  code point as its UTF-8 bytes, each as ``%XX`` with uppercase hex. A lone surrogate raises
  :class:`URIError`.
* :func:`decode_uri` replaces ``%XX`` escapes (and multi-byte UTF-8 runs of them) by the character, except
  that escapes of ``; / ? : @ & = + $ , #`` are kept verbatim. Malformed escapes and invalid UTF-8
  (overlong forms, surrogates, code points above U+10FFFF) raise :class:`URIError`.

The common case (a string made only of unescaped characters, e.g. every base64 subject) is recognised by
one precompiled regex, so validation costs a single C-level scan.
"""

from __future__ import annotations

import re

__all__ = [
    "RESERVED_CHARS",
    "UNESCAPED_CHARS",
    "URIError",
    "decode_uri",
    "encode_uri",
    "is_uri_valid",
    "uri_problem",
]

UNESCAPED_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789;,/?:@&=+$-_.!~*'()#"
)
"""Characters ``encodeURI`` leaves as they are."""

RESERVED_CHARS = frozenset(";/?:@&=+$,#")
"""Characters whose escapes ``decodeURI`` keeps verbatim (``%2F`` stays ``%2F``)."""

_UNESCAPED_CLASS = r"A-Za-z0-9;,/?:@&=+$\-_.!~*'()#"
# Whole string made of unescaped characters: nothing to encode, nothing to decode, valid.
_all_unescaped = re.compile(f"[{_UNESCAPED_CLASS}]*").fullmatch
_needs_encoding = re.compile(f"[^{_UNESCAPED_CLASS}]+")
_surrogate = re.compile("[\ud800-\udfff]")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_BYTE_ESCAPES = tuple(f"%{byte:02X}" for byte in range(256))


class URIError(ValueError):
    """``encodeURI``/``decodeURI`` failed (JavaScript's ``URIError: URI malformed``)."""


def _encode_run(match: re.Match[str]) -> str:
    run = match.group()
    try:
        raw = run.encode("utf-8")
    except UnicodeEncodeError:
        # JavaScript strings are UTF-16: a high surrogate followed by a low one is one character there.
        try:
            raw = run.encode("utf-16-le", "surrogatepass").decode("utf-16-le").encode("utf-8")
        except UnicodeDecodeError:
            index = match.start() + _surrogate.search(run).start()  # type: ignore[union-attr]
            code = ord(match.string[index])
            raise URIError(f"URI malformed: lone surrogate U+{code:04X} at index {index}") from None
    return "".join([_BYTE_ESCAPES[byte] for byte in raw])


def encode_uri(value: str) -> str:
    """Return JavaScript's ``encodeURI(value)``.

    Args:
        value: Any string.

    Returns:
        The string with every character outside the unescaped set percent-encoded (uppercase hex).

    Raises:
        URIError: ``value`` contains a lone surrogate.

    """
    if _all_unescaped(value) is not None:
        return value
    return _needs_encoding.sub(_encode_run, value)


def _hex_byte(value: str, index: int) -> int:
    """The byte of the escape starting at ``value[index] == '%'``, or :class:`URIError`."""
    digits = value[index + 1 : index + 3]
    if len(digits) != 2 or digits[0] not in _HEX_DIGITS or digits[1] not in _HEX_DIGITS:
        raise URIError(f"URI malformed: {value[index : index + 3]!r} at index {index} is not a %XX escape")
    return int(digits, 16)


def _utf8_length(lead: int) -> int:
    """Number of bytes of the UTF-8 sequence that starts with ``lead`` (>= 0x80), 0 if none."""
    if lead & 0xE0 == 0xC0:
        return 2
    if lead & 0xF0 == 0xE0:
        return 3
    if lead & 0xF8 == 0xF0:
        return 4
    return 0


def decode_uri(value: str) -> str:
    """Return JavaScript's ``decodeURI(value)``.

    Args:
        value: Any string.

    Returns:
        The string with ``%XX`` escapes decoded, except escapes of reserved characters
        (``; / ? : @ & = + $ , #``), which are kept exactly as written.

    Raises:
        URIError: a ``%`` not followed by two hex digits, a byte sequence that is not strict UTF-8
            (bad lead or continuation byte, overlong form, surrogate, above U+10FFFF).

    """
    if "%" not in value:
        return value
    parts: list[str] = []
    length = len(value)
    start = 0
    while True:
        index = value.find("%", start)
        if index < 0:
            parts.append(value[start:])
            return "".join(parts)
        parts.append(value[start:index])
        lead = _hex_byte(value, index)
        if lead < 0x80:
            char = chr(lead)
            parts.append(value[index : index + 3] if char in RESERVED_CHARS else char)
            start = index + 3
            continue
        count = _utf8_length(lead)
        if not count:
            raise URIError(f"URI malformed: byte 0x{lead:02X} at index {index} cannot start a UTF-8 sequence")
        octets = bytearray((lead,))
        position = index + 3
        for _ in range(count - 1):
            if position >= length or value[position] != "%":
                raise URIError(f"URI malformed: UTF-8 sequence at index {index} is truncated")
            octet = _hex_byte(value, position)
            if octet & 0xC0 != 0x80:
                raise URIError(f"URI malformed: byte 0x{octet:02X} at index {position} is not a continuation")
            octets.append(octet)
            position += 3
        try:
            parts.append(octets.decode("utf-8"))
        except UnicodeDecodeError:
            raise URIError(
                f"URI malformed: {value[index:position]!r} at index {index} is not valid UTF-8"
                " (overlong form, surrogate or above U+10FFFF)"
            ) from None
        start = position


def is_uri_valid(value: object) -> bool:
    """Arvo's URI predicate: ``encodeURI(decodeURI(value)) == value``, any error meaning invalid.

    Args:
        value: The candidate; anything but a ``str`` is invalid.

    Returns:
        Whether ``value`` is a properly encoded URI in the JavaScript sense. The empty string is valid
        here (non-emptiness is a separate rule of each field).

    """
    if not isinstance(value, str):
        return False
    if _all_unescaped(value) is not None:
        return True
    if "%" not in value:
        # Some character outside the unescaped set that would be percent-encoded.
        return False
    try:
        return encode_uri(decode_uri(value)) == value
    except URIError:
        return False


def uri_problem(value: str) -> str | None:
    """Explain why ``value`` is not URI-valid, for error messages.

    Args:
        value: The string to check.

    Returns:
        ``None`` when :func:`is_uri_valid` holds, otherwise a short sentence naming the first offending
        character or escape and its index.

    """
    if _all_unescaped(value) is not None:
        return None
    try:
        decoded = decode_uri(value)
    except URIError as error:
        return str(error)
    try:
        round_trip = encode_uri(decoded)
    except URIError as error:
        return str(error)
    if round_trip == value:
        return None
    index = next(
        (i for i, (a, b) in enumerate(zip(value, round_trip, strict=False)) if a != b),
        min(len(value), len(round_trip)),
    )
    if index >= len(value):  # pragma: no cover - encoding never yields a mere extension of its input
        return "encodeURI(decodeURI(value)) differs from the value"
    # Step back to the start of the escape when the difference is inside one.
    escape_start = value.rfind("%", max(0, index - 2), index + 1)
    if escape_start >= 0:
        escape = value[escape_start : escape_start + 3]
        return (
            f"escape {escape!r} at index {escape_start} is not canonical"
            " (encodeURI(decodeURI(value)) writes it differently)"
        )
    return f"character {value[index]!r} at index {index} must be percent-encoded"
