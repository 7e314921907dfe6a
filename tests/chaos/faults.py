"""Runs the seeded fault schedule against a ChaosCluster, logging what it did and when.

Every fault heals itself before it ends (the silo restarted, thawed or reconnected; the
store back up), so when :meth:`FaultDriver.run` returns, the faults have stopped. The
waits inside a fault are its hold times from the schedule (how long a silo stays down or
frozen), not waits for something to happen. Process operations block, so they run in
threads and the load keeps going meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grainery.silo.testing import SiloProcess
from tests.chaos.cluster import ChaosCluster
from tests.chaos.schedule import Fault, Step, steps

_START_ATTEMPTS = 3  # a silo started while the store restarts may exit; start it again


class FaultDriver:
    def __init__(
        self, chaos: ChaosCluster, seed: int, lease: float, clock: Callable[[], float]
    ) -> None:
        self.chaos = chaos
        self.seed = seed
        self.lease = lease
        self.clock = clock
        self.log: list[str] = []
        self.kinds_run: set[Fault] = set()
        self._busy: set[str] = set()

    def note(self, message: str) -> None:
        self.log.append(f"{self.clock():7.2f}s {message}")

    async def run(self, seconds: float) -> None:
        """Run faults until ``seconds`` have passed and every kind has run at least once;
        at most two at a time (a holding fault flagged ``overlap`` and the next one)."""
        started = self.clock()
        pending: list[asyncio.Task[None]] = []
        try:
            for step in steps(self.seed, self.lease):
                if self.clock() - started >= seconds and self.kinds_run == set(Fault):
                    break
                await asyncio.sleep(step.gap)
                pending.append(asyncio.create_task(self._run(step)))
                if step.overlap and len(pending) < 2:
                    continue
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.gather(*pending)
        finally:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    self.note(f"fault failed: {type(result).__name__}: {result}")
        self.note("faults stopped")

    async def _run(self, step: Step) -> None:
        fault = step.fault
        self.kinds_run.add(fault)
        if fault is Fault.STORE:
            await self._store(step)
            return
        target = self._pick(step)
        if target is None:
            self.note(f"{step.describe()}: skipped, no eligible silo")
            return
        self._busy.add(target.name)
        try:
            if fault is Fault.KILL:
                await self._kill(target, step)
            elif fault is Fault.PAUSE:
                await self._pause(target, step)
            elif fault is Fault.GRACEFUL:
                await self._graceful(target, step)
            elif fault is Fault.JOIN:
                await self._join(target, step)
            else:
                await self._partition(target, step)
        finally:
            self._busy.discard(target.name)

    def _eligible(self, fault: Fault) -> list[SiloProcess]:
        silos = [s for s in self.chaos.silos if s.alive and s.name not in self._busy]
        if fault is Fault.PARTITION:
            silos = [s for s in silos if self.chaos.proxy_of(s) is not None]
        if fault is Fault.JOIN:  # the one that leaves: proxied silos stay for partitions
            silos = [s for s in silos if self.chaos.proxy_of(s) is None]
        return sorted(silos, key=lambda s: s.name)

    def _pick(self, step: Step) -> SiloProcess | None:
        silos = self._eligible(step.fault)
        return silos[int(step.pick * len(silos))] if silos else None

    async def _start(self, silo: SiloProcess) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                await asyncio.to_thread(silo.start)
                self.note(f"{silo.name} serving again")
                return
            except (RuntimeError, TimeoutError) as exc:
                if silo.alive:
                    await asyncio.to_thread(silo.kill)
                self.note(f"{silo.name} start attempt {attempt} failed: {str(exc)[:200]}")
                if attempt == _START_ATTEMPTS:
                    raise

    async def _kill(self, silo: SiloProcess, step: Step) -> None:
        self.note(f"kill -9 {silo.name}; down for {step.hold:.1f}s")
        await asyncio.to_thread(silo.kill)
        await asyncio.sleep(step.hold)
        await self._start(silo)

    async def _pause(self, silo: SiloProcess, step: Step) -> None:
        self.note(f"SIGSTOP {silo.name} for {step.hold:.1f}s (lease {self.lease:.0f}s)")
        silo.pause()
        await asyncio.sleep(step.hold)
        silo.resume()
        self.note(f"SIGCONT {silo.name}")

    async def _graceful(self, silo: SiloProcess, step: Step) -> None:
        self.note(f"SIGTERM {silo.name}")
        code = await asyncio.to_thread(silo.stop)
        self.note(f"{silo.name} exited with {code}; down for {step.hold:.1f}s")
        await asyncio.sleep(step.hold)
        await self._start(silo)

    async def _join(self, leaver: SiloProcess, step: Step) -> None:
        newcomer = await asyncio.to_thread(self.chaos.cluster.add_silo)
        self.note(f"{newcomer.name} joined; {leaver.name} leaves in {step.hold:.1f}s")
        await asyncio.sleep(step.hold)
        code = await asyncio.to_thread(leaver.stop)
        self.note(f"{leaver.name} left (SIGTERM), exit code {code}")

    async def _partition(self, silo: SiloProcess, step: Step) -> None:
        proxy = self.chaos.proxy_of(silo)
        assert proxy is not None
        self.note(f"cut {silo.name} off from the store for {step.hold:.1f}s")
        proxy.block()
        try:
            await asyncio.sleep(step.hold)
        finally:
            proxy.unblock()
        self.note(f"{silo.name} reconnected to the store")

    async def _store(self, step: Step) -> None:
        if "store" in self._busy:
            self.note("store restart: skipped, the store is already restarting")
            return
        self._busy.add("store")
        store = self.chaos.store
        try:
            self.note(f"store stops (SIGTERM); down for {step.hold:.1f}s")
            await asyncio.to_thread(store.stop)
            await asyncio.sleep(step.hold)
            await asyncio.to_thread(store.start)
            self.note("store serving again (AOF reloaded)")
        finally:
            self._busy.discard("store")
