"""One conformance suite for the storage and directory Protocols, run against BOTH the Redis
implementation (real valkey) and the in-memory twins, so the twins used by in-process tests
keep the semantics the silo relies on: fencing by activation id, ETag compare-and-set, no
ABA after a clear, single winner, deletion on unregister/clear, sweeping of dead silos."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from grainery.client.errors import ActivationFencedError, StaleStateError
from grainery.client.routing import GrainId
from grainery.silo.cluster.directory import RedisGrainDirectory
from grainery.silo.metrics import SiloMetrics
from grainery.silo.storage.keys import PREFIX, KeySpace
from grainery.silo.storage.memory import MemoryGrainDirectory, MemoryGrainStorage, MemoryStore
from grainery.silo.storage.protocols import GrainDirectory, GrainStorage
from grainery.silo.storage.redis_state import Fence, RedisGrainStorage
from grainery.silo.storage.state_codec import encode_state
from grainery.silo.testing import TestStore


@dataclass
class Backend:
    storage: GrainStorage
    directory: GrainDirectory
    key_count: Callable[[], Awaitable[int]]  # keys the backend holds for this test's cluster


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest, store: TestStore) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryStore()

        async def memory_keys() -> int:
            return memory.key_count()

        yield Backend(MemoryGrainStorage(memory), MemoryGrainDirectory(memory), memory_keys)
        return
    redis = aioredis.Redis.from_url(store.url)
    cluster = f"conformance-{uuid.uuid4().hex[:8]}"
    keys, metrics = KeySpace(cluster), SiloMetrics()

    async def redis_keys() -> int:
        found = set()
        for pattern in (f"{PREFIX}:{cluster}:*", f"{PREFIX}:{{{cluster}}}:*"):
            found |= {k async for k in redis.scan_iter(match=pattern, count=1000)}
        return len(found)

    yield Backend(RedisGrainStorage(redis, keys, metrics),
                  RedisGrainDirectory(redis, keys, metrics), redis_keys)
    await redis.aclose()


def grain() -> GrainId:
    return GrainId("Counter", uuid.uuid4().hex[:8])


async def claim(b: Backend, g: GrainId, incarnation: str = "A:1", dead: str = "") -> Fence:
    registration = await b.directory.register(g, incarnation, incarnation.split(":")[0],
                                              "127.0.0.1:1", dead=dead)
    assert registration.won, f"{incarnation} could not register {g}: {registration.entry}"
    return registration.fence


async def put(b: Backend, g: GrainId, data: dict[str, object], etag: str, fence: Fence) -> str:
    return await b.storage.write(g, encode_state(data), etag, fence)


# ----- state: compare-and-set -------------------------------------------------------------
async def test_missing_state_reads_as_empty(backend: Backend) -> None:
    stored = await backend.storage.read(grain())
    assert stored.data == {} and stored.etag == "" and stored.raw == b""


async def test_compare_and_set_write(backend: Backend) -> None:
    g = grain()
    fence = await claim(backend, g)
    etag1 = await put(backend, g, {"n": 1}, "", fence)
    etag2 = await put(backend, g, {"n": 2, "s": "é"}, etag1, fence)
    assert len({"", etag1, etag2}) == 3
    assert etag1.startswith(fence.activation) and etag2.startswith(fence.activation)
    stored = await backend.storage.read(g)
    assert stored.data == {"n": 2, "s": "é"} and stored.etag == etag2
    assert stored.raw == encode_state({"n": 2, "s": "é"})


async def test_stale_write_is_rejected_without_overwriting(backend: Backend) -> None:
    g = grain()
    fence = await claim(backend, g)
    etag = await put(backend, g, {"n": 1}, "", fence)
    current = await put(backend, g, {"n": 2}, etag, fence)
    for stale in (etag, "", "999", f"{fence.activation}:99"):
        with pytest.raises(StaleStateError, match="stale"):
            await put(backend, g, {"n": -1}, stale, fence)
    stored = await backend.storage.read(g)
    assert stored.data == {"n": 2} and stored.etag == current


async def test_clear_deletes_the_state_and_no_old_etag_matches_again(backend: Backend) -> None:
    g = grain()
    fence = await claim(backend, g)
    before = await backend.key_count()
    etag = await put(backend, g, {"n": 1}, "", fence)
    assert await backend.key_count() == before + 1  # the state key
    cleared = await backend.storage.clear(g, etag, fence)
    assert await backend.key_count() == before, "clear_state left the state key behind"
    stored = await backend.storage.read(g)
    assert stored.data == {} and stored.etag == cleared and cleared not in ("", etag)
    # No ABA: a writer that last saw "nothing stored" (etag "") must not win after a clear.
    with pytest.raises(StaleStateError):
        await put(backend, g, {"n": 99}, "", fence)
    with pytest.raises(StaleStateError):
        await backend.storage.clear(g, etag, fence)
    again = await put(backend, g, {"n": 3}, cleared, fence)
    assert again not in ("", etag, cleared)
    assert (await backend.storage.read(g)).data == {"n": 3}


async def test_writing_empty_state_deletes_the_key(backend: Backend) -> None:
    g = grain()
    fence = await claim(backend, g)
    before = await backend.key_count()
    etag = await put(backend, g, {"n": 1}, "", fence)
    emptied = await put(backend, g, {}, etag, fence)
    assert await backend.key_count() == before
    assert (await backend.storage.read(g)).etag == emptied


# ----- fencing ---------------------------------------------------------------------------
async def test_write_from_a_superseded_activation_is_fenced(backend: Backend) -> None:
    g = grain()
    old = await claim(backend, g, "A:1")
    etag = await put(backend, g, {"owner": "A"}, "", old)
    new = await claim(backend, g, "B:1", dead="A:1")  # A's silo was declared dead
    assert new.activation != old.activation
    with pytest.raises(ActivationFencedError):
        await put(backend, g, {"owner": "A again"}, etag, old)  # right etag, old owner
    with pytest.raises(ActivationFencedError):
        await backend.storage.clear(g, etag, old)
    assert (await backend.storage.read(g)).data == {"owner": "A"}
    await put(backend, g, {"owner": "B"}, etag, new)
    assert (await backend.storage.read(g)).data == {"owner": "B"}


async def test_reregistration_by_the_same_silo_fences_its_older_activation(
    backend: Backend,
) -> None:
    g = grain()
    first = await claim(backend, g, "A:1")
    second = await claim(backend, g, "A:1")  # a leftover of its own: taken back, new id
    assert second.activation != first.activation
    with pytest.raises(ActivationFencedError):
        await put(backend, g, {"n": 1}, "", first)
    assert await put(backend, g, {"n": 1}, "", second)


async def test_write_without_any_directory_entry_is_fenced(backend: Backend) -> None:
    g = grain()
    before = await backend.key_count()
    with pytest.raises(ActivationFencedError):
        await put(backend, g, {"n": 1}, "", Fence("A:1", "1"))
    assert await backend.key_count() == before


async def test_an_old_activation_is_fenced_after_unregister_and_a_new_activation(
    backend: Backend,
) -> None:
    g = grain()
    first = await claim(backend, g, "A:1")
    etag = await put(backend, g, {"n": 1}, "", first)
    assert await backend.directory.unregister(g, first)
    second = await claim(backend, g, "A:1")
    with pytest.raises(ActivationFencedError):
        await put(backend, g, {"n": 2}, etag, first)  # same silo, same etag, old activation
    assert (await backend.storage.read(g)).data == {"n": 1}
    assert await put(backend, g, {"n": 2}, etag, second)


# ----- directory --------------------------------------------------------------------------
async def test_register_semantics(backend: Backend) -> None:
    g = grain()
    directory = backend.directory
    absent = await directory.register(g, "A:1", "A", "a:1")
    assert absent.won and absent.entry.address == "a:1" and absent.entry.activation
    assert absent.state is not None and absent.state.data == {} and absent.state.etag == ""
    own = await directory.register(g, "A:1", "A", "a:1")
    assert own.won and own.entry.activation != absent.entry.activation
    conflict = await directory.register(g, "B:1", "B", "b:1")
    assert not conflict.won and conflict.state is None
    assert conflict.entry == own.entry  # told who holds it; nothing changed
    wrong = await directory.register(g, "B:1", "B", "b:1", dead="C:1")
    assert not wrong.won and wrong.entry.incarnation == "A:1"
    takeover = await directory.register(g, "B:1", "B", "b:1", dead="A:1")
    assert takeover.won and takeover.entry.activation not in (
        absent.entry.activation, own.entry.activation)
    assert await directory.lookup(g) == takeover.entry


async def test_activation_ids_sort_in_registration_order(backend: Backend) -> None:
    g = grain()
    ids = []
    for _ in range(5):
        fence = await claim(backend, g, "A:1")
        ids.append(fence.activation)
        assert await backend.directory.unregister(g, fence)
    assert ids == sorted(set(ids)), ids


async def test_register_returns_the_stored_state(backend: Backend) -> None:
    g = grain()
    fence = await claim(backend, g, "A:1")
    etag = await put(backend, g, {"memory": ["hi"]}, "", fence)
    assert await backend.directory.unregister(g, fence)
    again = await backend.directory.register(g, "B:1", "B", "b:1")
    assert again.won and again.state is not None
    assert again.state.data == {"memory": ["hi"]} and again.state.etag == etag


async def test_unregister_only_by_the_same_activation_and_it_leaves_no_key(
    backend: Backend,
) -> None:
    g = grain()
    before = await backend.key_count()
    fence = await claim(backend, g, "A:1")
    assert not await backend.directory.unregister(g, Fence("B:1", fence.activation + "x"))
    assert not await backend.directory.unregister(g, Fence("A:1", "other"))
    assert await backend.directory.lookup(g) is not None
    assert await backend.directory.unregister(g, fence)
    assert await backend.directory.lookup(g) is None
    assert not await backend.directory.unregister(g, fence)  # already gone
    assert await backend.key_count() == before + 1  # only the registrants set remains
    with pytest.raises(ActivationFencedError):
        await put(backend, g, {"n": 1}, "", fence)


async def test_concurrent_registrations_have_one_winner(backend: Backend) -> None:
    g = grain()
    results = await asyncio.gather(*(
        backend.directory.register(g, f"S{i}:1", f"S{i}", f"s{i}:1") for i in range(20)
    ))
    winners = [r for r in results if r.won]
    assert len(winners) == 1, [r.entry for r in winners]
    assert all(r.entry.incarnation == winners[0].entry.incarnation for r in results)


async def test_sweep_removes_only_the_dead_incarnations_entries(backend: Backend) -> None:
    dead_grains = [grain() for _ in range(30)]
    live, taken = grain(), dead_grains[0]
    assert await backend.key_count() == 0
    for g in dead_grains:
        await claim(backend, g, "dead:1")
    await claim(backend, live, "live:1")
    await claim(backend, taken, "live:1", dead="dead:1")  # already taken over: must stay
    assert set(await backend.directory.registrants()) >= {"dead:1", "live:1"}
    assert await backend.directory.sweep("dead:1") == len(dead_grains) - 1
    assert await backend.directory.lookup(dead_grains[1]) is None
    for g in (live, taken):
        entry = await backend.directory.lookup(g)
        assert entry is not None and entry.incarnation == "live:1"
    assert "dead:1" not in await backend.directory.registrants()
    assert await backend.directory.sweep("dead:1") == 0  # idempotent
    # What remains: the two live entries, the live index and the registrants set.
    assert await backend.key_count() == 4
