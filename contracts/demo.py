"""The demo's contracts: order fulfilment across inventory, payment and a shipment child workflow."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.arvo.contract import create_arvo_orchestrator_contract, create_simple_arvo_contract

__all__ = [
    "inventory_release_contract",
    "inventory_reserve_contract",
    "order_contract",
    "payment_charge_contract",
    "shipment_contract",
    "shipping_book_contract",
    "shipping_quote_contract",
]


class OrderLine(BaseModel):
    """One line of an order."""

    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    unit_price_cents: int = Field(ge=0, alias="unitPriceCents")

    model_config = {"populate_by_name": True}


class ReserveInput(BaseModel):
    """Reserve stock for an order."""

    orderId: str  # noqa: N815 - wire field names are camelCase like the TypeScript services
    items: list[OrderLine]


class ReserveOutput(BaseModel):
    """The reservation."""

    orderId: str  # noqa: N815
    reservationId: str  # noqa: N815


class ReleaseInput(BaseModel):
    """Release a reservation (compensation)."""

    reservationId: str  # noqa: N815


class ReleaseOutput(BaseModel):
    """Whether stock was returned."""

    released: bool


class ChargeInput(BaseModel):
    """Charge a customer."""

    orderId: str  # noqa: N815
    customerId: str  # noqa: N815
    amountCents: int = Field(ge=0)  # noqa: N815


class ChargeOutput(BaseModel):
    """The charge."""

    orderId: str  # noqa: N815
    chargeId: str  # noqa: N815


class QuoteInput(BaseModel):
    """Ask for a shipping quote."""

    orderId: str  # noqa: N815
    country: str = Field(min_length=2, max_length=2)
    weightKg: float = Field(gt=0)  # noqa: N815


class QuoteOutput(BaseModel):
    """The cheapest carrier."""

    carrier: str
    priceCents: int  # noqa: N815


class BookInput(BaseModel):
    """Book a shipment with a carrier."""

    orderId: str  # noqa: N815
    carrier: str


class BookOutput(BaseModel):
    """The booked shipment."""

    trackingId: str  # noqa: N815


class OrderInit(BaseModel):
    """Start an order."""

    orderId: str  # noqa: N815
    customerId: str  # noqa: N815
    country: str = Field(min_length=2, max_length=2)
    items: list[OrderLine] = Field(min_length=1)


class OrderComplete(BaseModel):
    """How the order ended."""

    orderId: str  # noqa: N815
    status: Literal["fulfilled", "payment_declined", "shipping_failed"]
    totalCents: int  # noqa: N815
    trackingId: str | None = None  # noqa: N815
    reason: str | None = None


class ShipmentInit(BaseModel):
    """Ship an order."""

    orderId: str  # noqa: N815
    country: str
    weightKg: float  # noqa: N815


class ShipmentComplete(BaseModel):
    """The shipment."""

    orderId: str  # noqa: N815
    carrier: str
    trackingId: str  # noqa: N815


inventory_reserve_contract = create_simple_arvo_contract(
    uri="#/demo/inventory/reserve",
    type="inventory.reserve",
    versions={"1.0.0": {"accepts": ReserveInput, "emits": ReserveOutput}},
    description="Reserves stock; fails for unknown SKUs or missing stock.",
)
inventory_release_contract = create_simple_arvo_contract(
    uri="#/demo/inventory/release",
    type="inventory.release",
    versions={"1.0.0": {"accepts": ReleaseInput, "emits": ReleaseOutput}},
    description="Returns reserved stock (compensation).",
)
payment_charge_contract = create_simple_arvo_contract(
    uri="#/demo/payment/charge",
    type="payment.charge",
    versions={"1.0.0": {"accepts": ChargeInput, "emits": ChargeOutput}},
    description="Charges a customer; declines amounts above the customer's limit.",
)
shipping_quote_contract = create_simple_arvo_contract(
    uri="#/demo/shipping/quote",
    type="shipping.quote",
    versions={"1.0.0": {"accepts": QuoteInput, "emits": QuoteOutput}},
    description="Quotes the cheapest carrier; fails for countries nobody ships to.",
)
shipping_book_contract = create_simple_arvo_contract(
    uri="#/demo/shipping/book",
    type="shipping.book",
    versions={"1.0.0": {"accepts": BookInput, "emits": BookOutput}},
    description="Books a shipment.",
)
order_contract = create_arvo_orchestrator_contract(
    uri="#/demo/order",
    name="order",
    versions={"1.0.0": {"init": OrderInit, "complete": OrderComplete}},
    description="Order fulfilment: reserve and charge in parallel, then ship (child workflow).",
)
"""``arvo.orc.order``."""
shipment_contract = create_arvo_orchestrator_contract(
    uri="#/demo/shipment",
    name="shipment",
    versions={"1.0.0": {"init": ShipmentInit, "complete": ShipmentComplete}},
    description="Shipment: quote then book (a resumable, started by the order as a child).",
)
"""``arvo.orc.shipment``."""
