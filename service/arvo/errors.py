"""Errors of the Arvo primitives: violations (spec section 9) and validation errors.

Violations are *thrown* to the caller (the consumer loop) and never turned into events; every other
exception inside a handler becomes a system error event. Validation errors list every problem found,
each with the field path, the rule it broke and the offending value (truncated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "ArvoEventValidationError",
    "ArvoValidationError",
    "ConfigViolation",
    "ContractViolation",
    "ExecutionViolation",
    "SubjectError",
    "TransactionViolation",
    "TransactionViolationCause",
    "ValidationProblem",
    "ViolationError",
    "is_transaction_violation",
    "is_violation_error",
    "truncate_value",
]

_MAX_VALUE_CHARS = 80


def truncate_value(value: object, limit: int = _MAX_VALUE_CHARS) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ViolationError(Exception):
    """An error the caller must handle (retry, dead-letter), never converted into an event.

    Attributes:
        type: The violation kind (``Contract``, ``Config``, ``Execution``, ``OrchestratorTransaction``).
        metadata: Optional structured details.
        raw_message: The message without the ``ViolationError<type>`` prefix.

    """

    is_arvo_violation_error = True

    def __init__(self, message: str, *, type: str, metadata: Mapping[str, Any] | None = None) -> None:
        self.type = type
        self.raw_message = message
        self.metadata: Mapping[str, Any] | None = metadata
        super().__init__(f"ViolationError<{type}> {message}")

    @property
    def name(self) -> str:
        """The original's ``Error.name``: ``ViolationError<type>``."""
        return f"ViolationError<{self.type}>"

    @property
    def message(self) -> str:
        """The full message, prefixed with ``ViolationError<type>``."""
        return str(self)


class ContractViolation(ViolationError):
    """Input/output data or dataschema violates a contract (permanent: dead-letter)."""

    def __init__(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, type="Contract", metadata=metadata)


class ConfigViolation(ViolationError):
    """Wrong routing or configuration: type mismatch, unknown version, unresolved contract (permanent)."""

    def __init__(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, type="Config", metadata=metadata)


class ExecutionViolation(ViolationError):
    """Invalid orchestration subject or parent subject, or raised deliberately by user code."""

    def __init__(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, type="Execution", metadata=metadata)


class ForeignSourceViolation(ViolationError):
    """A reply from a source the orchestration did not address (dropped: dead-letter ``foreign_source``).

    Attributes:
        expected: The sources the orchestration addressed for the event's type.

    """

    def __init__(self, message: str, *, expected: frozenset[str] = frozenset()) -> None:
        super().__init__(message, type="ForeignSource", metadata={"expected": sorted(expected)})
        self.expected = expected


class TransactionViolationCause(StrEnum):
    """Why a memory/lease operation failed (values are wire-compatible with the original)."""

    READ_FAILURE = "READ_MACHINE_MEMORY_FAILURE"
    LOCK_FAILURE = "LOCK_MACHINE_MEMORY_FAILURE"
    WRITE_FAILURE = "WRITE_MACHINE_MEMORY_FAILURE"
    LOCK_UNACQUIRED = "LOCK_UNACQUIRED"
    INVALID_SUBJECT = "INVALID_SUBJECT"
    LEASE_LOST = "LEASE_LOST"
    """Ours: the lease expired or was taken over (fenced out) before the commit."""


class TransactionViolation(ViolationError):
    """A transient memory/lease failure: the consumer retries the event in place with backoff."""

    def __init__(
        self,
        *,
        cause: TransactionViolationCause,
        message: str,
        initiating_event: object | None = None,
    ) -> None:
        super().__init__(
            f"[{cause}] {message}",
            type="OrchestratorTransaction",
            metadata={"initiatingEvent": initiating_event},
        )
        self.cause = cause


def is_violation_error(error: object) -> bool:
    """Duck-typed check of spec 9.1: an exception that opted in as an Arvo violation."""
    return (
        isinstance(error, BaseException)
        and getattr(error, "is_arvo_violation_error", False) is True
        and isinstance(getattr(error, "type", None), str)
        and bool(getattr(error, "type", ""))
        and isinstance(getattr(error, "name", None), str)
        and bool(str(error))
    )


def is_transaction_violation(error: object, cause: TransactionViolationCause | None = None) -> bool:
    """Whether ``error`` is a :class:`TransactionViolation` (optionally with the given cause)."""
    if not is_violation_error(error) or getattr(error, "type", None) != "OrchestratorTransaction":
        return False
    return cause is None or getattr(error, "cause", None) == cause


@dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One broken rule: where (``path``), which rule, a sentence, and the offending value (truncated)."""

    path: str
    rule: str
    message: str
    value: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (rule={self.rule}, value={self.value})"


class ArvoValidationError(ValueError):
    """Validation failed; ``problems`` lists every broken rule, one per line in the message."""

    def __init__(
        self, summary: str, problems: tuple[ValidationProblem, ...] | list[ValidationProblem]
    ) -> None:
        self.problems: tuple[ValidationProblem, ...] = tuple(problems)
        lines = [summary, *(f"  - {problem}" for problem in self.problems)]
        super().__init__("\n".join(lines))


class ArvoEventValidationError(ArvoValidationError):
    """An :class:`~service.arvo.event.ArvoEvent` could not be built or parsed."""


class SubjectError(ValueError):
    """An orchestration subject could not be created or parsed."""
