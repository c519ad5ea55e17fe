"""The orchestration subject codec (spec section 3): base64 of zlib-compressed JSON.

A subject names one orchestration execution: which orchestrator (name and version) runs it, its
execution id, who initiated it, its domain, and free-form string metadata (``meta.redirectto``).
The encoding is byte-identical to TypeScript Arvo (compact JSON in construction key order, zlib
wrapper at level 6, standard padded base64), so subjects travel unchanged between the two.

Decoding is strict by default, because the subject string is also the state key: only canonical
standard base64 of a zlib stream is accepted, the input length and the inflated size are bounded
(a subject can never be a zip bomb), and every failure raises :class:`SubjectError`. ``lenient=True``
reproduces what Node's ``Buffer.from(s, "base64")`` and pako's ``inflate`` accept (URL-safe
alphabet, junk characters, missing padding, gzip wrapper), with the same size bounds.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from uuid import uuid4

import orjson

from service.arvo.errors import SubjectError, ValidationProblem, truncate_value
from service.arvo.validation import DOMAIN_RE, SEMVER_RE, TYPE_RE

__all__ = [
    "MAX_SUBJECT_CHARS",
    "MAX_SUBJECT_JSON_BYTES",
    "ArvoOrchestrationSubject",
    "ParsedSubject",
]

MAX_SUBJECT_CHARS = 4096
"""Longest subject string accepted (checked before any decoding work)."""

MAX_SUBJECT_JSON_BYTES = 16384
"""Largest inflated JSON accepted: decompression stops at this many bytes (zip-bomb bound)."""

_WILDCARD_VERSION = "0.0.0"
_SUBJECT_PREVIEW_CHARS = 120
_CONTEXT_PREVIEW_CHARS = 2000
_CACHE_SIZE = 4096

_STRICT_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_NOT_BASE64_CHAR_RE = re.compile(r"[^A-Za-z0-9+/]")
_URL_SAFE_TO_STANDARD = str.maketrans("-_", "+/")
_ZLIB_ONLY_WBITS = 15
_ZLIB_OR_GZIP_WBITS = 15 + 32

_PARSE_ERROR_HEAD = "Error parsing orchestration subject string to the context."
_CREATE_ERROR_HEAD = "Error creating orchestration subject string from the provided context."
_SHAPE_ERROR_PREFIX = "Invalid ArvoOrchestrationContextType: "


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    """A decoded, validated orchestration subject. Immutable: parse results are cached and shared."""

    name: str
    """``orchestrator.name``: the orchestrator type (``arvo.orc.<name>``) that owns the execution."""
    version: str
    """``orchestrator.version``: semver of the orchestrator; ``0.0.0`` means any version."""
    execution_id: str
    """``execution.id``: the execution's id (a UUID in practice)."""
    initiator: str
    """``execution.initiator``: who started the execution (completion and errors go back there)."""
    domain: str | None
    """``execution.domain``; ``None`` when null or absent (subjects of arvo-core 2.x have no key)."""
    meta: Mapping[str, str]
    """``meta``: read-only string map (``redirectto`` is the only key the library reads)."""
    content: Mapping[str, Any]
    """The whole decoded object, unknown keys kept, deeply read-only (dicts are mapping proxies,
    lists are tuples). Use :meth:`to_dict` for a mutable copy. A 2.x subject has no
    ``execution.domain`` key here: read :attr:`domain` instead."""

    def __hash__(self) -> int:
        # The read-only mappings are unhashable; equal subjects have equal fields, so this is consistent.
        return hash((self.name, self.version, self.execution_id, self.initiator, self.domain))

    @property
    def instance_key(self) -> str:
        """``"<name>:<execution_id>"``: the memory key of the orchestration instance."""
        return f"{self.name}:{self.execution_id}"

    def to_dict(self) -> dict[str, Any]:
        """A fresh, mutable deep copy of :attr:`content` (plain dicts and lists)."""
        thawed = _thaw(self.content)
        assert isinstance(thawed, dict)
        return thawed


class ArvoOrchestrationSubject:
    """Create and parse orchestration subjects (all methods are static)."""

    @staticmethod
    def new(
        *,
        orchestrator: str,
        initiator: str,
        version: str | None = None,
        domain: str | None = None,
        meta: Mapping[str, str] | None = None,
        execution_id: str | None = None,
    ) -> str:
        """Create the subject of a new execution (spec 3.4).

        Args:
            orchestrator: The orchestrator type that will own the execution (type format).
            initiator: Who starts it (type format: at least three dot-separated segments).
            version: The orchestrator version; ``None`` means the wildcard ``0.0.0``.
            domain: The execution domain, or ``None`` for the default domain.
            meta: String metadata, e.g. ``{"redirectto": "com.reply.here"}``.
            execution_id: The execution id; a fresh UUID v4 when ``None``. Give one to create
                subjects deterministically (replays must produce the same child subjects).

        Returns:
            The encoded subject string.

        Raises:
            SubjectError: If a value breaks the subject schema (spec 3.1).

        """
        content: dict[str, Any] = {
            "orchestrator": {
                "name": orchestrator,
                "version": version if version is not None else _WILDCARD_VERSION,
            },
            "execution": {
                "id": execution_id if execution_id is not None else str(uuid4()),
                "initiator": initiator,
                "domain": domain,
            },
            "meta": dict(meta) if meta is not None else {},
        }
        return ArvoOrchestrationSubject.create(content)

    @staticmethod
    def from_parent(
        *,
        orchestrator: str,
        subject: str,
        version: str | None = None,
        domain: str | None = None,
        meta: Mapping[str, str] | None = None,
        execution_id: str | None = None,
    ) -> str:
        """Create the subject of a child execution started by the execution of ``subject`` (spec 3.5).

        The child's initiator is the parent's orchestrator name (so its completion and errors route
        back to the parent), its domain defaults to the parent's domain, and its meta is the parent's
        meta overridden by ``meta``.

        Args:
            orchestrator: The child orchestrator type.
            subject: The parent execution's subject (strictly parsed).
            version: The child orchestrator version; ``None`` means ``0.0.0``.
            domain: The child's domain; ``None`` inherits the parent's.
            meta: Metadata merged over the parent's (these keys win).
            execution_id: The child's execution id; a fresh UUID v4 when ``None``.

        Returns:
            The encoded child subject.

        Raises:
            SubjectError: If the parent subject does not parse or a value breaks the schema.

        """
        parent = ArvoOrchestrationSubject.parse(subject)
        return ArvoOrchestrationSubject.new(
            orchestrator=orchestrator,
            initiator=parent.name,
            version=version,
            domain=domain if domain is not None else parent.domain,
            meta={**parent.meta, **(meta or {})},
            execution_id=execution_id,
        )

    @staticmethod
    def create(content: Mapping[str, Any]) -> str:
        """Encode ``content`` exactly as TypeScript Arvo does (spec 3.2).

        ``content`` is validated against spec 3.1 and then serialised as given (key order kept,
        extra keys kept): compact UTF-8 JSON, zlib level 6, standard base64 with padding.

        Raises:
            SubjectError: If ``content`` breaks the schema, is not JSON-serialisable, or encodes to
                a subject that :meth:`parse` would reject for its size.

        """
        problems = _content_problems(content, require_domain_key=True)
        if problems:
            raise SubjectError(_create_error(_SHAPE_ERROR_PREFIX + _join_problems(problems), content))
        try:
            payload = orjson.dumps(content, default=_json_default)
        except TypeError as error:
            raise SubjectError(_create_error(f"content is not JSON-serialisable: {error}", content)) from None
        if len(payload) > MAX_SUBJECT_JSON_BYTES:
            raise SubjectError(
                _create_error(
                    f"the JSON is {len(payload)} bytes, more than the maximum of {MAX_SUBJECT_JSON_BYTES}",
                    content,
                )
            )
        subject = base64.b64encode(zlib.compress(payload)).decode("ascii")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise SubjectError(
                _create_error(
                    f"the subject is {len(subject)} characters, more than the maximum of {MAX_SUBJECT_CHARS}",
                    content,
                )
            )
        _remember_created(subject, payload)
        return subject

    @staticmethod
    def parse(subject: str, *, lenient: bool = False) -> ParsedSubject:
        """Decode and validate ``subject`` (results are cached per ``(subject, lenient)``).

        Args:
            subject: The subject string.
            lenient: Accept what Node/pako accept (URL-safe alphabet, junk characters, missing
                padding, gzip wrapper) instead of canonical base64 of a zlib stream only.

        Returns:
            The parsed subject (shared, immutable).

        Raises:
            SubjectError: Three lines: ``Error parsing orchestration subject string to the
                context.``, ``Error -> <cause>`` and ``subject -> <subject, truncated>``.

        """
        # Length and type first, so oversized input is never hashed for the cache lookup.
        _precheck(subject)
        if not lenient:
            created = _created.get(subject)
            if created is not None:
                return created
        return _parse_cached(subject, bool(lenient))

    @staticmethod
    def is_valid(subject: str, *, lenient: bool = False) -> bool:
        """Whether :meth:`parse` accepts ``subject``."""
        try:
            ArvoOrchestrationSubject.parse(subject, lenient=lenient)
        except SubjectError:
            return False
        return True


_created: dict[str, ParsedSubject] = {}
"""Subjects this process encoded, parsed from the JSON they were encoded from (bounded)."""


def _remember_created(subject: str, payload: bytes) -> None:
    """Keep the parse of a subject :meth:`ArvoOrchestrationSubject.create` just encoded.

    The engine parses the subjects it creates soon after (a child's init event, the factory's init
    event in this process): their strict parse is the decoded ``payload``, so it is built from the
    payload instead of inflating the subject again. ``create`` validated the content with stricter
    rules than a parse applies.
    """
    if len(_created) >= _CACHE_SIZE:
        _created.clear()
    _created[subject] = _parsed(orjson.loads(payload))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_cached(subject: str, lenient: bool) -> ParsedSubject:
    # lru_cache stores return values only: failures are recomputed (they are cheap by construction).
    return _decode_subject(subject, lenient)


def _decode_subject(subject: str, lenient: bool = False) -> ParsedSubject:
    """Decode ``subject`` without the cache (spec 3.3 with the bounds of Appendix B)."""
    _precheck(subject)
    if lenient:
        compressed = _node_base64_decode(subject)
        wbits = _ZLIB_OR_GZIP_WBITS
    else:
        compressed = _strict_base64_decode(subject)
        wbits = _ZLIB_ONLY_WBITS
    text = _bounded_inflate(compressed, wbits, subject)
    try:
        content = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise SubjectError(
            _parse_error(f"the decompressed subject is not valid UTF-8 JSON: {error}", subject)
        ) from None
    problems = _content_problems(content, require_domain_key=False)
    if problems:
        raise SubjectError(_parse_error(_SHAPE_ERROR_PREFIX + _join_problems(problems), subject))
    return _parsed(content)


def _parsed(content: dict[str, Any]) -> ParsedSubject:
    """The :class:`ParsedSubject` of decoded subject JSON that passed the schema checks."""
    orchestrator = content["orchestrator"]
    execution = content["execution"]
    return ParsedSubject(
        name=orchestrator["name"],
        version=orchestrator["version"],
        execution_id=execution["id"],
        initiator=execution["initiator"],
        domain=execution.get("domain"),
        meta=MappingProxyType(dict(content["meta"])),
        content=_freeze(content),
    )


def _precheck(subject: object) -> None:
    if not isinstance(subject, str):
        raise SubjectError(
            _parse_error(f"the subject must be a string, got {type(subject).__name__}", repr(subject))
        )
    if len(subject) > MAX_SUBJECT_CHARS:
        raise SubjectError(
            _parse_error(
                f"the subject is {len(subject)} characters long, more than the maximum of "
                f"{MAX_SUBJECT_CHARS}",
                subject,
            )
        )
    if not subject:
        raise SubjectError(_parse_error("the subject is empty", subject))


def _strict_base64_decode(subject: str) -> bytes:
    if len(subject) % 4 != 0 or _STRICT_BASE64_RE.fullmatch(subject) is None:
        raise SubjectError(
            _parse_error(
                "the subject is not standard base64 (alphabet A-Z a-z 0-9 + / with '=' padding, "
                "length a multiple of 4)",
                subject,
            )
        )
    try:
        raw = base64.b64decode(subject, validate=True)
    except binascii.Error as error:  # pragma: no cover - excluded by the regex and length checks
        raise SubjectError(_parse_error(f"invalid base64: {error}", subject)) from None
    # The string is the state key: only one spelling of a subject may exist.
    if base64.b64encode(raw).decode("ascii") != subject:
        raise SubjectError(
            _parse_error(
                "the subject is not canonical base64 (unused bits of the last character are not zero)",
                subject,
            )
        )
    return raw


def _node_base64_decode(subject: str) -> bytes:
    """Decode like Node's ``Buffer.from(s, "base64")``.

    URL-safe characters are mapped to the standard alphabet, characters outside the alphabet are
    skipped, decoding stops at the first ``=``, and padding is optional. Like Node, a non-ASCII
    character is read as its UTF-16 code units truncated to 8 bits (``"\u0144"`` reads as ``"D"``).
    """
    if not subject.isascii():
        subject = subject.encode("utf-16-le", "surrogatepass")[::2].decode("latin-1")
    end = subject.find("=")
    body = subject if end < 0 else subject[:end]
    body = _NOT_BASE64_CHAR_RE.sub("", body.translate(_URL_SAFE_TO_STANDARD))
    if len(body) % 4 == 1:  # a lone trailing character carries fewer than 8 bits: Node drops it
        body = body[:-1]
    return base64.b64decode(body + "=" * (-len(body) % 4))


def _bounded_inflate(compressed: bytes, wbits: int, subject: str) -> bytes:
    inflater = zlib.decompressobj(wbits=wbits)
    try:
        inflated = inflater.decompress(compressed, MAX_SUBJECT_JSON_BYTES)
    except zlib.error as error:
        raise SubjectError(_parse_error(f"zlib inflate failed: {error}", subject)) from None
    if inflater.unconsumed_tail or (not inflater.eof and len(inflated) >= MAX_SUBJECT_JSON_BYTES):
        raise SubjectError(
            _parse_error(
                f"the decompressed subject exceeds the maximum of {MAX_SUBJECT_JSON_BYTES} bytes",
                subject,
            )
        )
    if not inflater.eof:
        raise SubjectError(_parse_error("the compressed stream is truncated", subject))
    if inflater.unused_data:
        raise SubjectError(_parse_error("unexpected bytes after the end of the compressed stream", subject))
    return inflated


def _content_problems(content: object, *, require_domain_key: bool) -> list[ValidationProblem]:
    """Every way ``content`` breaks the subject schema of spec 3.1 (unknown keys are allowed)."""
    if not isinstance(content, Mapping):
        return [_problem("(root)", "object", "The subject content must be an object", content)]
    problems: list[ValidationProblem] = []

    orchestrator = content.get("orchestrator")
    if not isinstance(orchestrator, Mapping):
        problems.append(_problem("orchestrator", "object", "Required object", orchestrator))
    else:
        _check_type_string(
            problems,
            orchestrator.get("name"),
            "orchestrator.name",
            "Orchestrator name should be prefixed with a reverse-DNS name",
        )
        version = orchestrator.get("version")
        if not isinstance(version, str) or SEMVER_RE.fullmatch(version) is None:
            problems.append(
                _problem(
                    "orchestrator.version",
                    "semver",
                    "Invalid version format of the semantic version",
                    version,
                )
            )

    execution = content.get("execution")
    if not isinstance(execution, Mapping):
        problems.append(_problem("execution", "object", "Required object", execution))
    else:
        execution_id = execution.get("id")
        if not isinstance(execution_id, str) or not execution_id:
            problems.append(
                _problem("execution.id", "non-empty", "ID must be a non-empty string", execution_id)
            )
        elif ";" in execution_id:
            problems.append(
                _problem("execution.id", "no-semicolon", "ID must not contain semicolon", execution_id)
            )
        _check_type_string(
            problems,
            execution.get("initiator"),
            "execution.initiator",
            "Orchestration initiator should be prefixed with a reverse-DNS name",
        )
        if "domain" in execution:
            domain = execution["domain"]
            if domain is not None and not isinstance(domain, str):
                problems.append(
                    _problem("execution.domain", "string", "Domain must be null or a string", domain)
                )
            elif domain == "":
                problems.append(
                    _problem("execution.domain", "non-empty", "Domain must be non-empty string", domain)
                )
            elif domain is not None and DOMAIN_RE.fullmatch(domain) is None:
                problems.append(
                    _problem(
                        "execution.domain",
                        "domain-format",
                        "Domain must contain only lowercase letters, numbers, and dots",
                        domain,
                    )
                )
        elif require_domain_key:
            problems.append(
                _problem(
                    "execution.domain",
                    "required",
                    "Domain is required (null or a domain string)",
                    None,
                )
            )

    meta = content.get("meta")
    if not isinstance(meta, Mapping):
        problems.append(_problem("meta", "object", "Required object of string values", meta))
    else:
        problems.extend(
            _problem(f"meta.{key}", "string", "Meta keys and values must be strings", value)
            for key, value in meta.items()
            if not isinstance(key, str) or not isinstance(value, str)
        )
    return problems


def _check_type_string(problems: list[ValidationProblem], value: object, path: str, message: str) -> None:
    # The type regex admits neither ';' nor anything but [a-z0-9.], so it also enforces "no ';'".
    if not isinstance(value, str) or TYPE_RE.fullmatch(value) is None:
        problems.append(_problem(path, "type-format", message, value))


def _problem(path: str, rule: str, message: str, value: object) -> ValidationProblem:
    return ValidationProblem(path=path, rule=rule, message=message, value=truncate_value(value))


def _join_problems(problems: list[ValidationProblem]) -> str:
    return "; ".join(str(problem) for problem in problems)


def _parse_error(cause: str, subject: str) -> str:
    preview = subject
    if len(preview) > _SUBJECT_PREVIEW_CHARS:
        preview = preview[: _SUBJECT_PREVIEW_CHARS - 1] + "…"
    return f"{_PARSE_ERROR_HEAD}\nError -> {cause}\nsubject -> {preview}"


def _create_error(cause: str, content: object) -> str:
    try:
        context = orjson.dumps(content, default=_json_default, option=orjson.OPT_INDENT_2).decode("utf-8")
    except TypeError:
        context = repr(content)
    if len(context) > _CONTEXT_PREVIEW_CHARS:
        context = context[: _CONTEXT_PREVIEW_CHARS - 1] + "…"
    return f"{_CREATE_ERROR_HEAD}\nError -> {cause}\nContext -> {context}"


def _json_default(value: object) -> object:
    # Read-only views (MappingProxyType, ParsedSubject.meta) serialise like the dicts they wrap.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value
