"""The cluster under chaos: silos on one AOF store, some of them reaching it through a proxy.

A proxied silo can be cut off from the store on its own (a partition); the others talk to
the store directly, so the proxy's copying stays off most of the traffic. Proxied silos
keep their proxy across restarts (a restart reuses the silo's arguments).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.integration.fault_proxy import FaultProxy
from tests.integration.helpers import stop_all

GRAINS = ["tests.grains.chaos_probes"]
PROXIED_PREFIX = "proxied"


class ChaosCluster:
    def __init__(self, store: TestStore, size: int, proxied: int) -> None:
        if not 0 < proxied < size:
            raise ValueError(f"need 0 < proxied < size, got proxied={proxied} size={size}")
        self.store = store
        self.env = {"GRAINERY_TEST_REDIS": store.url}
        self.cluster = TestCluster(store, GRAINS, size=size - proxied, env=self.env)
        self._proxied = proxied
        self.proxies: dict[str, FaultProxy] = {}

    def start(self) -> ChaosCluster:
        """Start every silo at once (start-up time counts against the short run)."""
        extra: list[SiloProcess] = []
        for index in range(1, self._proxied + 1):
            proxy = FaultProxy(self.store.port).start()
            name = f"{PROXIED_PREFIX}{index}"
            self.proxies[name] = proxy
            extra.append(SiloProcess(name, GRAINS, proxy.url, self.cluster.cluster,
                                     env=self.env, log_dir=self.cluster.log_dir))
        errors: list[BaseException] = []

        def run(start: Callable[[], object]) -> None:
            try:
                start()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after every join
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(self.cluster.start,))]
        threads += [threading.Thread(target=run, args=(silo.start,)) for silo in extra]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.cluster.silos.extend(extra)
        if errors:
            self.stop()
            raise errors[0]
        return self

    @property
    def silos(self) -> list[SiloProcess]:
        return self.cluster.silos

    def proxy_of(self, silo: SiloProcess) -> FaultProxy | None:
        return self.proxies.get(silo.name)

    def heal(self) -> None:
        """Undo whatever a failed run left behind: thaw every silo, reconnect every proxy."""
        for proxy in self.proxies.values():
            proxy.unblock()
        for silo in self.silos:
            silo.resume()

    def stop(self) -> None:
        """Thaw and reconnect everything, then stop every silo (gracefully, all at once)."""
        self.heal()
        stop_all(self.silos)
        for proxy in self.proxies.values():
            proxy.stop()
