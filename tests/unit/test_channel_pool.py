"""ChannelPool lets go of silos that left the membership, never under a running call."""

from __future__ import annotations

import asyncio

import grpc

from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.grain_client import GrainClient
from grainery.client.routing import ACTIVE, DEAD, LEAVING, LEFT, MemberInfo, MembershipSnapshot

# Nothing listens on these ports: channels connect lazily, so no call is ever made.
A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


def _closed(channel: grpc.aio.Channel) -> bool:
    return channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN


async def _settle(pool: ChannelPool) -> None:
    """Wait for the closes retain() started (they run as tasks)."""
    await asyncio.gather(*pool._closing)


async def test_retain_closes_channels_of_departed_addresses() -> None:
    pool = ChannelPool(ClientSecurity(), 1024)
    channels = {address: pool.get(address).channel for address in (A, B, C)}
    assert sorted(pool.retain([A, C])) == [B]
    await _settle(pool)
    assert sorted(pool.addresses) == [A, C]
    assert _closed(channels[B])
    assert not _closed(channels[A]) and not _closed(channels[C])
    await pool.close()
    assert all(_closed(c) for c in channels.values())


async def test_a_channel_in_use_closes_only_after_its_call() -> None:
    pool = ChannelPool(ClientSecurity(), 1024)
    with pool.borrow(A) as stubs:
        pool.retain([])
        await _settle(pool)
        assert pool.addresses == []  # a new call would open a fresh channel
        assert not _closed(stubs.channel), "closed under a running call"
    await _settle(pool)
    assert _closed(stubs.channel)
    await pool.close()


async def test_close_also_closes_evicted_channels_still_in_use() -> None:
    pool = ChannelPool(ClientSecurity(), 1024)
    with pool.borrow(A) as stubs:
        pool.retain([])
        await pool.close()
        assert _closed(stubs.channel)


def _snapshot(version: int, *members: tuple[str, str]) -> MembershipSnapshot:
    return MembershipSnapshot(version, tuple(
        MemberInfo(f"silo-{address}", address, state, 0.0, f"inc-{address}")
        for address, state in members
    ))


async def test_client_drops_channels_of_silos_gone_from_the_membership() -> None:
    client = GrainClient(A)
    client._adopt(_snapshot(1, (A, ACTIVE), (B, ACTIVE), (C, ACTIVE)))
    for address in (A, B, C):
        client.pool.get(address)
    client._adopt(_snapshot(2, (A, ACTIVE), (B, DEAD), (C, LEAVING)))
    # A dead silo's channel goes; a leaving silo may still answer calls in flight.
    assert sorted(client.pool.addresses) == [A, C]
    client._adopt(_snapshot(3, (B, ACTIVE)))
    assert sorted(client.pool.addresses) == [A], "the seed's channel is kept"
    await client.close()


async def test_client_drops_channels_of_silos_that_left_gracefully() -> None:
    """A silo that drained and left keeps its row (state left) for a while after it exited;
    its channel goes at once, as a dead silo's does."""
    client = GrainClient(A)
    client._adopt(_snapshot(1, (A, ACTIVE), (B, ACTIVE)))
    client.pool.get(B)
    client._adopt(_snapshot(2, (A, ACTIVE), (B, LEFT)))
    assert client.pool.addresses == [], "a left silo's channel was kept"
    await client.close()
