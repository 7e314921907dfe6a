"""Supply chain: an order agent runs a durable plan over other agents.

``OrderAgent.fulfil(order)`` (``@durable``): reserve stock at the ``Inventory`` agent ->
above a value threshold, wait for a human's approval signal -> book transport with the
``Transport`` agent (a flaky tool, retried by a RetryPolicy) -> have the supplier checked by
its ``Compliance`` agent -> confirm; when compliance fails, a saga compensation releases the
reserved stock and cancels the transport booking. Every effect on another agent carries the
step's ``self.step_key``, and the agents apply each key once: a step that runs again after a
crash (it ran, but its silo died before it was recorded) changes nothing twice.

Tools are deterministic offline stand-ins: the transport tool fails a seeded number of times
per order; the compliance "model" rejects suppliers on a fixed list. ``run_orders`` is what
``make demo`` runs (examples/demo.py), a kill -9 of a silo included.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

from grainery import Grain, GrainClient, RetryPolicy, durable, read_only

PRICES = {"widget": 5, "gadget": 20, "gizmo": 12}
INITIAL_STOCK = 10_000  # per SKU
APPROVAL_THRESHOLD = 1000  # order value above which a human must approve
BLOCKED_SUPPLIERS = {"shady-co"}
TRANSPORT_RETRY = RetryPolicy(max_attempts=5, initial=0.05, backoff=2.0, max_interval=0.5,
                              timeout=5.0)


class Inventory(Grain):
    """Stock of one SKU. Reservations are keyed by the caller's step key: a repeated
    reserve or release with the same key is a no-op (an idempotent effect)."""

    async def on_activate(self) -> None:
        self.state.setdefault("stock", INITIAL_STOCK)
        self.state.setdefault("reservations", {})

    async def reserve(self, key: str, quantity: int) -> dict[str, Any]:
        held = self.state["reservations"]
        if key not in held:
            if quantity > self.state["stock"]:
                raise ValueError(f"only {self.state['stock']} {self.key} left")
            self.state["stock"] -= quantity
            held[key] = quantity
            await self.write_state()
        return {"reservation": key, "quantity": held[key]}

    async def release(self, reservation: str) -> int:
        quantity = self.state["reservations"].pop(reservation, 0)
        if quantity:
            self.state["stock"] += quantity
            await self.write_state()
        return int(self.state["stock"])

    @read_only
    async def stock(self) -> int:
        return int(self.state["stock"])


class Transport(Grain):
    """A carrier's booking tool: flaky (fails a seeded number of times per order)."""

    async def book(self, key: str, order_id: str) -> dict[str, Any]:
        bookings = self.state.setdefault("bookings", {})
        if key in bookings:
            return dict(bookings[key])
        tries = self.state.setdefault("tries", {})
        tries[order_id] = tries.get(order_id, 0) + 1
        await self.write_state()
        if tries[order_id] <= random.Random(order_id).randint(0, 2):
            raise ConnectionError(f"carrier API timed out (try {tries[order_id]})")
        bookings[key] = {"booking": f"TRK-{zlib.crc32(key.encode()) % 10**6:06d}",
                         "order": order_id}
        await self.write_state()
        return dict(bookings[key])

    async def cancel_booking(self, booking: str) -> bool:
        bookings = self.state.get("bookings", {})
        for key, value in list(bookings.items()):
            if value["booking"] == booking:
                del bookings[key]
                await self.write_state()
                return True
        return False


class Compliance(Grain):
    """A supplier's compliance agent; its "model" is a fixed, offline rule."""

    async def check(self, order_id: str) -> dict[str, Any]:
        if self.key in BLOCKED_SUPPLIERS:
            return {"ok": False, "reason": f"{self.key} failed the sanctions screening"}
        return {"ok": True, "reason": "certificates valid"}


class OrderAgent(Grain):
    """One order's agent; ``fulfil`` is its durable plan, ``progress`` a query."""

    def __init__(self) -> None:
        self.stage = "new"

    @durable
    async def fulfil(self, order: dict[str, Any]) -> dict[str, Any]:
        value = PRICES[order["sku"]] * order["quantity"]
        self.stage = "reserving stock"
        reservation = await self.step("reserve stock", self._reserve, order)
        if value > APPROVAL_THRESHOLD:
            self.stage = f"awaiting approval (value {value})"
            approval = await self.wait_signal("approval", timeout=3600)
            if not approval.get("approved"):
                await self.step("release stock", self._release, order, reservation)
                self.stage = "declined"
                return {"order": order["id"], "status": "declined", "by": approval.get("by")}
        self.stage = "booking transport"
        booking = await self.step("book transport", self._book, order, retry=TRANSPORT_RETRY)
        self.stage = "compliance check"
        verdict = await self.step("compliance", self._comply, order)
        if not verdict["ok"]:
            self.stage = "compensating"
            await self.step("release stock", self._release, order, reservation)
            await self.step("cancel transport", self._cancel_booking, booking)
            self.stage = "rejected"
            return {"order": order["id"], "status": "rejected", "reason": verdict["reason"]}
        self.stage = "confirmed"
        return {"order": order["id"], "status": "confirmed", "value": value,
                "booking": booking["booking"]}

    async def _reserve(self, order: dict[str, Any]) -> dict[str, Any]:
        inventory = self.get_grain("Inventory", order["sku"])
        result: dict[str, Any] = await inventory.reserve(self.step_key, order["quantity"])
        return result

    async def _release(self, order: dict[str, Any], reservation: dict[str, Any]) -> int:
        stock: int = await self.get_grain("Inventory", order["sku"]).release(
            reservation["reservation"])
        return stock

    async def _book(self, order: dict[str, Any]) -> dict[str, Any]:
        booking: dict[str, Any] = await self.get_grain("Transport", "carrier").book(
            self.step_key, order["id"])
        return booking

    async def _cancel_booking(self, booking: dict[str, Any]) -> bool:
        return bool(await self.get_grain("Transport", "carrier").cancel_booking(booking["booking"]))

    async def _comply(self, order: dict[str, Any]) -> dict[str, Any]:
        verdict: dict[str, Any] = await self.get_grain("Compliance", order["supplier"]).check(
            order["id"])
        return verdict

    @read_only
    async def progress(self) -> dict[str, str]:
        return {"stage": self.stage, "silo": self.silo_id}


ORDERS = [
    {"id": "order-1", "sku": "widget", "quantity": 20, "supplier": "acme"},
    {"id": "order-2", "sku": "gadget", "quantity": 300, "supplier": "acme"},  # needs approval
    {"id": "order-3", "sku": "gizmo", "quantity": 50, "supplier": "shady-co"},  # compensated
    {"id": "order-4", "sku": "widget", "quantity": 40, "supplier": "globex"},
    {"id": "order-5", "sku": "gizmo", "quantity": 150, "supplier": "globex"},  # needs approval
    {"id": "order-6", "sku": "gadget", "quantity": 60, "supplier": "initech"},  # needs approval
]
EXPECTED = {"order-1": "confirmed", "order-2": "confirmed", "order-3": "rejected",
            "order-4": "confirmed", "order-5": "confirmed", "order-6": "confirmed"}
EXPECTED_STOCK = {"widget": 9940, "gadget": 9640, "gizmo": 9850}


def start_orders(client: GrainClient) -> list[asyncio.Future[Any]]:
    """Start every order's plan; each caller waits for its result in a task of its own."""
    return [asyncio.ensure_future(client.get_grain("OrderAgent", o["id"]).fulfil(o))
            for o in ORDERS]


async def waiting_for_approval(client: GrainClient) -> dict[str, str]:
    """The orders whose plan waits for a human, with the silo each agent is on."""
    waiting = {}
    for order in ORDERS:
        progress = await client.get_grain("OrderAgent", order["id"]).progress()
        if progress["stage"].startswith("awaiting approval"):
            waiting[order["id"]] = progress["silo"]
    return waiting


async def approve_all(client: GrainClient, orders: list[str], by: str) -> None:
    for order_id in orders:
        await client.get_grain("OrderAgent", order_id).signal(
            "approval", {"approved": True, "by": by})


async def results(client: GrainClient, timeout: float = 60.0) -> dict[str, Any]:
    """Every order's result, from its run's status: a caller may have lost its call to a
    crash (the run itself goes on, on the agent's new silo)."""
    found = {}
    for order in ORDERS:
        found[order["id"]] = await client.get_grain("OrderAgent", order["id"]).run_result(
            timeout=timeout)
    return found


async def stock(client: GrainClient) -> dict[str, int]:
    return {sku: await client.get_grain("Inventory", sku).stock() for sku in PRICES}
