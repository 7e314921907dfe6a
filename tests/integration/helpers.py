"""Small helpers shared by the interface tests (node client, security, limits, fuzz)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grainery.client import GrainClient
from grainery.silo.testing import SiloProcess, TestCluster
from tests.eventually import eventually_sync

GRAINS = ["tests.grains.probes"]


@asynccontextmanager
async def live_client(cluster: TestCluster) -> AsyncIterator[GrainClient]:
    """A client of a module's shared cluster, after checking that no silo died in an earlier
    test (the failure then shows the dead silo's log tail instead of a connection error)."""
    for silo in cluster.silos:
        assert silo.alive, f"silo {silo.name} died:\n{silo.log_tail()}"
    async with cluster.client() as connected:
        yield connected


def unique(prefix: str) -> str:
    """A key no other test (or earlier run on the same store) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def stop_all(silos: list[SiloProcess], timeout: float = 15.0) -> None:
    """SIGTERM every silo at once and wait for all (the tests' budget is shared)."""
    threads = [threading.Thread(target=s.stop, kwargs={"timeout": timeout}) for s in silos
               if s.alive]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextmanager
def running_cluster(cluster: TestCluster) -> Iterator[TestCluster]:
    cluster.start()
    try:
        yield cluster
    finally:
        stop_all(cluster.silos)


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 5.0) -> Any:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )
    return reply.status


def wait_health(address: str, status: Any = health_pb2.HealthCheckResponse.SERVING,
                timeout: float = 10.0) -> None:
    with grpc.insecure_channel(address) as channel:
        def reached() -> bool:
            seen = health_status(channel, timeout=1.0)
            if seen != status:
                raise AssertionError(f"health {seen}")  # shown if it never gets there
            return True

        eventually_sync(reached, timeout, f"{address} health {status}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
