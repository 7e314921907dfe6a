"""Agents coordinating over streams (README, "Streams"): an inventory agent announces stock
levels, a pricing agent reacts to every announcement of its SKU (an implicit subscription),
and a planner follows the prices it subscribed to and publishes plans a client watches.

Run a silo with ``--grains examples.stock_agents``; tests/integration/test_stock_example.py
runs the README's client script against real silos.
"""

# stock_agents.py
from grainery import Grain, implicit_subscription


def newer(token: str, last: str | None) -> bool:
    """Tokens increase per stream: a redelivered event has a token we have already seen."""
    return last is None or tuple(map(int, token.split("-"))) > tuple(map(int, last.split("-")))


class Inventory(Grain):
    async def restock(self, sku: str, change: int) -> str:
        level = self.state[sku] = self.state.get(sku, 0) + change
        await self.write_state()
        return await self.get_stream("stock", sku).publish({"sku": sku, "level": level})


@implicit_subscription("stock")  # the Pricing grain whose key is the SKU gets its events
class Pricing(Grain):
    async def on_stream_event(self, namespace, key, event, token) -> None:
        if not newer(token, self.state.get("last")):
            return  # a duplicate (delivery is at-least-once)
        price = 12.0 if event["level"] < 5 else 10.0
        await self.get_stream("prices", key).publish({**event, "price": price})
        self.state["last"] = token
        await self.write_state()


class Planner(Grain):
    async def follow(self, sku: str) -> None:
        await self.subscribe("prices", sku)  # stored: survives restarts

    async def on_stream_event(self, namespace, key, event, token) -> None:
        if not newer(token, self.state.get(key)):
            return
        plan = "reorder" if event["level"] < 5 else "hold"
        await self.get_stream("plans", key).publish({**event, "plan": plan})
        self.state[key] = token
        await self.write_state()
