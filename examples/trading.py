"""Trading: a decision agent's durable plan over market-data, analysis and risk agents.

``TradingDesk.trade(symbol, budget)`` (``@durable``): fetch quotes from three exchanges in
parallel (``asyncio.gather`` of steps, each a call to that exchange's ``MarketData`` agent:
fan-out/fan-in) -> ``TechnicalAnalysis`` scores them -> ``Risk`` classifies the trade, and
the risk level routes to a strategy (momentum, or a hedged position, or no trade) -> the
order is executed (recorded once, keyed by ``self.step_key``). ``progress()`` is a
``@read_only`` query answered while the plan runs.

Everything is an offline stand-in seeded by its inputs (prices, the analysis "model", the
risk rule), so a run is reproducible and needs no network.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from grainery import Grain, durable, read_only

EXCHANGES = ["nasdaq", "lse", "xetra"]
QUOTE_LATENCY = 0.15  # seconds an exchange takes to answer (so progress can be watched)


class MarketData(Grain):
    """One exchange's market-data agent: a seeded quote per symbol."""

    async def quote(self, symbol: str) -> dict[str, Any]:
        await asyncio.sleep(QUOTE_LATENCY)  # the exchange's latency, simulated
        rng = random.Random(f"{self.key}/{symbol}")
        return {"exchange": self.key, "symbol": symbol,
                "price": round(100 + rng.uniform(-5, 5), 2),
                "volume": rng.randint(1_000, 50_000)}


class TechnicalAnalysis(Grain):
    """The analysis "model": a deterministic score from the quotes."""

    async def analyse(self, quotes: list[dict[str, Any]]) -> dict[str, Any]:
        prices = [q["price"] for q in quotes]
        spread = max(prices) - min(prices)
        mean = sum(prices) / len(prices)
        signal = "buy" if mean < 100 else "sell"
        return {"signal": signal, "mean": round(mean, 2), "spread": round(spread, 2),
                "confidence": round(max(0.0, 1 - spread / 10), 2)}


class Risk(Grain):
    """The risk desk: the level decides which strategy the decision agent may use."""

    async def assess(self, symbol: str, budget: float, analysis: dict[str, Any]
                     ) -> dict[str, Any]:
        exposure = self.state.get("exposure", 0.0) + budget
        if analysis["confidence"] < 0.3 or exposure > 1_000_000:
            level = "blocked"
        elif analysis["confidence"] < 0.7 or budget > 50_000:
            level = "high"
        else:
            level = "low"
        return {"level": level, "exposure": exposure}

    async def commit(self, key: str, amount: float) -> float:
        """Book the exposure of an executed trade once per key (idempotent)."""
        booked = self.state.setdefault("booked", {})
        if key not in booked:
            booked[key] = amount
            self.state["exposure"] = self.state.get("exposure", 0.0) + amount
            await self.write_state()
        return float(self.state["exposure"])


class TradingDesk(Grain):
    """The decision agent for one account."""

    def __init__(self) -> None:
        self.stage = "idle"
        self.fetched = 0

    @durable
    async def trade(self, symbol: str, budget: float) -> dict[str, Any]:
        self.stage, self.fetched = "fetching quotes", 0
        quotes = await asyncio.gather(*(
            self.step(f"quote {exchange}", self._quote, exchange, symbol)
            for exchange in EXCHANGES
        ))
        self.stage = "analysing"
        analysis = await self.step("analyse", self._analyse, symbol, quotes)
        self.stage = "assessing risk"
        risk = await self.step("assess risk", self._assess, symbol, budget, analysis)
        if risk["level"] == "blocked":
            self.stage = "no trade"
            return {"symbol": symbol, "strategy": "none", "risk": risk["level"]}
        strategy = "momentum" if risk["level"] == "low" else "hedged"
        self.stage = f"planning ({strategy})"
        plan = await self.step(f"plan {strategy}", _plan, strategy, analysis, budget)
        self.stage = "executing"
        fill = await self.step("execute", self._execute, symbol, plan)
        self.stage = "done"
        return {"symbol": symbol, "strategy": strategy, "risk": risk["level"], **fill}

    async def _quote(self, exchange: str, symbol: str) -> dict[str, Any]:
        quote: dict[str, Any] = await self.get_grain("MarketData", exchange).quote(symbol)
        self.fetched += 1
        return quote

    async def _analyse(self, symbol: str, quotes: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_grain("TechnicalAnalysis", symbol).analyse(quotes)
        return result

    async def _assess(self, symbol: str, budget: float, analysis: dict[str, Any]
                      ) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_grain("Risk", "desk").assess(
            symbol, budget, analysis)
        return result

    async def _execute(self, symbol: str, plan: dict[str, Any]) -> dict[str, Any]:
        exposure = await self.get_grain("Risk", "desk").commit(self.step_key, plan["notional"])
        return {"side": plan["side"], "notional": plan["notional"], "exposure": exposure,
                "order_key": self.step_key}

    @read_only
    async def progress(self) -> dict[str, Any]:
        return {"stage": self.stage, "quotes": self.fetched}


def _plan(strategy: str, analysis: dict[str, Any], budget: float) -> dict[str, Any]:
    """The strategy "model" (a sync function: it runs on the silo's blocking pool)."""
    side = analysis["signal"]
    if strategy == "momentum":
        return {"side": side, "notional": round(budget, 2)}
    return {"side": side, "notional": round(budget * 0.5, 2), "hedge": round(budget * 0.25, 2)}
