"""The demo workflow a user learns from: order fulfilment.

``arvo.orc.order`` (a statechart) reserves stock and charges the customer **in parallel**, then
either compensates (releases the stock when the payment was declined) or starts the **child
orchestration** ``arvo.orc.shipment`` (a **resumable**: quote, then book) and completes with the
tracking id. An unknown SKU makes the inventory service fail; the order escalates by raising, which
ends the workflow with the **system error** ``sys.arvo.orc.order.error`` sent to the initiator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.demo import (
    inventory_release_contract,
    inventory_reserve_contract,
    order_contract,
    payment_charge_contract,
    shipment_contract,
    shipping_book_contract,
    shipping_quote_contract,
)
from service.arvo.handler import ArvoEventHandler, HandlerContext, HandlerOutput
from service.arvo.machine.arvo_machine import ArvoMachine, setup_arvo_machine
from service.arvo.machine.statechart import ActionArgs, assign, emit
from service.arvo.memory import Memory
from service.arvo.orchestrator import ArvoOrchestrator, create_arvo_orchestrator
from service.arvo.resumable import ArvoResumable, ResumableContext, ResumableResult

__all__ = [
    "DEFAULT_STOCK",
    "OrderEscalationError",
    "demo_handlers",
    "order_machine",
    "order_orchestrator",
    "shipment_resumable",
]

DEFAULT_STOCK: Mapping[str, int] = {"sku-widget": 1000, "sku-gadget": 500, "sku-gizmo": 200}
PAYMENT_LIMIT_CENTS = 50_000
SHIPPING_COUNTRIES = frozenset({"NL", "DE", "FR", "GB", "US"})
KG_PER_UNIT = 0.5
SILENT_BANK_CUSTOMER = "cust-silent-bank"
"""A customer whose bank never answers a charge (the payment timeout demo)."""
SILENT_CARRIER_COUNTRIES = frozenset({"AQ"})
"""Countries whose carriers never answer a quote (the deadline and cancellation demos)."""
PAYMENT_TIMEOUT_MS = 30_000
"""How long the order waits for the payment service before it treats the payment as declined."""
ORDER_DEADLINE_S = 300.0
"""Every order's deadline (unless its init event names one, ``arvodeadline``): it then times out."""


class OrderEscalationError(RuntimeError):
    """The order cannot proceed without a human (raised by the machine; becomes a system error)."""


class PaymentDeclinedError(RuntimeError):
    """The payment provider declined the charge."""


class ShipmentError(RuntimeError):
    """No carrier can ship the order."""


def demo_handlers(stock: Mapping[str, int] | None = None) -> list[ArvoEventHandler]:
    """The demo's five stateless services; ``stock`` seeds the fake inventory."""
    inventory = dict(stock if stock is not None else DEFAULT_STOCK)

    async def reserve(context: HandlerContext) -> HandlerOutput:
        for line in context.data["items"]:
            available = inventory.get(line["sku"])
            if available is None:
                raise KeyError(f"unknown SKU {line['sku']!r}")
            if available < line["quantity"]:
                raise ValueError(f"only {available} of {line['sku']!r} in stock")
        for line in context.data["items"]:
            inventory[line["sku"]] -= line["quantity"]
        order_id = context.data["orderId"]
        return {
            "type": "evt.inventory.reserve.success",
            "data": {"orderId": order_id, "reservationId": f"res-{order_id}"},
        }

    async def release(_context: HandlerContext) -> HandlerOutput:
        return {"type": "evt.inventory.release.success", "data": {"released": True}}

    async def charge(context: HandlerContext) -> HandlerOutput | None:
        if context.data["customerId"] == SILENT_BANK_CUSTOMER:
            return None  # the bank never answers: the order's payment timeout decides
        if context.data["amountCents"] > PAYMENT_LIMIT_CENTS:
            raise PaymentDeclinedError(
                f"card declined: {context.data['amountCents']} cents is over the limit of "
                f"{PAYMENT_LIMIT_CENTS}"
            )
        order_id = context.data["orderId"]
        return {
            "type": "evt.payment.charge.success",
            "data": {"orderId": order_id, "chargeId": f"ch-{order_id}"},
        }

    async def quote(context: HandlerContext) -> HandlerOutput | None:
        country = context.data["country"]
        if country in SILENT_CARRIER_COUNTRIES:
            return None  # no carrier answers: the order waits until its deadline (or a cancel)
        if country not in SHIPPING_COUNTRIES:
            raise ShipmentError(f"no carrier ships to {country}")
        price = 495 + int(context.data["weightKg"] * 120)
        return {"type": "evt.shipping.quote.success", "data": {"carrier": "parcelco", "priceCents": price}}

    async def book(context: HandlerContext) -> HandlerOutput:
        return {"type": "evt.shipping.book.success", "data": {"trackingId": f"TRK-{context.data['orderId']}"}}

    return [
        ArvoEventHandler(contract=inventory_reserve_contract, executionunits=1, handler={"1.0.0": reserve}),
        ArvoEventHandler(contract=inventory_release_contract, executionunits=1, handler={"1.0.0": release}),
        ArvoEventHandler(contract=payment_charge_contract, executionunits=2, handler={"1.0.0": charge}),
        ArvoEventHandler(contract=shipping_quote_contract, executionunits=1, handler={"1.0.0": quote}),
        ArvoEventHandler(contract=shipping_book_contract, executionunits=1, handler={"1.0.0": book}),
    ]


def _order_context(args: ActionArgs) -> dict[str, Any]:
    data = args.input["data"]
    items = [
        {"sku": line["sku"], "quantity": line["quantity"], "unitPriceCents": line["unitPriceCents"]}
        for line in data["items"]
    ]
    return {
        "subject": args.input["subject"],
        "orderId": data["orderId"],
        "customerId": data["customerId"],
        "country": data["country"],
        "items": items,
        "totalCents": sum(line["quantity"] * line["unitPriceCents"] for line in items),
        "weightKg": sum(line["quantity"] for line in items) * KG_PER_UNIT,
        "reservationId": None,
        "chargeId": None,
        "paymentDeclined": False,
        "trackingId": None,
        "status": None,
        "reason": None,
    }


def _escalate(args: ActionArgs) -> None:
    raise OrderEscalationError(
        f"order {args.context['orderId']} needs attention: {args.event['data']['errorMessage']}"
    )


order_machine: ArvoMachine = setup_arvo_machine(
    contracts={
        "self": order_contract.version("1.0.0"),
        "services": {
            "reserve": inventory_reserve_contract.version("1.0.0"),
            "release": inventory_release_contract.version("1.0.0"),
            "charge": payment_charge_contract.version("1.0.0"),
            "shipment": shipment_contract.version("1.0.0"),
        },
    },
    actions={"escalate": _escalate},
    guards={"payment_declined": lambda args: bool(args.context["paymentDeclined"])},
    delays={"PAYMENT_TIMEOUT": PAYMENT_TIMEOUT_MS},
).create_machine(
    {
        "id": "order",
        "context": _order_context,
        "initial": "processing",
        "states": {
            "processing": {
                "type": "parallel",
                "states": {
                    "inventory": {
                        "initial": "reserving",
                        "states": {
                            "reserving": {
                                "entry": emit(
                                    lambda args: {
                                        "type": "com.inventory.reserve",
                                        "data": {
                                            "orderId": args.context["orderId"],
                                            "items": args.context["items"],
                                        },
                                    }
                                ),
                                "on": {
                                    "evt.inventory.reserve.success": {
                                        "target": "reserved",
                                        "actions": assign(
                                            {
                                                "reservationId": lambda args: args.event["data"][
                                                    "reservationId"
                                                ]
                                            }
                                        ),
                                    },
                                    "sys.com.inventory.reserve.error": {"actions": "escalate"},
                                },
                            },
                            "reserved": {"type": "final"},
                        },
                    },
                    "payment": {
                        "initial": "charging",
                        "states": {
                            "charging": {
                                "entry": emit(
                                    lambda args: {
                                        "type": "com.payment.charge",
                                        "data": {
                                            "orderId": args.context["orderId"],
                                            "customerId": args.context["customerId"],
                                            "amountCents": args.context["totalCents"],
                                        },
                                    }
                                ),
                                "on": {
                                    "evt.payment.charge.success": {
                                        "target": "charged",
                                        "actions": assign(
                                            {"chargeId": lambda args: args.event["data"]["chargeId"]}
                                        ),
                                    },
                                    "sys.com.payment.charge.error": {
                                        "target": "declined",
                                        "actions": assign(
                                            {
                                                "paymentDeclined": True,
                                                "reason": lambda args: args.event["data"]["errorMessage"],
                                            }
                                        ),
                                    },
                                },
                                # No answer from payment in time: treated as declined, so the
                                # reservation is released (compensation) and the order ends.
                                "after": {
                                    "PAYMENT_TIMEOUT": {
                                        "target": "declined",
                                        "actions": assign(
                                            {
                                                "paymentDeclined": True,
                                                "reason": "payment did not answer within "
                                                f"{PAYMENT_TIMEOUT_MS // 1000} s",
                                            }
                                        ),
                                    }
                                },
                            },
                            "charged": {"type": "final"},
                            "declined": {"type": "final"},
                        },
                    },
                },
                "onDone": "routing",
            },
            "routing": {
                "always": [{"guard": "payment_declined", "target": "compensating"}, {"target": "shipping"}]
            },
            "compensating": {
                "entry": emit(
                    lambda args: {
                        "type": "com.inventory.release",
                        "data": {"reservationId": args.context["reservationId"]},
                    }
                ),
                "on": {"evt.inventory.release.success": {"target": "declined"}},
            },
            "shipping": {
                "entry": emit(
                    lambda args: {
                        "type": "arvo.orc.shipment",
                        "data": {
                            "parentSubject$$": args.context["subject"],
                            "orderId": args.context["orderId"],
                            "country": args.context["country"],
                            "weightKg": args.context["weightKg"],
                        },
                    }
                ),
                "on": {
                    "arvo.orc.shipment.done": {
                        "target": "fulfilled",
                        "actions": assign({"trackingId": lambda args: args.event["data"]["trackingId"]}),
                    },
                    "sys.arvo.orc.shipment.error": {
                        "target": "shipping_failed",
                        "actions": assign({"reason": lambda args: args.event["data"]["errorMessage"]}),
                    },
                },
            },
            "fulfilled": {"type": "final", "entry": assign({"status": "fulfilled"})},
            "declined": {"type": "final", "entry": assign({"status": "payment_declined"})},
            "shipping_failed": {"type": "final", "entry": assign({"status": "shipping_failed"})},
        },
        "output": lambda args: {
            "orderId": args.context["orderId"],
            "status": args.context["status"],
            "totalCents": args.context["totalCents"],
            "trackingId": args.context["trackingId"],
            "reason": args.context["reason"],
        },
    }
)
"""The order statechart (version 1.0.0)."""


def order_orchestrator(memory: Memory, *, include_error_stack: bool = False) -> ArvoOrchestrator:
    """The ``arvo.orc.order`` orchestrator: an order not finished within ``ORDER_DEADLINE_S`` times out."""
    return create_arvo_orchestrator(
        executionunits=5,
        memory=memory,
        machines=[order_machine],
        include_error_stack=include_error_stack,
        deadline_s=ORDER_DEADLINE_S,
    )


async def _shipment_v1(context: ResumableContext) -> ResumableResult | None:
    if context.input is not None:
        data = context.input["data"]
        shipment = {"orderId": data["orderId"], "country": data["country"], "weightKg": data["weightKg"]}
        return {"context": shipment, "services": [{"type": "com.shipping.quote", "data": shipment}]}
    state = dict(context.context or {})
    reply = context.service or {}
    reply_type = reply.get("type")
    if reply_type == "sys.com.shipping.quote.error":
        raise ShipmentError(
            f"shipment of order {state.get('orderId')} failed: {reply['data']['errorMessage']}"
        )
    if reply_type == "evt.shipping.quote.success":
        carrier = reply["data"]["carrier"]
        return {
            "context": {**state, "carrier": carrier},
            "services": [
                {"type": "com.shipping.book", "data": {"orderId": state["orderId"], "carrier": carrier}}
            ],
        }
    if reply_type == "evt.shipping.book.success":
        return {
            "output": {
                "orderId": state["orderId"],
                "carrier": state["carrier"],
                "trackingId": reply["data"]["trackingId"],
            }
        }
    return None


def shipment_resumable(memory: Memory, *, include_error_stack: bool = False) -> ArvoResumable:
    """The ``arvo.orc.shipment`` resumable (child of the order)."""
    return ArvoResumable(
        contract=shipment_contract,
        services={
            "quote": shipping_quote_contract.version("1.0.0"),
            "book": shipping_book_contract.version("1.0.0"),
        },
        memory=memory,
        handler={"1.0.0": _shipment_v1},
        executionunits=2,
        include_error_stack=include_error_stack,
    )
