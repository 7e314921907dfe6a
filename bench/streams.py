"""Streams (issue 12): publish -> implicit subscriber's hook, against bare Redis Streams.

Why: a stream delivery is an XADD, the pump's XREAD, a system call into the subscribing
grain and a fenced position write; the baseline is the least any design on Redis Streams
pays: a bare XADD producer and one XREAD BLOCK consumer, on the same machine, same run,
against a valkey-server of its own.

Cases (STREAMS keys of the namespace ``bench-stream``; each has one implicit subscriber):
- ``throughput``: publish as fast as 64 publishes in flight allow for the window, then wait
  until every event reached its hook: events/s = events / (first publish .. last hook).
- ``latency@1000``: publish 1,000 events/s (open loop, spread over the streams); each event
  carries the publisher's clock, the hook (or the bare consumer) measures publish-to-hook.
1 silo and 3 silos; the bare loop once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.cluster import Cluster, Valkey, core_unavailable, sum_metric
from bench.common import Measurement, RunConfig, percentile, run_async

NAME = "streams"
DESCRIPTION = "stream events: publish -> implicit subscriber's hook, vs bare Redis Streams"
STREAMS = 16
IN_FLIGHT = 64
RATE = 1000  # events/s for the latency case
NAMESPACE = "bench-stream"


def unavailable() -> str | None:
    return core_unavailable()


async def _open_loop(publish: Callable[[int, float], Awaitable[object]], seconds: float,
                     rate: int = RATE) -> int:
    """Start ``publish(i, t)`` every 1/rate seconds (not waiting for the previous one)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task[object]] = set()
    sent = 0
    while True:
        due = start + sent / rate
        now = loop.time()
        if due - start >= seconds:
            break
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.ensure_future(publish(sent, time.time()))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
    await asyncio.gather(*pending)
    return sent


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.005)


async def _grainery(cfg: RunConfig, cluster: Cluster, case: str) -> list[Measurement]:
    from grainery import GrainClient

    stamp = time.time_ns()
    keys = [f"s{stamp}-{i}" for i in range(STREAMS)]
    async with GrainClient(*cluster.addresses) as client:
        await client.wait_for_members(len(cluster.addresses))
        await _until(lambda: _partitions_settled(cluster), 60, "stream partitions held")
        streams = [client.get_stream(NAMESPACE, key) for key in keys]
        sinks = [client.get_grain("BenchStreamSink", key) for key in keys]

        async def delivered() -> int:
            return sum(await asyncio.gather(*(s.received() for s in sinks)))

        # Warm up: activate the sinks and let the pumps take every partition.
        for stream in streams:
            await stream.publish({"t": time.time()})
        await _until(lambda: _at_least(delivered(), STREAMS), 30, "warm-up deliveries")
        base = STREAMS

        # Throughput: closed loop of publishes, then wait for the hooks to catch up.
        cfg.log(f"{NAME}: {case} throughput, {IN_FLIGHT} publishes in flight")
        published = 0
        start = time.perf_counter()
        stop_at = start + cfg.duration

        async def publisher(worker: int) -> None:
            nonlocal published
            i = worker
            while time.perf_counter() < stop_at:
                await streams[i % STREAMS].publish({"t": time.time()})
                published += 1
                i += IN_FLIGHT

        await asyncio.gather(*(publisher(w) for w in range(IN_FLIGHT)))
        publish_rate = published / (time.perf_counter() - start)
        await _until(lambda: _at_least(delivered(), base + published), 120, "every delivery")
        elapsed = time.perf_counter() - start
        base += published
        for sink in sinks:
            await sink.take_latencies()
        out = [Measurement(f"{case}", IN_FLIGHT, {
            "events_per_s": published / elapsed, "publish_per_s": publish_rate,
        })]

        # Latency at 1,000 events/s.
        seconds = max(3.0, cfg.duration * 2)
        cfg.log(f"{NAME}: {case} latency at {RATE} events/s for {seconds:.0f}s")

        async def publish(i: int, t: float) -> None:
            await streams[i % STREAMS].publish({"t": t})

        sent = await _open_loop(publish, seconds)
        await _until(lambda: _at_least(delivered(), base + sent), 60, "latency deliveries")
        latencies = [x for sink in sinks for x in await sink.take_latencies()]
        out.append(Measurement(f"{case}", RATE, {
            "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "events": float(len(latencies)),
        }))
        return out


async def _partitions_settled(cluster: Cluster) -> bool:
    """Every partition held, by every silo (the ring's handover after the joins is over)."""
    held = [sum_metric(await asyncio.to_thread(silo.metrics), "grainery_stream_partitions")
            for silo in cluster.silos]
    return sum(held) == 32 and all(held)


async def _at_least(value: Awaitable[int], expected: int) -> bool:
    return await value >= expected


async def _bare(cfg: RunConfig, valkey: Valkey) -> list[Measurement]:
    """XADD from 64 concurrent producers; one consumer XREAD BLOCK over the streams."""
    import redis.asyncio as aioredis

    producer = aioredis.Redis.from_url(valkey.url)
    consumer = aioredis.Redis.from_url(valkey.url)
    keys = [f"bare-{time.time_ns()}-{i}" for i in range(STREAMS)]
    received = 0
    latencies: list[float] = []
    cursors = {key: "0-0" for key in keys}
    stop = asyncio.Event()

    async def consume() -> None:
        nonlocal received
        while not stop.is_set():
            replies = await consumer.xread(cursors, count=512, block=100)  # type: ignore[arg-type]
            now = time.time()
            for key, entries in replies or []:
                name = key.decode()
                for _, fields in entries:
                    latencies.append(now - float(fields[b"t"]))
                    received += 1
                cursors[name] = entries[-1][0].decode()

    reader = asyncio.create_task(consume())
    try:
        cfg.log(f"{NAME}: bare Redis Streams throughput, {IN_FLIGHT} XADDs in flight")
        published = 0
        start = time.perf_counter()
        stop_at = start + cfg.duration

        async def producer_loop(worker: int) -> None:
            nonlocal published
            i = worker
            while time.perf_counter() < stop_at:
                await producer.xadd(keys[i % STREAMS], {"t": str(time.time())},
                                    maxlen=100_000, approximate=True)
                published += 1
                i += IN_FLIGHT

        await asyncio.gather(*(producer_loop(w) for w in range(IN_FLIGHT)))

        async def caught_up() -> bool:
            return received >= published

        await _until(caught_up, 60, "bare consumer catching up")
        elapsed = time.perf_counter() - start
        out = [Measurement("bare-redis", IN_FLIGHT, {"events_per_s": published / elapsed})]

        latencies.clear()
        base = received
        seconds = max(3.0, cfg.duration * 2)
        cfg.log(f"{NAME}: bare Redis Streams latency at {RATE} events/s")

        async def publish(i: int, t: float) -> None:
            await producer.xadd(keys[i % STREAMS], {"t": str(t)}, maxlen=100_000,
                                approximate=True)

        sent = await _open_loop(publish, seconds)

        async def all_in() -> bool:
            return received >= base + sent

        await _until(all_in, 60, "bare latency deliveries")
        out.append(Measurement("bare-redis", RATE, {
            "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "events": float(len(latencies)),
        }))
        return out
    finally:
        stop.set()
        await reader
        await producer.aclose()
        await consumer.aclose()


def run(cfg: RunConfig) -> list[Measurement]:
    out: list[Measurement] = []
    stamp = time.time_ns()
    with Cluster(1, f"bench-streams-1-{stamp}") as cluster:
        out.extend(run_async(_grainery(cfg, cluster, "streams-1silo"), cfg.use_uvloop))
        assert cluster.valkey is not None
        out.extend(run_async(_bare(cfg, cluster.valkey), cfg.use_uvloop))
    with Cluster(3, f"bench-streams-3-{stamp}") as cluster:
        out.extend(run_async(_grainery(cfg, cluster, "streams-3silos"), cfg.use_uvloop))
    return out
