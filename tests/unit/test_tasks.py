"""spawn(): background tasks are referenced until they end, and their failures are logged."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from grainery.client import tasks
from grainery.client.errors import OverloadedError


async def _fail(error: BaseException) -> None:
    await asyncio.sleep(0)
    raise error


async def test_a_failed_task_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="grainery.tasks")
    task = tasks.spawn(_fail(RuntimeError("boom")), name="probe")
    await asyncio.wait([task])
    await asyncio.sleep(0)  # done-callbacks run on the next loop turn
    [record] = [r for r in caplog.records if r.name == "grainery.tasks"]
    assert "probe" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_expected_failures_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="grainery.tasks")
    task = tasks.spawn(_fail(OverloadedError("busy")), expected=(OverloadedError,))
    await asyncio.wait([task])
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "grainery.tasks"]


async def test_an_unreferenced_task_survives_garbage_collection() -> None:
    """The loop holds tasks weakly: without spawn's reference this one could vanish."""
    finished = asyncio.Event()
    gate = asyncio.Event()

    async def work() -> None:
        await gate.wait()
        finished.set()

    tasks.spawn(work())  # the result is deliberately dropped
    gc.collect()
    gate.set()
    await asyncio.wait_for(finished.wait(), 5)


async def test_owner_set_holds_a_task_only_while_it_runs() -> None:
    owner: set[asyncio.Task[Any]] = set()
    gate = asyncio.Event()
    before = tasks.running()
    task = tasks.spawn(gate.wait(), owner=owner)
    assert owner == {task} and tasks.running() == before + 1
    gate.set()
    await task
    await asyncio.sleep(0)
    assert owner == set() and tasks.running() == before


class _BrokenWrites:
    """A call stream whose writes fail with a bug (not a transport error)."""

    cancelled = False

    async def write(self, frame: object) -> None:
        raise ValueError("a bug while writing")

    async def read(self) -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def cancel(self) -> None:
        self.cancelled = True


async def test_a_failing_stream_writer_fails_its_calls_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not left to wait for their deadline, and not a silent dead task."""
    from types import SimpleNamespace

    import grpc

    from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
    from grainery.client.call_stream import CallStream
    from grainery.client.errors import TransportError

    caplog.set_level(logging.ERROR, logger="grainery.tasks")
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    stream = CallStream(channel, ())
    broken = _BrokenWrites()
    stream._stub = SimpleNamespace(InvokeStream=lambda metadata: broken)  # type: ignore[assignment]
    with pytest.raises(TransportError, match="a bug while writing"):
        await stream.invoke(pb.InvokeRequest(grain_type="T", grain_key="k", method="m"), 30.0)
    await asyncio.sleep(0)
    assert broken.cancelled
    assert any("grainery-stream-write" in r.getMessage() for r in caplog.records)
    await stream.close()
    await channel.close()
