from __future__ import annotations

import sys
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.arvo.event import create_arvo_event
from service.runtime.routing import (
    MAX_TOPIC_CHARS,
    RoutingError,
    TopicRouter,
    handler_topic,
    load_route_function,
    route_topic,
    validate_topic_name,
)
from service.runtime.settings import load_settings

# Arvo types and domains (spec 1.1, 1.3) and a broader "routable to" alphabet.
segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
arvo_types = st.lists(segments, min_size=3, max_size=5).map(".".join)
domains = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=20)
routable_to = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._", min_size=1, max_size=40
).filter(lambda s: s not in (".", ".."))
prefixes = st.text(alphabet="abcxyz019._-", max_size=10)


def test_local_events_route_to_their_to() -> None:
    assert route_topic("com.payment.charge", None) == "com.payment.charge"
    assert route_topic("com.payment.charge", None, prefix="staging.") == "staging.com.payment.charge"


def test_domained_events_route_to_a_separate_topic() -> None:
    assert route_topic("com.payment.charge", "external") == "external-com.payment.charge"
    assert route_topic("com.payment.charge", "eu.ops", prefix="p.") == "p.eu.ops-com.payment.charge"


def test_handler_topic_is_the_local_route_of_its_type() -> None:
    assert handler_topic("arvo.orc.inc") == "arvo.orc.inc"
    assert handler_topic("arvo.orc.inc", "dev.") == "dev.arvo.orc.inc"


@given(
    prefix=prefixes,
    a=st.tuples(routable_to, st.none() | domains),
    b=st.tuples(routable_to, st.none() | domains),
)
def test_distinct_to_domain_pairs_never_share_a_topic(
    prefix: str, a: tuple[str, str | None], b: tuple[str, str | None]
) -> None:
    try:
        topic_a = route_topic(a[0], a[1], prefix=prefix)
        topic_b = route_topic(b[0], b[1], prefix=prefix)
    except RoutingError:
        return  # too long: rejected, never collided
    assert (topic_a == topic_b) == (a == b)


@given(prefix=prefixes, to=arvo_types, domain=domains)
def test_a_domained_topic_never_equals_any_local_topic(prefix: str, to: str, domain: str) -> None:
    domained = route_topic(to, domain, prefix=prefix)
    body = domained[len(prefix) :]
    # The only local topic that could equal it would need `to == body`, and body holds the separator.
    with pytest.raises(RoutingError):
        route_topic(body, None, prefix=prefix)


@given(to=arvo_types, domain=st.none() | domains)
def test_every_route_of_arvo_types_is_a_legal_topic(to: str, domain: str | None) -> None:
    assert validate_topic_name(route_topic(to, domain)) == route_topic(to, domain)


def test_separator_in_to_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(RoutingError, match=r"'to' 'com-x\.y' must contain only \[a-zA-Z0-9\._\]"):
        route_topic("com-x.y", None)


@pytest.mark.parametrize("to", ["a b", "#/x", "a/b", "é", ""])
def test_non_topic_characters_in_to_are_rejected(to: str) -> None:
    with pytest.raises(RoutingError):
        route_topic(to, None)


def test_invalid_domain_is_rejected() -> None:
    with pytest.raises(RoutingError, match="domain 'Ext' must match"):
        route_topic("com.a.b", "Ext")


def test_too_long_topic_names_are_rejected_naming_the_limit() -> None:
    long_type = ".".join(["abcdefgh"] * 30)
    with pytest.raises(RoutingError, match=f"at most {MAX_TOPIC_CHARS}"):
        route_topic(long_type, None)


def test_dot_and_dot_dot_are_not_topics() -> None:
    for name in (".", ".."):
        with pytest.raises(RoutingError):
            validate_topic_name(name)


def test_router_routes_events_by_to_and_domain() -> None:
    router = TopicRouter(prefix="t.")
    event = create_arvo_event(
        source="com.test.src", type="com.test.echo", subject="s1", data={}, to="com.test.sink", domain="ext"
    )
    assert router.route_event(event) == "t.ext-com.test.sink"
    assert router.handler_topic("com.test.echo") == "t.com.test.echo"


def test_custom_route_function_from_settings_is_used_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("custom_routes_for_test")

    def flat(to: str, domain: str | None, prefix: str) -> str:
        return f"{prefix}{domain or 'local'}.{to}"

    def illegal(to: str, domain: str | None, prefix: str) -> str:
        return "no spaces allowed"

    module.flat = flat  # type: ignore[attr-defined]
    module.illegal = illegal  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "custom_routes_for_test", module)
    router = TopicRouter.from_settings(
        load_settings(env_file=None, topic_prefix="p.", topic_router="custom_routes_for_test:flat")
    )
    assert router.route("com.a.b", None) == "p.local.com.a.b"
    assert router.route("com.a.b", "x") == "p.x.com.a.b"
    with pytest.raises(RoutingError, match="not a legal Kafka topic name"):
        TopicRouter(route=load_route_function("custom_routes_for_test:illegal")).route("com.a.b", None)


def test_unknown_route_function_raises_routing_error() -> None:
    with pytest.raises(RoutingError, match="cannot load topic router"):
        load_route_function("no_such_module_xyz:route")
