"""A grain's durable runs: start or join, resume after a failure, signals, cancel, status.

Execution model (why it looks like this):
- **One run per grain at a time.** The grain is the agent and a run is its current plan;
  signals, cancellation and status name "the grain's run" without bookkeeping. Calling a
  durable method while a run is unfinished *joins* it if it is the same method with the same
  arguments (a caller retrying after a failover gets the run's result, not a second run),
  else raises DurableBusyError.
- **The call waits for the result.** A durable method's caller gets the run's result (or
  error), like a plain method and like Temporal's ``execute_workflow``. The run does not
  depend on the caller: if the caller gives up (deadline, disconnect, its silo dies) the run
  goes on; ``ref.run_status()`` / ``ref.run_result()`` give its status and result later.
- **The run is a task of the activation whose code takes turns** (silo/durable/gate.py): it
  holds a read-only turn of the grain while its code runs (steps included), so ``@read_only``
  queries are answered meanwhile and writing calls wait; it gives the turn up while it waits
  for a signal or sleeps, so every call of the grain, writing ones too, is served at those
  waits (the method is reentrant at its waits and only there).
- **Resume without a caller.** Every activation of a grain type with durable methods loads
  the journal's index; an unfinished run is started again at once and replays its records.
  The activation happens by itself after a failover through the ``$durable`` runtime reminder
  kept while a run is unfinished (silo/durable/wake.py), or with the next call, signal or
  status query of the grain.
- **Leaving.** A deactivation waits for a run that is executing (its turn), and stops a run
  that waits (its progress is in the journal; the next activation replays it). Fencing stops
  it wherever it is: it could not record anything any more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from grainery.client.errors import (
    ActivationFencedError,
    SiloUnavailableError,
    StorageUnavailableError,
)
from grainery.client.tasks import spawn
from grainery.silo.call import CURRENT_CALL, call_context
from grainery.silo.durable import wake
from grainery.silo.durable.decorator import durable_methods
from grainery.silo.durable.errors import (
    DurableBusyError,
    DurableRunError,
    NonDeterminismError,
    RunCancelledError,
    RunMovedError,
)
from grainery.silo.durable.gate import Detached, TurnGate
from grainery.silo.durable.run import CURRENT_RUN, DurableRun, error_record, round_trip
from grainery.silo.journal.journal import Journal

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from grainery.client.routing import GrainId
    from grainery.silo.activation import Activation
    from grainery.silo.grain import Grain

log = logging.getLogger("grainery.durable")

MAX_SIGNAL_NAME = 200
MAX_SIGNAL_ID = 200  # a client-chosen idempotency key (the SDK sends a uuid4 hex)
END_SEARCH = 5000  # journal entries searched for an ended run's outcome


def runtime_of(grain: Grain) -> DurableRuntime:
    """The durable runtime of ``grain``'s activation (created, and resuming, on first use)."""
    activation = grain._activation
    runtime: DurableRuntime | None = activation.durable
    if runtime is None:
        runtime = activation.durable = DurableRuntime(activation, grain)
        runtime.start()
    return runtime


def resume_on_activation(activation: Activation) -> None:
    """Called once an activation is active: a grain with durable methods resumes its
    unfinished run now, without waiting for a caller."""
    grain = activation.grain
    if grain is None or activation.durable is not None:
        return
    if durable_methods(type(grain)) and getattr(activation.context, "journal_store", None):
        runtime_of(grain)


class DurableRuntime:
    def __init__(self, activation: Activation, grain: Grain) -> None:
        self.activation = activation
        self.grain = grain
        self.grain_id: GrainId = activation.grain_id
        assert activation.context is not None
        self.journal = Journal(activation.context, grain.journal_max_entries)
        self.methods = durable_methods(type(grain))
        self.run: DurableRun | None = None
        self.signals: deque[tuple[int, str, Any]] = deque()  # buffered: (seq, name, payload)
        self.gate = TurnGate(activation, "durable")
        self.retries = 0
        self._loaded = asyncio.get_running_loop().create_future()
        self._start_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended: dict[int, dict[str, Any]] = {}  # this activation's ended runs

    # ----- lifecycle ------------------------------------------------------
    def start(self) -> None:
        spawn(self._load(), owner=self._tasks, name=f"durable load {self.grain_id}")

    async def ready(self) -> None:
        if not self._loaded.done():
            await asyncio.shield(self._loaded)
        self._loaded.result()  # re-raises a failed load

    async def _load(self) -> None:
        try:
            await self._load_journal()
        except BaseException as exc:
            if not self._loaded.done():
                self._loaded.set_exception(exc if isinstance(exc, Exception) else
                                           SiloUnavailableError(f"{self.grain_id} is leaving"))
                self._loaded.exception()  # retrieved here; callers re-raise it from ready()
            if isinstance(exc, Exception):
                log.warning("durable runs of %s could not be loaded: %s: %s", self.grain_id,
                            type(exc).__name__, exc)
                self.activation.context.request_deactivation("journal")  # type: ignore[union-attr]
            return
        self._loaded.set_result(None)

    async def _load_journal(self) -> None:
        index = await self.journal.index()
        runs = sorted(int(f[4:]) for f in index if f.startswith("run:"))
        signals = {int(f[4:]) for f in index if f.startswith("sig:")}
        cancels = {int(v): int(f[7:]) for f, v in index.items() if f.startswith("cancel:")}
        if not runs and not signals:
            return
        entries = await self.journal.read_all(after=min([*runs, *signals]) - 1)
        for entry in entries:
            if entry.seq in signals and entry.kind == "$signal" and isinstance(entry.data, dict):
                self.signals.append((entry.seq, str(entry.data.get("name")),
                                     entry.data.get("payload")))
        if not runs:
            return
        run_id = runs[0]
        started = next((e for e in entries if e.seq == run_id), None)
        data = started.data if started is not None and isinstance(started.data, dict) else {}
        run = DurableRun(self, run_id, str(data.get("method", "")),
                         list(data.get("args") or []), dict(data.get("kwargs") or {}))
        run.load([e for e in entries if e.seq > run_id])
        if run_id in cancels:
            run.cancel_pending = cancels[run_id]
            reason = next((e.data.get("reason", "") for e in entries
                           if e.seq == cancels[run_id] and isinstance(e.data, dict)), "")
            run.cancel_reason = str(reason)
        log.info("resuming run %d of %s.%s (%d ops recorded)", run_id, self.grain_id,
                 run.method, len(run.recorded))
        self.count_run("resumed")
        self._begin(run)

    def leaving(self) -> None:
        """The activation began to deactivate: a run that waits stops now (it resumes on
        the next activation); one that executes finishes its turn first, then stops."""
        run = self.run
        if run is not None and run.wake is not None and not self.gate.held:
            self.detach()

    def detach(self) -> None:
        """The activation is gone (or fenced): stop every task; callers are told to retry."""
        for task in list(self._tasks):
            task.cancel()
        run = self.run
        if run is not None and not run.done.done():
            run.done.set_exception(RunMovedError(run.run_id, str(self.grain_id)))
            run.done.exception()
        self.gate.release()

    # ----- journal --------------------------------------------------------
    async def record(self, kind: str, data: Any, mark: str = "", mark_value: str = "",
                     unmark: tuple[str, ...] = ()) -> int:
        """An append made by the run: if it fails, the run cannot go on consistently, so
        it stops (Detached, which grain code cannot catch) and the grain deactivates; the
        next activation replays from what was recorded."""
        try:
            return await self.journal.record(kind, data, mark, mark_value, unmark)
        except (ActivationFencedError, StorageUnavailableError) as exc:
            log.warning("run of %s stops: %s", self.grain_id, exc.message)
            if self.activation.context is not None:
                self.activation.context.request_deactivation("journal")
            raise Detached() from exc

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.grain.run_blocking(fn, *args)

    def count_retry(self) -> None:
        self.retries += 1
        metrics = self.activation.metrics
        if metrics is not None:
            metrics.durable_step_retries.labels(self.grain_id.grain_type).inc()

    def count_step(self, outcome: str) -> None:
        metrics = self.activation.metrics
        if metrics is not None:
            metrics.durable_steps.labels(self.grain_id.grain_type, outcome).inc()

    def count_run(self, event: str) -> None:
        metrics = self.activation.metrics
        if metrics is not None:
            metrics.durable_runs.labels(self.grain_id.grain_type, event).inc()

    # ----- starting and joining ------------------------------------------
    async def call(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """A caller's call of a durable method: start a run (or join the same one)."""
        await self.ready()
        args, kwargs = round_trip(args), round_trip(kwargs)
        async with self._start_lock:
            run = self.run
            if run is None:
                await wake.keep(self.grain)  # before the run exists: never one without it
                run_id = await self.journal.record(
                    "$run", {"method": method, "args": args, "kwargs": kwargs},
                    mark="run:", mark_value=method,
                )
                run = DurableRun(self, run_id, method, args, kwargs)
                self.count_run("started")
                self._begin(run)
            elif run.method != method or run.args != args or run.kwargs != kwargs:
                raise DurableBusyError(
                    f"{self.grain_id} is running run {run.run_id} ({run.method}); one durable "
                    f"run per grain at a time (the same call with the same arguments joins it)"
                )
        return await self._result(run)

    async def _result(self, run: DurableRun) -> Any:
        remaining = call_context().deadline
        done = asyncio.shield(run.done)
        outcome = await (done if remaining is None else asyncio.wait_for(done, remaining + 1))
        if outcome["status"] == "completed":
            return outcome.get("result")
        if run.exception is not None:
            raise run.exception
        raise DurableRunError(outcome)

    def _begin(self, run: DurableRun) -> None:
        self.run = run
        function = self.methods.get(run.method)
        spawn(self._drive(run, function), owner=self._tasks,
              name=f"durable run {self.grain_id}.{run.method}")

    async def _drive(
        self, run: DurableRun, function: Callable[..., Coroutine[Any, Any, Any]] | None
    ) -> None:
        CURRENT_RUN.set(run)
        self.gate.method = run.method
        CURRENT_CALL.set(self.gate.call())
        try:
            await self.gate.acquire()
            outcome = await self._execute(run, function)
            await self.record("$end", {"run": run.run_id, "method": run.method, **outcome},
                              unmark=(f"run:{run.run_id}",
                                      *([f"cancel:{run.cancel_pending}"]
                                        if run.cancel_pending else [])))
        except Detached:
            if not run.done.done():
                run.done.set_exception(RunMovedError(run.run_id, str(self.grain_id)))
                run.done.exception()
            return
        finally:
            self.gate.release()
        # Ended (its $end is stored): status queries from here on get the outcome.
        self._ended[run.run_id] = outcome | {"run": run.run_id, "method": run.method}
        run.status = outcome["status"]
        self.count_run(run.status)
        await wake.drop(self.grain)  # while self.run is set: no new run's reminder is dropped
        self.run = None
        if not run.done.done():
            run.done.set_result(self._ended[run.run_id])

    async def _execute(
        self, run: DurableRun, function: Callable[..., Coroutine[Any, Any, Any]] | None
    ) -> dict[str, Any]:
        try:
            if function is None:
                run._park(f"run {run.run_id} was started as {run.method}, which is no "
                          f"longer a durable method of {self.grain_id.grain_type}")
            assert function is not None
            result = await function(self.grain, *run.args, **run.kwargs)
            run.check_complete()
            return {"status": "completed", "result": round_trip(result)}
        except Exception as exc:  # noqa: BLE001 - the run's outcome
            if run.parked is not None:
                log.error("run %d of %s parked: %s", run.run_id, self.grain_id, run.parked)
                run.exception = run.parked
                return {"status": "parked", "error": error_record(run.parked)}
            run.exception = exc
            status = "cancelled" if isinstance(exc, RunCancelledError) else "failed"
            return {"status": status, "error": error_record(exc)}

    # ----- waits and signals ---------------------------------------------
    async def wait_live(
        self, run: DurableRun, index: int, op_id: str, signal: str | None, until: float | None
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        woke: dict[str, Any] | None = None
        if signal is not None:
            woke = self._take(signal)
        handle = None
        if woke is None:
            if run.wake is not None:
                raise RuntimeError(
                    f"run {run.run_id} already waits ({run.waiting_for or 'sleep'}): a run "
                    f"waits for one signal or sleep at a time (not inside asyncio.gather)")
            wake: asyncio.Future[dict[str, Any]] = loop.create_future()
            run.wake, run.waiting_for = wake, signal
            run.status = "waiting" if signal is not None else "sleeping"
            if until is not None:
                def time_out() -> None:
                    if not wake.done():
                        wake.set_result({"timed_out": True, "signal": signal})

                handle = loop.call_later(max(0.0, until - time.time()), time_out)
            if run.steps_running == 0:
                self.gate.release()  # the grain serves other calls while the run waits
            try:
                woke = await wake
            finally:
                if handle is not None:
                    handle.cancel()
                run.wake, run.waiting_for, run.status = None, None, "running"
        if woke.get("cancelled"):
            pending = run.cancel_pending
            await self.record("$cancelled", {"run": run.run_id, "i": index},
                              unmark=(f"cancel:{pending}",) if pending else ())
            run.cancel_pending, run.cancel_seen_at = None, index
        else:
            seq = woke.get("signal_seq")
            await self.record("$woke", {"run": run.run_id, "i": index, "id": op_id, **woke},
                              unmark=(f"sig:{seq}",) if seq else ())
        await self.gate.acquire()
        return woke

    def _take(self, name: str) -> dict[str, Any] | None:
        for item in self.signals:
            if item[1] == name:
                self.signals.remove(item)
                return {"signal": name, "signal_seq": item[0], "payload": item[2]}
        return None

    async def signal(self, name: str, payload: Any, signal_id: str = "") -> int:
        """Buffer a signal durably, then hand it to the run if it waits for it. A signal
        whose ``signal_id`` the journal has seen (a client retrying one whose answer it lost)
        is not buffered again: the answer is the first one's seq."""
        if not isinstance(name, str) or not name or len(name) > MAX_SIGNAL_NAME:
            raise ValueError(f"a signal name must be a non-empty str of at most "
                             f"{MAX_SIGNAL_NAME} characters, not {name!r}")
        if not isinstance(signal_id, str) or len(signal_id) > MAX_SIGNAL_ID:
            raise ValueError(f"a signal id must be a str of at most {MAX_SIGNAL_ID} "
                             f"characters, not {signal_id!r}")
        await self.ready()
        data = {"name": name, "payload": payload, **({"id": signal_id} if signal_id else {})}
        seq, recorded = await self.journal.record_once("$signal", data, signal_id,
                                                       mark="sig:", mark_value=name)
        if not recorded:
            return seq
        self.signals.append((seq, name, payload))
        run = self.run
        if run is not None and run.wake is not None and not run.wake.done() \
                and run.waiting_for == name:
            woke = self._take(name)
            if woke is not None:
                run.wake.set_result(woke)
        return seq

    # ----- cancel and status ---------------------------------------------
    async def cancel(self, run_id: int, reason: str) -> dict[str, Any]:
        await self.ready()
        run = self.run
        if run is None or (run_id and run.run_id != run_id):
            return await self.status(run_id, 0.0)
        if run.cancel_pending is None and run.cancel_seen_at is None:
            seq = await self.journal.record("$cancel", {"run": run.run_id, "reason": reason},
                                            mark="cancel:", mark_value=str(run.run_id))
            run.cancel_pending, run.cancel_reason = seq, reason
            if run.wake is not None and not run.wake.done():
                run.wake.set_result({"cancelled": True})
        return run.describe() | {"cancel_requested": True}

    async def status(self, run_id: int, wait: float) -> dict[str, Any]:
        """The run's status (``run_id`` 0: the current run, else the last one); ``wait``:
        seconds to wait for the run to end first (it is answered as soon as it ends)."""
        await self.ready()
        run = self.run
        if run is not None and (not run_id or run.run_id == run_id):
            if run.run_id in self._ended:
                return self._ended[run.run_id]
            if wait > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(run.done), wait)
                except (asyncio.TimeoutError, RunMovedError):
                    pass
            if run.done.done() and not run.done.exception():
                return run.done.result()
            return run.describe()
        if run_id in self._ended:
            return self._ended[run_id]
        return await self._search_end(run_id)

    async def _search_end(self, run_id: int) -> dict[str, Any]:
        if not run_id:
            for entry in await self.journal.last(200):
                if entry.kind == "$end" and isinstance(entry.data, dict):
                    return dict(entry.data)
            return {"run": 0, "status": "none"}
        after, searched = run_id - 1, 0
        while searched < END_SEARCH:
            page = await self.journal.read(after, 1000)
            for entry in page:
                data = entry.data if isinstance(entry.data, dict) else {}
                if entry.kind == "$end" and data.get("run") == run_id:
                    return dict(data)
            if len(page) < 1000:
                break
            after, searched = page[-1].seq, searched + len(page)
        return {"run": run_id, "status": "unknown"}

    def describe(self) -> dict[str, Any]:
        return {"buffered_signals": [name for _seq, name, _payload in self.signals],
                "run": self.run.describe() if self.run is not None else None}


__all__ = ["DurableRuntime", "NonDeterminismError", "resume_on_activation", "runtime_of"]
