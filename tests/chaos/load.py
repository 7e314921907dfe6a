"""Many concurrent writers: each op is one call, recorded in the ledger with its outcome.

Every append carries an op id never used before, and no op is ever re-sent by the load
(a failed op is recorded and the writer moves on with a new id), so a stored duplicate can
only come from the system running one call twice. A share of the calls only read
(``peek``): a read served by an activation that should no longer be live is what the
single-activation check looks for.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from grainery.client import GrainClient
from tests.chaos.ledger import Ledger, Op, Outcome, classify, describe
from tests.eventually import eventually

GRAIN_TYPE = "ChaosProbe"
READ_SHARE = 0.25
PACE = 0.005  # seconds between one writer's ops: room for heartbeats on a 2-core machine
BACKOFF = 0.05  # seconds after a failed op, as a real caller would back off


async def call(
    client: GrainClient, ledger: Ledger, clock: Callable[[], float], key: str, method: str,
    op_id: str, timeout: float,
) -> tuple[Op, Any]:
    """One call; whatever happens, it ends up in the ledger with an outcome. Returns the op
    and the call's result (None when it failed)."""
    op = ledger.add(Op(key, method, op_id, sent=clock()))
    result: Any = None
    try:
        result = await client.invoke(GRAIN_TYPE, key, method, [op_id] if op_id else [],
                                     timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - every failure is an outcome to record
        op.outcome, op.error = classify(exc), describe(exc)
    else:
        op.outcome = Outcome.ACKED
        op.silo, op.activation = str(result["silo"]), str(result["activation"])
    finally:
        op.received = clock()
    return op, result


class ChaosLoad:
    def __init__(
        self, client: GrainClient, ledger: Ledger, clock: Callable[[], float], grains: list[str],
        writers: int, seed: int, timeout: float,
    ) -> None:
        self.client, self.ledger, self.clock = client, ledger, clock
        self.grains, self.writers, self.seed, self.timeout = grains, writers, seed, timeout
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> ChaosLoad:
        self._tasks = [asyncio.create_task(self._write(f"w{i}", random.Random(self.seed + i)))
                       for i in range(self.writers)]
        return self

    def acked(self) -> int:
        return sum(1 for op in self.ledger.ops if op.outcome is Outcome.ACKED)

    async def stop(self) -> None:
        """Stop sending; wait for the ops in flight (each bounded by its call timeout)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, name: str, rng: random.Random) -> None:
        while not self._stop.is_set():
            key = rng.choice(self.grains)
            if rng.random() < READ_SHARE:
                op, _ = await call(self.client, self.ledger, self.clock, key, "peek", "",
                                   self.timeout)
            else:
                op, _ = await call(self.client, self.ledger, self.clock, key, "append",
                                   self.ledger.new_op_id(name), self.timeout)
            await asyncio.sleep(PACE if op.outcome is Outcome.ACKED else BACKOFF)


async def wait_writable(
    client: GrainClient, ledger: Ledger, clock: Callable[[], float], key: str, bound: float,
) -> Op:
    """Check 4 for one grain: a fresh append is acknowledged within ``bound`` seconds. Every
    attempt is a new op in the ledger, so the end checks cover these writes as well."""

    async def attempt() -> Op:
        op, _ = await call(client, ledger, clock, key, "append", ledger.new_op_id("final"),
                           min(5.0, bound))
        if op.outcome is not Outcome.ACKED:
            raise AssertionError(f"ChaosProbe/{key}: write {op.label()}")
        return op

    result: Op = await eventually(
        attempt, bound, f"[check 4] ChaosProbe/{key} accepting a write after the faults stopped"
    )
    return result


async def read_through_client(
    client: GrainClient, ledger: Ledger, clock: Callable[[], float], key: str, bound: float,
) -> list[str]:
    """The grain's list as an activation serves it (the read is in the ledger too, so the
    single-activation check sees it)."""

    async def attempt() -> dict[str, Any]:
        op, result = await call(client, ledger, clock, key, "ops", "", min(5.0, bound))
        if op.outcome is not Outcome.ACKED:
            raise AssertionError(f"ChaosProbe/{key}: read {op.label()}")
        return dict(result)  # never empty, so `eventually` takes it even for an empty list

    answer = await eventually(
        attempt, bound, f"ChaosProbe/{key} answering a read through a fresh client"
    )
    return [str(item) for item in answer["ops"]]


async def burst(
    client: GrainClient, ledger: Ledger, clock: Callable[[], float], keys: list[str],
    per_grain: int, timeout: float,
) -> list[Op]:
    """``per_grain`` concurrent appends to every grain at once, each sent once: in a quiet,
    healed cluster each must be acknowledged (the client may retry what provably did not
    run, nothing else)."""
    calls = [call(client, ledger, clock, key, "append", ledger.new_op_id("burst"), timeout)
             for key in keys for _ in range(per_grain)]
    return [op for op, _ in await asyncio.gather(*calls)]
