"""Run deploy/docker-compose.yml without Docker: the file users run must actually form a cluster.

Redis and each silo service start as local processes with the service's own entrypoint,
command and environment (compose host names mapped to loopback). Calls go through every silo,
every /metrics is scraped, then one silo is killed with SIGKILL and the others must serve all
of its grains again, with their state, within 15 s.
"""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# The three fixed silos plus one replica of the scalable `silo` service, which derives its id
# and advertised address itself.
SILOS = ("silo1", "silo2", "silo3", "silo")
RECOVERY_S = 15


def counter_activations(metrics: str) -> float:
    """Sum of grainery_activations{grain_type="Counter",...} samples in a scrape."""
    pattern = r'^grainery_activations\{[^}]*grain_type="Counter"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, metrics, re.MULTILINE))


def test_compose_cluster_runs_as_local_processes(local_compose: Any) -> None:
    lc = local_compose
    lc.start_redis("redis")
    silos = [lc.start_silo(name) for name in SILOS]
    for silo in silos:
        lc.wait_ready(silo)
    for silo in silos:  # the compose healthcheck command itself, pointed at this silo
        check = lc.run(silo.healthcheck, 15)
        assert check.returncode == 0, f"{silo.name} healthcheck: {check.stderr}"

    # Every silo takes calls; one counter bumped through each silo in turn stays single.
    startup = time.monotonic() + 20
    for silo in silos:
        assert lc.call_until_ok([silo.target], "Counter", f"warm-{silo.name}", "add", "[1]",
                                deadline=startup) == 1
    for expected, silo in enumerate(silos, start=1):
        result = lc.call(silo.target, "Counter", "shared", "add", "[1]")
        assert result.returncode == 0, f"via {silo.name}: {result.stderr}"
        assert json.loads(result.stdout) == expected

    for silo in silos:
        assert "grainery_calls_total" in lc.scrape(silo), silo.name
        # The image turns the web dashboard on; its overview lists the whole cluster.
        status, overview = lc.dashboard(silo, "api/overview")
        assert status == 200 and all(s.name in overview for s in silos[:3]), silo.name

    # Activate counters until the silo we will kill hosts some of them.
    victim, survivors = silos[1], [s for s in silos if s is not silos[1]]
    keys: list[str] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        while counter_activations(lc.scrape(victim)) < 3 and len(keys) < 48:
            batch = [f"k{len(keys) + i}" for i in range(8)]
            results = list(pool.map(lambda k: lc.call(silos[0].target, "Counter", k, "add",
                                                      "[1]"), batch))
            assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
            keys += batch
        assert counter_activations(lc.scrape(victim)) >= 3, "placement never chose the victim"

        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        deadline = time.monotonic() + RECOVERY_S
        values = list(pool.map(
            lambda k: lc.call_until_ok([s.target for s in survivors], "Counter", k, "add",
                                       "[1]", deadline=deadline), keys))
    # Each counter was at 1 and durably written: the crash must not lose it. (A retried call
    # whose first attempt did land may have added twice, hence >=.)
    assert all(v >= 2 for v in values), dict(zip(keys, values, strict=True))

    # `docker stop` sends SIGTERM (STOPSIGNAL); a silo drains and exits 0.
    for silo in survivors:
        silo.proc.send_signal(signal.SIGTERM)
    for silo in survivors:
        assert silo.proc.wait(40) == 0, silo.output()
