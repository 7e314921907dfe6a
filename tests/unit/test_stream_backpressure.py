"""A call stream whose caller reads results slowly stops reading new calls (bounded memory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.silo.dispatcher import Dispatcher
from grainery.silo.rpc.servicers import StreamSession

FRAMES, PER_FRAME = 100, 100  # 10,000 calls, far more than the bound


class InstantDispatcher:
    async def invoke(self, request: pb.InvokeRequest, timeout: float | None) -> pb.InvokeResponse:
        return pb.InvokeResponse(result_json="1")


async def test_reading_stops_while_results_wait_and_resumes_when_they_are_sent() -> None:
    frames_read = 0

    async def requests() -> AsyncIterator[pb.InvokeFrame]:
        nonlocal frames_read
        for f in range(FRAMES):
            await asyncio.sleep(0)  # as reading from the network does
            frames_read += 1
            yield pb.InvokeFrame(calls=[
                pb.StreamCall(call_id=f * PER_FRAME + i + 1, request=pb.InvokeRequest())
                for i in range(PER_FRAME)
            ])

    session = StreamSession(cast(Dispatcher, InstantDispatcher()))
    reader = asyncio.create_task(session.read(requests()))
    # Nobody takes results (a caller that never reads): let the calls run to completion.
    for _ in range(200):
        await asyncio.sleep(0)
    waiting = len(session._ready)
    # Bound: MAX_READY_RESULTS plus the calls still running when reading stopped.
    assert waiting <= StreamSession.MAX_READY_RESULTS + 3 * PER_FRAME, (
        f"{waiting} results waiting to be sent; {frames_read} of {FRAMES} frames read")
    assert frames_read < FRAMES // 2 and not reader.done()

    # A reader that catches up gets every call's result exactly once.
    seen: list[int] = []
    async for frame in session.results(reader):
        seen.extend(r.call_id for r in cast(Any, frame).results)
    assert sorted(seen) == list(range(1, FRAMES * PER_FRAME + 1))
    assert frames_read == FRAMES
