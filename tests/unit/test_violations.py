"""Section 14.9 (violation helpers) and 9.3: what the engine treats as a violation, and what it raises."""

from __future__ import annotations

from typing import Any

import pytest

from service.arvo.errors import (
    ConfigViolation,
    ContractViolation,
    ExecutionViolation,
    TransactionViolation,
    TransactionViolationCause,
    ViolationError,
    is_transaction_violation,
    is_violation_error,
)
from service.arvo.factory import create_arvo_orchestrator_event_factory
from service.arvo.memory import InMemoryMemory
from service.arvo.orchestrator import create_arvo_orchestrator
from tests.unit.arvo_fixtures import counter_setup, test_machine_contract


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (ContractViolation("bad data"), "ViolationError<Contract>"),
        (ConfigViolation("bad config"), "ViolationError<Config>"),
        (ExecutionViolation("bad subject"), "ViolationError<Execution>"),
        (
            TransactionViolation(cause=TransactionViolationCause.LOCK_UNACQUIRED, message="denied"),
            "ViolationError<OrchestratorTransaction>",
        ),
    ],
    ids=["contract", "config", "execution", "transaction"],
)
def test_violation_name_and_message_formats(error: ViolationError, name: str) -> None:
    assert error.name == name
    assert str(error).startswith(f"{name} ")
    assert error.message == str(error)
    assert is_violation_error(error)


def test_transaction_violation_message_names_its_cause() -> None:
    error = TransactionViolation(
        cause=TransactionViolationCause.WRITE_FAILURE, message="disk full", initiating_event="evt"
    )
    assert str(error) == "ViolationError<OrchestratorTransaction> [WRITE_MACHINE_MEMORY_FAILURE] disk full"
    assert error.cause is TransactionViolationCause.WRITE_FAILURE
    assert error.metadata == {"initiatingEvent": "evt"}
    assert is_transaction_violation(error)
    assert is_transaction_violation(error, TransactionViolationCause.WRITE_FAILURE)
    assert not is_transaction_violation(error, TransactionViolationCause.READ_FAILURE)
    assert not is_transaction_violation(ConfigViolation("x"))


class _Missing:
    pass


class _DuckViolation(Exception):
    is_arvo_violation_error = True
    type = "Custom"
    name = "ViolationError<Custom>"


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        RuntimeError("plain"),
        {"is_arvo_violation_error": True, "type": "Contract", "name": "x", "message": "y"},
        _Missing(),
        type("NoType", (Exception,), {"is_arvo_violation_error": True, "name": "n"})("m"),
        type("NoName", (Exception,), {"is_arvo_violation_error": True, "type": "T", "name": None})("m"),
        type("Flagless", (Exception,), {"type": "T", "name": "n"})("m"),
    ],
    ids=[
        "none",
        "plain_error",
        "plain_object",
        "unrelated_object",
        "missing_type",
        "missing_name",
        "no_flag",
    ],
)
def test_is_violation_error_rejects_non_violations(candidate: Any) -> None:
    assert not is_violation_error(candidate)


def test_any_error_can_opt_in_as_a_violation() -> None:
    assert is_violation_error(_DuckViolation("opted in"))


async def test_a_duck_typed_violation_raised_by_a_machine_is_re_raised_not_converted() -> None:
    def raise_duck(_args: Any) -> None:
        raise _DuckViolation("custom violation")

    machine = counter_setup().create_machine(
        {"id": "duck", "initial": "boom", "states": {"boom": {"entry": raise_duck}}}
    )
    memory = InMemoryMemory()
    orchestrator = create_arvo_orchestrator(executionunits=1, memory=memory, machines=[machine])
    init = create_arvo_orchestrator_event_factory(test_machine_contract.version("0.0.1")).init(
        source="com.test.test", data={"parentSubject$$": None, "delta": 1, "type": "increment"}
    )
    with pytest.raises(_DuckViolation, match="custom violation"):
        await orchestrator.execute(init)
    assert await memory.list_instances() == []
