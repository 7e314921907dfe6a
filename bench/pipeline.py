"""The call pipeline's cost, and grain-to-grain calls (issue 10).

Why: call context and filters ride on every call, so a feature nobody uses must cost almost
nothing, and a used one little. Same run, same machine: warm ``add(1)`` calls at 64 in
flight on one silo with no filter and no context (the wave-1 path), then on a silo started
with one no-op ``--filter`` while the client sets a request-context value on every call.
Grain-to-grain: a relay grain on silo 1 calls a counter on silo 2 (two hops per call),
measured against direct client calls to the same counters.
"""

from __future__ import annotations

import time

from bench.cluster import Cluster, core_unavailable
from bench.common import Measurement, RunConfig, closed_loop, run_async, sweep

NAME = "pipeline"
DESCRIPTION = "call pipeline cost (context + no-op filter) and grain-to-grain calls"
KEYS = [f"pipe-{i}" for i in range(1024)]
IN_FLIGHT = 64


def unavailable() -> str | None:
    return core_unavailable()


async def _warm(cfg: RunConfig, cluster: Cluster, case: str, context: bool) -> Measurement:
    from grainery import GrainClient, request_context

    async with GrainClient(*cluster.addresses) as client:
        prep = await sweep(lambda i: client.get_grain("BenchCounter", KEYS[i]).add(0),
                           len(KEYS), 64)
        if prep.errors:
            raise RuntimeError(f"activating: {prep.error_samples}")

        async def call(i: int) -> None:
            if context:
                with request_context(tenant="acme"):
                    await client.get_grain("BenchCounter", KEYS[i % len(KEYS)]).add(1)
            else:
                await client.get_grain("BenchCounter", KEYS[i % len(KEYS)]).add(1)

        cfg.log(f"{NAME}: {case}, {IN_FLIGHT} in flight")
        res = await closed_loop(call, IN_FLIGHT, cfg.duration, cfg.warmup)
        return Measurement(case, IN_FLIGHT, res.metrics(), {"errors": res.error_samples})


async def _grain_to_grain(cfg: RunConfig, cluster: Cluster) -> list[Measurement]:
    """Relays owned by the first silo, counters owned by the second (by the ring)."""
    from grainery import GrainClient

    first, second = cluster.addresses[:2]
    async with GrainClient(*cluster.addresses) as client:
        await client.wait_for_members(2)
        ring = client.router.ring
        relays = [k for k in (f"relay-{i}" for i in range(20_000))
                  if (o := ring.owner(_grain("BenchRelay", k))) and o.address == first][:512]
        counters = [k for k in (f"count-{i}" for i in range(20_000))
                    if (o := ring.owner(_grain("BenchCounter", k))) and o.address == second][:512]
        n = min(len(relays), len(counters))
        if n == 0:
            raise RuntimeError("the ring gave no keys to one of the two silos")
        for grain_type, keys in (("BenchRelay", relays), ("BenchCounter", counters)):
            prep = await sweep(lambda i, t=grain_type, ks=keys: client.get_grain(t, ks[i])
                               .call("add" if t == "BenchCounter" else "relay",
                                     0 if t == "BenchCounter" else counters[i % n]), n, 64)
            if prep.errors:
                raise RuntimeError(f"activating {grain_type}: {prep.error_samples}")

        async def direct(i: int) -> None:
            await client.get_grain("BenchCounter", counters[i % n]).add(1)

        async def relayed(i: int) -> None:
            await client.get_grain("BenchRelay", relays[i % n]).relay(counters[i % n])

        out = []
        for case, call in (("direct-client-call", direct), ("grain-to-grain", relayed)):
            cfg.log(f"{NAME}: {case}, {IN_FLIGHT} in flight")
            res = await closed_loop(call, IN_FLIGHT, cfg.duration, cfg.warmup)
            out.append(Measurement(case, IN_FLIGHT, res.metrics(), {"errors": res.error_samples}))
        return out


def _grain(grain_type: str, key: str) -> object:
    from grainery.client.routing import GrainId

    return GrainId(grain_type, key)


def run(cfg: RunConfig) -> list[Measurement]:
    out: list[Measurement] = []
    stamp = time.time_ns()
    with Cluster(1, f"bench-pipe-plain-{stamp}") as cluster:
        out.append(run_async(_warm(cfg, cluster, "plain", context=False), cfg.use_uvloop))
        out.append(run_async(_warm(cfg, cluster, "context", context=True), cfg.use_uvloop))
    with Cluster(1, f"bench-pipe-filter-{stamp}",
                 extra=["--filter", "bench.grains:no_op_filter"]) as cluster:
        out.append(run_async(_warm(cfg, cluster, "filter", context=False), cfg.use_uvloop))
        out.append(run_async(_warm(cfg, cluster, "context+filter", context=True),
                             cfg.use_uvloop))
    with Cluster(2, f"bench-pipe-g2g-{stamp}") as cluster:
        out.extend(run_async(_grain_to_grain(cfg, cluster), cfg.use_uvloop))
    return out
