"""Recording and replay of one durable run (silo/durable/run.py), in process: a fake runtime
keeps the journal in a list, so each rule of replay is checked without Redis or silos."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from grainery import NonDeterminismError, RetryPolicy, RunCancelledError, StepFailedError
from grainery.client.routing import GrainId
from grainery.silo.durable.run import CURRENT_RUN, DurableRun
from grainery.silo.journal.store import JournalEntry


class FakeGate:
    held = False

    async def acquire(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False


class FakeRuntime:
    """What DurableRun needs of its runtime; the journal is a list."""

    def __init__(self) -> None:
        self.grain_id = GrainId("Agent", "a")
        self.gate = FakeGate()
        self.entries: list[JournalEntry] = []
        self.steps: Counter[str] = Counter()

    async def record(self, kind: str, data: Any, mark: str = "", mark_value: str = "",
                     unmark: tuple[str, ...] = ()) -> int:
        self.entries.append(JournalEntry(len(self.entries) + 2, kind, data, 0))
        await asyncio.sleep(0)
        return self.entries[-1].seq

    async def run_blocking(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    def count_retry(self) -> None:
        self.steps["retry"] += 1

    def count_step(self, outcome: str) -> None:
        self.steps[outcome] += 1


def new_run(runtime: FakeRuntime, entries: list[JournalEntry] = ()) -> DurableRun:  # type: ignore[assignment]
    run = DurableRun(runtime, 1, "plan", [], {})  # type: ignore[arg-type]
    run.load(list(entries))
    CURRENT_RUN.set(run)
    return run


class Effects:
    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()

    def fn(self, name: str, delay: float = 0.0) -> Any:
        async def effect(value: int) -> int:
            self.ran[name] += 1
            await asyncio.sleep(delay)
            return value * 10

        return effect


async def plan(run: DurableRun, effects: Effects) -> list[Any]:
    # Parallel steps finish out of order (c first, a last), then one more.
    values = await asyncio.gather(
        run.step("fetch", effects.fn("a", 0.03), (1,), None),
        run.step("fetch", effects.fn("b", 0.02), (2,), None),
        run.step("fetch", effects.fn("c", 0.0), (3,), None),
    )
    total = await run.step("sum", effects.fn("d"), (sum(values),), None)
    return [*values, total]


async def test_parallel_steps_replay_by_index_whatever_order_they_finished_in() -> None:
    runtime, effects = FakeRuntime(), Effects()
    assert await plan(new_run(runtime), effects) == [10, 20, 30, 600]
    steps = [e.data for e in runtime.entries]
    assert [(s["i"], s["id"]) for s in steps] == [
        (2, "fetch#2"), (1, "fetch#1"), (0, "fetch#0"), (3, "sum#0")]  # completion order
    # A crash lost the record of fetch#1 (it ran, was not recorded) and of sum#0.
    kept = [e for e in runtime.entries if e.data["id"] in ("fetch#0", "fetch#2")]
    replay, again = FakeRuntime(), Effects()
    assert await plan(new_run(replay, kept), again) == [10, 20, 30, 600]
    assert again.ran == {"b": 1, "d": 1}  # only what was not recorded ran again
    assert replay.steps == {"replayed": 2, "ok": 2}


async def test_a_renamed_step_parks_the_run_and_nothing_more_runs() -> None:
    runtime, effects = FakeRuntime(), Effects()
    run = new_run(runtime)
    await run.step("charge", effects.fn("charge"), (1,), None)
    replay, again = FakeRuntime(), Effects()
    run = new_run(replay, runtime.entries)
    with pytest.raises(NonDeterminismError, match=r"'charge#0'.*'bill#0'"):
        await run.step("bill", again.fn("bill"), (1,), None)
    with pytest.raises(NonDeterminismError):  # parked: even an unrelated step never runs
        await run.step("ship", again.fn("ship"), (1,), None)
    assert again.ran == {} and replay.entries == []


async def test_a_method_that_stops_short_of_its_records_is_detected() -> None:
    runtime, effects = FakeRuntime(), Effects()
    run = new_run(runtime)
    for name in ("a", "b"):
        await run.step(name, effects.fn(name), (1,), None)
    run = new_run(FakeRuntime(), runtime.entries)
    await run.step("a", effects.fn("a"), (1,), None)
    with pytest.raises(NonDeterminismError, match="'b#0' at op 1"):
        run.check_complete()


async def test_a_final_error_is_recorded_and_raised_again_on_replay() -> None:
    runtime = FakeRuntime()
    calls = Counter[str]()

    def broken() -> None:
        calls["broken"] += 1
        raise ConnectionError("carrier down")

    run = new_run(runtime)
    policy = RetryPolicy(max_attempts=3, initial=0.0)
    with pytest.raises(StepFailedError, match="ConnectionError: carrier down") as live:
        await run.step("book", broken, (), policy)
    assert calls["broken"] == 3 and runtime.steps["retry"] == 2
    run = new_run(FakeRuntime(), runtime.entries)
    with pytest.raises(StepFailedError) as replayed:
        await run.step("book", broken, (), policy)
    assert calls["broken"] == 3 and str(replayed.value) == str(live.value)


async def test_a_result_is_its_json_round_trip_live_and_on_replay() -> None:
    runtime = FakeRuntime()

    async def pair() -> tuple[int, int]:
        return (1, 2)

    assert await new_run(runtime).step("pair", pair, (), None) == [1, 2]
    assert await new_run(FakeRuntime(), runtime.entries).step("pair", pair, (), None) == [1, 2]


async def test_cancellation_is_raised_at_the_same_op_on_replay() -> None:
    runtime, effects = FakeRuntime(), Effects()
    run = new_run(runtime)
    await run.step("reserve", effects.fn("reserve"), (1,), None)
    run.cancel_pending = 99
    with pytest.raises(RunCancelledError):
        await run.step("ship", effects.fn("ship"), (1,), None)
    await run.step("release", effects.fn("release"), (1,), None)  # compensation still runs
    assert [e.kind for e in runtime.entries] == ["$step", "$cancelled", "$step"]
    assert runtime.entries[1].data == {"run": 1, "i": 1}
    replay, again = FakeRuntime(), Effects()
    run = new_run(replay, runtime.entries)
    await run.step("reserve", again.fn("reserve"), (1,), None)
    with pytest.raises(RunCancelledError):
        await run.step("ship", again.fn("ship"), (1,), None)
    await run.step("release", again.fn("release"), (1,), None)
    assert again.ran == {} and replay.entries == []
    assert effects.ran == {"reserve": 1, "release": 1}


async def test_a_live_step_is_a_span_and_a_replayed_one_is_not() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from grainery.client.tracing import CallTracer
    from grainery.silo import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(CallTracer(provider, silo_id="s", roots=True))
    try:
        runtime, effects = FakeRuntime(), Effects()
        await new_run(runtime).step("charge", effects.fn("charge"), (1,), None)
        await new_run(FakeRuntime(), runtime.entries).step(
            "charge", effects.fn("charge"), (1,), None)
    finally:
        tracing.install(None)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["grainery.durable.step"]
    assert spans[0].attributes is not None
    assert spans[0].attributes["grainery.step"] == "charge#0"
    assert spans[0].attributes["grainery.run"] == 1


async def test_a_result_too_large_or_not_json_is_recorded_as_the_steps_failure() -> None:
    from grainery.silo.journal.store import MAX_ENTRY_BYTES

    runtime = FakeRuntime()

    async def huge() -> str:
        return "x" * (MAX_ENTRY_BYTES + 1)

    async def opaque() -> object:
        return object()

    run = new_run(runtime)
    with pytest.raises(StepFailedError, match="ValueError: a durable value is"):
        await run.step("huge", huge, (), None)
    with pytest.raises(StepFailedError, match="TypeError: a durable value must be JSON"):
        await run.step("opaque", opaque, (), None)
    assert [e.data["ok"] for e in runtime.entries] == [False, False]
