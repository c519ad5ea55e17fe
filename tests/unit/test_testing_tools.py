"""Spec 12: the in-memory broker and the scenario runner (with the documented fixes of quirks 37/38)."""

from __future__ import annotations

from typing import Any

import pytest

from service.arvo.errors import ExecutionViolation
from service.arvo.event import ArvoEvent, create_arvo_event
from service.arvo.handler import ArvoEventHandler, HandlerContext
from service.arvo.testing import (
    ArvoTestCase,
    ArvoTestStep,
    BrokerError,
    InMemoryBroker,
    NoReplyError,
    run_test_case,
)
from tests.unit.arvo_fixtures import value_read_contract, value_read_handler


def event(to: str, *, source: str = "com.test.test", domain: str | None = None, n: int = 0) -> ArvoEvent:
    return create_arvo_event(
        source=source, type="com.test.ping", subject="s", data={"n": n}, to=to, domain=domain
    )


def read_request(key: str = "k") -> ArvoEvent:
    return create_arvo_event(
        source="com.test.test",
        type="com.value.read",
        subject="s",
        data={"key": key},
        dataschema=value_read_contract.version("0.0.1").dataschema,
    )


# --- broker --------------------------------------------------------------------------------------


async def test_broker_processes_events_in_publish_order() -> None:
    broker = InMemoryBroker()
    seen: list[int] = []

    async def relay(received: ArvoEvent, bus: InMemoryBroker) -> None:
        seen.append(received.data["n"])
        if received.data["n"] == 0:
            await bus.publish(event("topic", n=1))
            await bus.publish(event("topic", n=2))
        elif received.data["n"] == 1:
            await bus.publish(event("topic", n=3))

    broker.subscribe("topic", relay)
    await broker.publish(event("topic", n=0))
    # FIFO (the original processed LIFO and would give 0, 2, 1, 3)
    assert seen == [0, 1, 2, 3]
    assert [item.data["n"] for item in broker.events] == [0, 1, 2, 3]
    assert broker.queue_length == 0


async def test_broker_keeps_unrouted_events_and_reports_them() -> None:
    errors: list[tuple[BaseException, ArvoEvent]] = []
    broker = InMemoryBroker(on_error=lambda error, failed: errors.append((error, failed)))
    lost = event("nobody.listens")
    await broker.publish(lost)
    assert broker.unrouted == [lost]
    assert len(errors) == 1
    assert str(errors[0][0]) == "No handlers registered for event type: nobody.listens"
    assert broker.errors == errors


async def test_broker_keeps_events_of_an_unsubscribed_domain() -> None:
    broker = InMemoryBroker()
    domained = event("topic", domain="external")
    await broker.publish(domained)
    assert broker.domained_events == [domained]
    assert broker.errors == []


async def test_broker_hands_unsubscribed_domains_to_the_hook() -> None:
    seen: list[tuple[str, ArvoEvent]] = []

    def hook(domain: str, received: ArvoEvent, _broker: InMemoryBroker) -> None:
        seen.append((domain, received))

    broker = InMemoryBroker(on_domained_event=hook)
    domained = event("topic", domain="external")
    await broker.publish(domained)
    assert seen == [("external", domained)]
    assert broker.domained_events == []


async def test_broker_routes_subscribed_domains_to_their_listeners() -> None:
    broker = InMemoryBroker()
    got: list[ArvoEvent] = []

    async def collect(received: ArvoEvent, _broker: InMemoryBroker) -> None:
        got.append(received)

    broker.subscribe("topic", collect, domain="external")
    assert broker.subscriber_count("topic", domain="external") == 1
    assert broker.subscriber_count("topic") == 0
    await broker.publish(event("topic", domain="external"))
    assert len(got) == 1


async def test_broker_reports_listener_errors_including_violations() -> None:
    broker = InMemoryBroker()

    async def failing(_received: ArvoEvent, _broker: InMemoryBroker) -> None:
        raise ExecutionViolation("listener says no")

    broker.subscribe("topic", failing)
    await broker.publish(event("topic"))
    assert [str(error) for error, _event in broker.errors] == ["ViolationError<Execution> listener says no"]


def test_broker_allows_one_subscriber_per_handler_topic() -> None:
    broker = InMemoryBroker([value_read_handler({})])
    assert broker.topics == ["com.value.read"]
    with pytest.raises(BrokerError, match=r"Only one subscriber allowed per topic: com\.value\.read"):
        broker.register(value_read_handler({}))


async def test_broker_unsubscribe_removes_the_listener() -> None:
    broker = InMemoryBroker()
    got: list[ArvoEvent] = []

    async def collect(received: ArvoEvent, _broker: InMemoryBroker) -> None:
        got.append(received)

    unsubscribe = broker.subscribe("topic", collect)
    unsubscribe()
    unsubscribe()  # idempotent
    await broker.publish(event("topic"))
    assert got == []
    assert broker.subscriber_count("topic") == 0


async def test_broker_rejects_events_without_to_and_a_full_queue() -> None:
    broker = InMemoryBroker(max_queue_size=1)
    with pytest.raises(BrokerError, match='Event must have a "to" property'):
        await broker.publish(event("topic").replace(to=None, datacontenttype="application/json"))

    async def flood(_received: ArvoEvent, bus: InMemoryBroker) -> None:
        await bus.publish(event("other"))
        await bus.publish(event("other"))

    broker.subscribe("topic", flood)
    await broker.publish(event("topic"))
    assert [str(error) for error, _event in broker.errors] == [
        "Event queue is full (max size: 1)",
        "No handlers registered for event type: other",
    ]


async def test_broker_resolve_returns_the_last_reply_and_forgets_its_collector() -> None:
    broker = InMemoryBroker([value_read_handler({"k": 5})])
    reply = await broker.resolve(read_request())
    assert reply is not None
    assert reply.type == "evt.value.read.success"
    assert reply.data == {"key": "k", "value": 5}
    assert broker.subscriber_count("com.test.test") == 0
    assert await broker.resolve(event("nobody.listens")) is None


async def test_broker_resolve_refuses_a_source_that_is_a_handler_topic() -> None:
    broker = InMemoryBroker([value_read_handler({})])
    with pytest.raises(BrokerError, match=r"the given is 'com\.value\.read'"):
        await broker.resolve(event("com.value.read", source="com.value.read"))


async def test_broker_on_publish_sees_every_event() -> None:
    published: list[str] = []
    broker = InMemoryBroker(
        [value_read_handler({"k": 1})], on_publish=lambda item: published.append(item.type)
    )
    await broker.resolve(read_request())
    assert published == ["com.value.read", "evt.value.read.success"]


async def test_resolve_with_require_reply_returns_the_reply() -> None:
    broker = InMemoryBroker([value_read_handler({"k": 5})])
    reply = await broker.resolve(read_request(), require_reply=True)
    assert reply.data == {"key": "k", "value": 5}


async def test_resolve_with_require_reply_names_the_errors_of_the_cascade() -> None:
    broker = InMemoryBroker()
    await broker.publish(event("before.the.resolve"))  # an earlier error is not this cascade's
    lost = event("nobody.listens")
    with pytest.raises(NoReplyError) as caught:
        await broker.resolve(lost, require_reply=True)
    assert str(caught.value) == (
        f"No event came back to 'com.test.test' for com.test.ping (id {lost.id}): the cascade stopped "
        "after 1 event(s).\n"
        "Errors while it ran (1, also in broker.errors):\n"
        "  - on com.test.ping (to nobody.listens, from com.test.test): BrokerError: No handlers registered "
        "for event type: nobody.listens\n"
        "Last event(s) published (1 of 1, all in broker.events):\n"
        "  - com.test.ping: com.test.test -> nobody.listens"
    )
    assert caught.value.event is lost
    assert [failed for _error, failed in caught.value.errors] == [lost]
    assert caught.value.events == [lost]
    assert isinstance(caught.value, BrokerError)
    # The unserved event is kept in unrouted and reported in errors: both, as documented.
    assert broker.unrouted[-1] is lost
    assert broker.errors[-1][1] is lost


async def test_resolve_with_require_reply_names_events_waiting_in_a_domain() -> None:
    broker = InMemoryBroker()

    async def to_review(received: ArvoEvent, bus: InMemoryBroker) -> None:
        await bus.publish(event("com.review", domain="human.review", source=received.to or ""))

    broker.subscribe("topic", to_review)
    with pytest.raises(NoReplyError) as caught:
        await broker.resolve(event("topic"), require_reply=True)
    message = str(caught.value)
    assert "Errors while it ran" not in message
    assert "Events for a domain nobody serves here (1; register a handler with" in message
    assert "  - com.test.ping (to com.review, domain human.review)\n" in message
    assert [item.to for item in caught.value.domained_events] == ["com.review"]


async def test_resolve_with_require_reply_says_when_nothing_failed() -> None:
    broker = InMemoryBroker()

    async def swallow(_received: ArvoEvent, _bus: InMemoryBroker) -> None:
        return None

    broker.subscribe("topic", swallow)
    with pytest.raises(NoReplyError, match="Nothing failed: an orchestrator may be waiting"):
        await broker.resolve(event("topic"), require_reply=True)
    assert await broker.resolve(event("topic")) is None  # the default keeps returning None


# --- scenario runner -----------------------------------------------------------------------------


def reader() -> ArvoEventHandler:
    return value_read_handler({"k": 1})


async def test_scenario_steps_feed_each_other() -> None:
    inputs: list[Any] = []

    def second_input(previous: list[ArvoEvent] | None) -> ArvoEvent:
        inputs.append(previous)
        return read_request()

    case = ArvoTestCase(
        name="chain",
        steps=[
            ArvoTestStep(
                input=lambda _previous: read_request(), expect_events=lambda events: len(events) == 1
            ),
            ArvoTestStep(input=second_input),
        ],
    )
    report = await run_test_case(reader(), case)
    assert (report.iterations, report.passed, report.failures) == (1, 1, [])
    assert len(inputs[0]) == 1


async def test_scenario_expected_error_passes_and_yields_no_events() -> None:
    async def violate(_context: HandlerContext) -> Any:
        raise ExecutionViolation("nope")

    handler = ArvoEventHandler(contract=value_read_contract, executionunits=0, handler={"0.0.1": violate})
    seen: list[Any] = []
    case = ArvoTestCase(
        name="error",
        steps=[
            ArvoTestStep(
                input=lambda _previous: read_request(), expect_error=lambda error: "nope" in str(error)
            ),
            ArvoTestStep(
                input=lambda previous: seen.append(previous) or read_request(), expect_error=lambda _e: True
            ),
        ],
    )
    await run_test_case(handler, case)
    assert seen == [[]]


@pytest.mark.parametrize(
    ("step", "failure"),
    [
        (
            ArvoTestStep(input=lambda _previous: read_request("missing"), expect_error=lambda _error: True),
            "Step 0: expected an error, got 1 events",
        ),
        (
            ArvoTestStep(input=lambda _previous: read_request(), expect_events=lambda events: events == []),
            "Step 0: events did not match the expectation:",
        ),
        (
            ArvoTestStep(input=lambda _previous: read_request(), expect_events=lambda events: events[5]),
            "Step 0: events did not match the expectation (predicate raised IndexError",
        ),
        (
            ArvoTestStep(input=lambda _previous: read_request().replace(type="com.other.thing")),
            "Step 0: Unexpected exception: ConfigViolation",
        ),
        (
            ArvoTestStep(
                input=lambda _previous: read_request().replace(type="com.other.thing"),
                expect_error=lambda error: "something else" in str(error),
            ),
            "Step 0: error did not match the expectation",
        ),
    ],
    ids=["error_expected", "events_mismatch", "predicate_raises", "unexpected_exception", "error_mismatch"],
)
async def test_scenario_failures_name_the_step(step: ArvoTestStep, failure: str) -> None:
    with pytest.raises(AssertionError) as caught:
        await run_test_case(reader(), ArvoTestCase(name="failing", steps=[step]))
    assert failure in str(caught.value)
    assert "failing: 0/1 iterations passed" in str(caught.value)


async def test_scenario_repeats_sequentially_against_a_success_threshold() -> None:
    calls = {"n": 0}

    def flaky(events: list[ArvoEvent]) -> bool:
        calls["n"] += 1
        return calls["n"] % 2 == 0

    case = ArvoTestCase(
        name="flaky",
        steps=[ArvoTestStep(input=lambda _previous: read_request(), expect_events=flaky)],
        repeat=4,
        success_threshold=50,
    )
    report = await run_test_case(reader(), case)
    assert (report.iterations, report.passed, len(report.failures)) == (4, 2, 2)
    with pytest.raises(AssertionError, match=r"2/4 iterations passed \(50% < 75%\)"):
        await run_test_case(
            reader(), ArvoTestCase(name="flaky", steps=case.steps, repeat=4, success_threshold=75)
        )
