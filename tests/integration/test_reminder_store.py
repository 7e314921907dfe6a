"""The reminder store's Lua against a real valkey (no silo): a due tick is claimed by one
claimer only, however many race for it; a claim keeps the tick's scheduled time when it
expires or its holder dies; completing advances on the original phase past missed periods
(the same rule as ``model.next_due``); unregistering or re-registering during a delivery
wins over its completion; undeliverable ticks disable the reminder after the maximum; the
per-grain limit; and the idle poll is one command whatever the number of reminders."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from grainery.silo.reminders.model import MAX_UNDELIVERABLE, member_of, next_due
from grainery.silo.reminders.store import ReminderLimitError, ReminderStore

PERIOD_MS = 60_000


@pytest.fixture
def reminders(redis: aioredis.Redis) -> ReminderStore:
    return ReminderStore(redis, f"store-{uuid.uuid4().hex[:8]}", partitions=8)


async def store_now_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_due_tick_is_claimed_once_however_many_silos_race_for_it(
    reminders: ReminderStore,
) -> None:
    await reminders.register("T", "k", "r", 0, PERIOD_MS)
    p = reminders.partition("T", "k")
    assert await reminders.due_partitions() == [p]
    results = await asyncio.gather(*(
        reminders.claim([p], f"silo{i}:inc", 15_000, 10) for i in range(8)
    ))
    claimed = [tick for result in results for tick in result]
    assert len(claimed) == 1
    assert claimed[0].member == member_of("T", "k", "r") and claimed[0].attempt == 1
    assert await reminders.due_partitions() == []  # the score moved to the claim deadline


async def test_an_expired_or_dead_claim_is_taken_over_with_its_scheduled_time(
    reminders: ReminderStore, redis: aioredis.Redis,
) -> None:
    await reminders.register("T", "k", "r", 0, PERIOD_MS)
    p = reminders.partition("T", "k")
    [first] = await reminders.claim([p], "dead:1", 15_000, 10)
    assert await reminders.claim([p], "other:1", 15_000, 10) == []
    assert not await reminders.release_dead(p, first.member, "someone-else:1")
    assert await reminders.release_dead(p, first.member, "dead:1")  # its holder died
    [again] = await reminders.claim([p], "owner:1", 15_000, 10)
    assert (again.scheduled_ms, again.attempt) == (first.scheduled_ms, 2)
    # The dead holder's late completion changes nothing: the claim is no longer its.
    assert await reminders.complete(first, "dead:1", "ok") == "lost"
    # A claim whose deadline passed (score back in the past) is due again for anyone.
    await redis.zadd(reminders.keys.due(p), {again.member: 1})
    [third] = await reminders.claim([p], "late:1", 15_000, 10)
    assert (third.scheduled_ms, third.attempt) == (first.scheduled_ms, 3)


async def test_completing_a_late_tick_advances_on_the_phase_without_a_burst(
    reminders: ReminderStore, redis: aioredis.Redis,
) -> None:
    await reminders.register("T", "k", "r", 0, 1000)
    p, member = reminders.partition("T", "k"), member_of("T", "k", "r")
    late = await store_now_ms(redis) - 3500  # 3.5 periods behind
    await redis.zadd(reminders.keys.due(p), {member: late})
    [tick] = await reminders.claim([p], "a:1", 15_000, 10)
    assert int(tick.scheduled_ms) == late
    before = await store_now_ms(redis)
    assert await reminders.complete(tick, "a:1", "ok") == "advanced"
    after = await store_now_ms(redis)
    following = int(await redis.zscore(reminders.keys.due(p), member) or 0)
    assert following in {next_due(late, 1000, now) for now in range(before, after + 1)}
    assert following > before and (following - late) % 1000 == 0


async def test_unregister_or_reregister_during_a_delivery_wins_over_its_completion(
    reminders: ReminderStore, redis: aioredis.Redis,
) -> None:
    p = reminders.partition("T", "k")
    await reminders.register("T", "k", "gone", 0, PERIOD_MS)
    [tick] = await reminders.claim([p], "a:1", 15_000, 10)
    assert await reminders.unregister("T", "k", "gone")
    assert await reminders.complete(tick, "a:1", "ok") == "gone"
    assert await reminders.of_grain("T", "k") == []
    assert await redis.zcard(reminders.keys.due(p)) == 0

    await reminders.register("T", "k", "moved", 0, PERIOD_MS)
    [tick] = await reminders.claim([p], "a:1", 15_000, 10)
    first = await reminders.register("T", "k", "moved", 5000, 2000)  # new schedule
    assert await reminders.complete(tick, "a:1", "ok") == "gone"
    [info] = await reminders.of_grain("T", "k")
    assert (info.period, info.next_due, info.delivering) == (2.0, first / 1000, False)


async def test_retry_keeps_the_claim_and_the_scheduled_time(
    reminders: ReminderStore, redis: aioredis.Redis,
) -> None:
    await reminders.register("T", "k", "r", 0, PERIOD_MS)
    p = reminders.partition("T", "k")
    [tick] = await reminders.claim([p], "a:1", 15_000, 10)
    assert await reminders.complete(tick, "a:1", "retry", retry_ms=0) == "retry"
    [again] = await reminders.claim([p], "b:1", 15_000, 10)
    assert (again.scheduled_ms, again.attempt) == (tick.scheduled_ms, 2)


async def test_undeliverable_ticks_disable_the_reminder_after_the_maximum(
    reminders: ReminderStore, redis: aioredis.Redis,
) -> None:
    await reminders.register("Gone", "k", "r", 0, 1000)
    p, member = reminders.partition("Gone", "k"), member_of("Gone", "k", "r")
    for n in range(1, MAX_UNDELIVERABLE + 1):
        await redis.zadd(reminders.keys.due(p), {member: 1})  # due again at once
        [tick] = await reminders.claim([p], "a:1", 15_000, 10)
        result = await reminders.complete(tick, "a:1", "undeliverable", reason="no type|x")
        assert result == ("disabled" if n == MAX_UNDELIVERABLE else "advanced")
    [info] = await reminders.of_grain("Gone", "k")
    assert info.failures == MAX_UNDELIVERABLE and info.disabled == "no type/x"
    assert info.next_due is None and await reminders.due_partitions() == []
    await reminders.register("Gone", "k", "r", 0, 1000)  # registering again revives it
    [info] = await reminders.of_grain("Gone", "k")
    assert (info.failures, info.disabled) == (0, "")


async def test_the_per_grain_limit_counts_user_reminders_only(reminders: ReminderStore) -> None:
    for i in range(3):
        await reminders.register("T", "k", f"r{i}", 60_000, PERIOD_MS, limit=3)
    await reminders.register("T", "k", "r0", 1000, PERIOD_MS, limit=3)  # replacing is fine
    await reminders.register("T", "k", "$runtime", 1000, PERIOD_MS, limit=3)
    with pytest.raises(ReminderLimitError, match="limit 3"):
        await reminders.register("T", "k", "r3", 60_000, PERIOD_MS, limit=3)
    names = [r.name for r in await reminders.of_grain("T", "k")]
    assert names == ["$runtime", "r0", "r1", "r2"]


async def commands_of_one_poll(redis: aioredis.Redis, reminders: ReminderStore) -> int:
    await reminders.due_partitions()  # the script is loaded (a first EVALSHA may miss)
    before = int((await redis.info("stats"))["total_commands_processed"])
    assert await reminders.due_partitions() == []
    return int((await redis.info("stats"))["total_commands_processed"]) - before


async def test_the_idle_poll_costs_the_same_whatever_the_number_of_reminders(
    reminders: ReminderStore, redis: aioredis.Redis,
) -> None:
    empty = await commands_of_one_poll(redis, reminders)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(2000):
            await reminders._register(  # noqa: SLF001 - bulk setup in one round trip
                [*reminders._grain_keys("T", f"k{i}")[1]],  # noqa: SLF001
                [member_of("T", f"k{i}", "r"), "r", 3_600_000, PERIOD_MS, 100, "0",
                 reminders.partition("T", f"k{i}")], client=pipe,
            )
        await pipe.execute()
    # INFO, then one EVALSHA (and the TIME and ZRANGEBYSCORE it runs) per poll: a constant.
    assert await commands_of_one_poll(redis, reminders) == empty <= 4
