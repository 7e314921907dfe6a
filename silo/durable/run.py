"""One durable run: what the method does, recorded as it happens, replayed after a failure.

Every durable operation of a run (a step, a signal wait, a sleep) takes the next *op index*
when it is called, synchronously, before any ``await``: the index is the operation's place
in program order, deterministic for deterministic code even under ``asyncio.gather`` (the
gathered coroutines start in argument order). A step is identified as ``name#n`` (its n-th
occurrence in the run) and recorded with its index; replay matches each call against the
record at its index:

- a record with the same kind and id: its recorded outcome is returned (or re-raised)
  without running anything;
- a record of another kind or id: the code changed between runs -> NonDeterminismError;
  the run is *parked*: no further operation runs, whatever the method does with the error,
  and the run ends as ``parked`` with the error in the journal and for whoever asks;
- no record: the operation runs live and is recorded before it returns;
- when the method returns, recorded operations it never reached also mean the code changed.

Records (journal kinds, the runtime's own ``$`` kinds; ``run`` is the ``$run`` entry's seq):
``$run`` {method, args, kwargs}; ``$step`` {run, i, id, ok, result | error, attempts};
``$wait`` {run, i, id, signal, until}; ``$woke`` {run, i, id, signal_seq, payload,
timed_out}; ``$cancelled`` {run, i}; ``$end`` {run, status, result | error}.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from grainery.silo import tracing
from grainery.silo.durable.errors import NonDeterminismError, RunCancelledError, StepFailedError
from grainery.silo.durable.gate import Detached
from grainery.silo.durable.retry import DEFAULT_RETRY, RetryPolicy
from grainery.silo.journal.store import MAX_ENTRY_BYTES, JournalEntry

if TYPE_CHECKING:
    from grainery.silo.durable.runtime import DurableRuntime

CURRENT_RUN: ContextVar[DurableRun | None] = ContextVar("grainery_durable_run", default=None)
STEP_KEY: ContextVar[str | None] = ContextVar("grainery_step_key", default=None)

MAX_STEP_NAME = 200


def current_run(what: str) -> DurableRun:
    run = CURRENT_RUN.get()
    if run is None:
        raise RuntimeError(f"{what} works only inside a @durable method's run")
    return run


def error_record(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)[:2000]}


def round_trip(value: Any) -> Any:
    """What a recorded value reads back as: the same live and on replay. TypeError if it is
    not JSON, ValueError if it is larger than a journal entry may be."""
    try:
        text = orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"a durable value must be JSON-serialisable: {exc}") from None
    if len(text) > MAX_ENTRY_BYTES:
        raise ValueError(f"a durable value is {len(text)} bytes of JSON; a journal entry "
                         f"holds at most {MAX_ENTRY_BYTES}")
    return orjson.loads(text)


def _awaits(fn: Callable[..., Any]) -> bool:
    """Run ``fn`` on the event loop and await it (an async function, or a grain reference's
    method, which returns an awaitable without blocking), rather than on a worker thread."""
    return inspect.iscoroutinefunction(fn) or bool(getattr(fn, "__grainery_remote__", False))


@dataclass
class Recorded:
    """What the journal holds for one op index."""

    kind: str  # "step" or "wait"
    id: str
    entry: dict[str, Any]
    woke: dict[str, Any] | None = None  # a wait's outcome, once it ended


@dataclass
class DurableRun:
    runtime: DurableRuntime
    run_id: int
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    recorded: dict[int, Recorded] = field(default_factory=dict)
    cancel_seen_at: int | None = None  # op index where a cancellation was raised
    cancel_pending: int | None = None  # seq of a $cancel entry not yet seen
    cancel_reason: str = ""
    next_index: int = 0
    occurrences: Counter[str] = field(default_factory=Counter)
    parked: NonDeterminismError | None = None
    steps_running: int = 0
    status: str = "running"  # running, waiting, sleeping; then the end status
    waiting_for: str | None = None
    wake: asyncio.Future[Any] | None = None  # the live wait's future, if one waits
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    steps_done: int = 0
    last_step: str | None = None
    exception: BaseException | None = None  # what the method raised (for live callers)

    # ----- loading --------------------------------------------------------
    def load(self, entries: list[JournalEntry]) -> None:
        """Take this run's records from the journal (entries after its ``$run``)."""
        for entry in entries:
            data = entry.data if isinstance(entry.data, dict) else {}
            if data.get("run") != self.run_id:
                continue
            index = data.get("i")
            if entry.kind == "$step" and isinstance(index, int):
                self.recorded[index] = Recorded("step", str(data.get("id")), data)
            elif entry.kind == "$wait" and isinstance(index, int):
                self.recorded[index] = Recorded("wait", str(data.get("id")), data)
            elif entry.kind == "$woke" and isinstance(index, int):
                record = self.recorded.get(index)
                if record is not None:
                    record.woke = data
            elif entry.kind == "$cancelled" and isinstance(index, int):
                self.cancel_seen_at = index
        self.steps_done = sum(1 for r in self.recorded.values() if r.kind == "step")

    # ----- op bookkeeping -------------------------------------------------
    def _next(self, name: str) -> tuple[int, str]:
        index = self.next_index
        self.next_index += 1
        occurrence = self.occurrences[name]
        self.occurrences[name] += 1
        return index, f"{name}#{occurrence}"

    def step_key(self, op_id: str) -> str:
        grain = self.runtime.grain_id
        return f"{grain.grain_type}/{grain.key}/run-{self.run_id}/{op_id}"

    async def _enter(self, index: int, kind: str, op_id: str) -> Recorded | None:
        """The checks every op passes first: parked, cancelled here, recorded (matching)."""
        if self.parked is not None:
            raise self.parked
        if self.cancel_seen_at == index:
            raise RunCancelledError(f"run {self.run_id} cancelled {self.cancel_reason}".strip())
        record = self.recorded.get(index)
        if record is not None:
            if record.kind != kind or record.id != op_id:
                self._park(f"op {index} of run {self.run_id} ({self.method}) was recorded as "
                           f"{record.kind} {record.id!r}; the code now does {kind} {op_id!r}")
            return record
        if self.cancel_pending is not None:
            await self.runtime.record("$cancelled", {"run": self.run_id, "i": index},
                                      unmark=(f"cancel:{self.cancel_pending}",))
            self.cancel_pending, self.cancel_seen_at = None, index
            raise RunCancelledError(f"run {self.run_id} cancelled {self.cancel_reason}".strip())
        return None

    def _park(self, message: str) -> None:
        self.parked = NonDeterminismError(
            f"{message}: the method's code changed between runs; the run is parked "
            f"(nothing more runs; call the method again to start a new run)"
        )
        raise self.parked

    def check_complete(self) -> None:
        """The method returned: recorded ops it did not reach mean its code changed."""
        if self.parked is not None:
            raise self.parked
        left = sorted(i for i in self.recorded if i >= self.next_index)
        if left:
            record = self.recorded[left[0]]
            self._park(f"run {self.run_id} ({self.method}) returned after {self.next_index} "
                       f"ops, but the journal has {record.kind} {record.id!r} at op {left[0]}")

    # ----- steps ----------------------------------------------------------
    async def step(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
        retry: RetryPolicy | None,
    ) -> Any:
        if not isinstance(name, str) or not name or len(name) > MAX_STEP_NAME:
            raise ValueError(f"a step name must be a non-empty str of at most "
                             f"{MAX_STEP_NAME} characters, not {name!r}")
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be callable, not {fn!r}")
        index, op_id = self._next(name)
        record = await self._enter(index, "step", op_id)
        if record is not None:
            self.runtime.count_step("replayed")
            return self._outcome(op_id, record.entry)
        policy = retry or DEFAULT_RETRY
        self.steps_running += 1
        token = STEP_KEY.set(self.step_key(op_id))
        self.last_step = op_id
        try:
            await self.runtime.gate.acquire()
            with tracing.span("grainery.durable.step", attributes={
                "grainery.step": op_id, "grainery.run": self.run_id,
            }):
                ok, value, attempts = await self._attempts(name, fn, args, policy)
        finally:
            STEP_KEY.reset(token)
            self.steps_running -= 1
        entry: dict[str, Any] = {"run": self.run_id, "i": index, "id": op_id, "ok": ok,
                                 "attempts": attempts}
        if ok:
            try:
                entry["result"] = round_trip(value)
            except (TypeError, ValueError) as exc:
                entry.update(ok=False, error=error_record(exc))
        else:
            entry["error"] = value
        await self.runtime.record("$step", entry)
        self.runtime.count_step("ok" if entry["ok"] else "failed")
        self.steps_done += 1
        return self._outcome(op_id, entry)

    @staticmethod
    def _outcome(op_id: str, entry: dict[str, Any]) -> Any:
        if entry.get("ok"):
            return entry.get("result")
        error = entry.get("error") or {}
        raise StepFailedError(op_id, str(error.get("type", "Error")),
                              str(error.get("message", "")), int(entry.get("attempts", 1)))

    async def _attempts(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], policy: RetryPolicy
    ) -> tuple[bool, Any, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return True, await self._attempt(fn, args, policy.timeout), attempt
            except (Detached, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - recorded as the step's outcome
                if attempt >= policy.max_attempts or isinstance(exc, policy.non_retryable):
                    return False, error_record(exc), attempt
                self.runtime.count_retry()
                await asyncio.sleep(policy.delay(attempt))

    async def _attempt(self, fn: Callable[..., Any], args: tuple[Any, ...],
                       timeout: float | None) -> Any:
        async def run() -> Any:
            if _awaits(fn):
                return await fn(*args)
            result = await self.runtime.run_blocking(fn, *args)
            if inspect.isawaitable(result):
                return await result
            return result

        if timeout is None:
            return await run()
        return await asyncio.wait_for(run(), timeout)

    # ----- waits ----------------------------------------------------------
    async def wait(self, name: str, signal: str | None, timeout: float | None) -> Any:
        """A signal wait (``signal`` set) or a sleep; see Grain.wait_signal / Grain.sleep."""
        index, op_id = self._next(name)
        record = await self._enter(index, "wait", op_id)
        if record is not None and record.woke is not None:
            return self._woke(op_id, record.woke, timeout)
        if record is not None:
            until = record.entry.get("until")
        else:
            until = None if timeout is None else time.time() + timeout
            await self.runtime.record("$wait", {"run": self.run_id, "i": index, "id": op_id,
                                                "signal": signal, "until": until})
        woke = await self.runtime.wait_live(self, index, op_id, signal, until)
        return self._woke(op_id, woke, timeout)

    @staticmethod
    def _woke(op_id: str, woke: dict[str, Any], timeout: float | None) -> Any:
        if woke.get("cancelled"):
            raise RunCancelledError(f"{op_id} cancelled")
        if woke.get("timed_out") and woke.get("signal") is not None:
            raise TimeoutError(f"no signal {woke.get('signal')!r} within {timeout}s ({op_id})")
        return woke.get("payload")

    # ----- status ---------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "method": self.method, "status": self.status,
            "waiting_for": self.waiting_for, "steps_done": self.steps_done,
            "last_step": self.last_step,
        }
