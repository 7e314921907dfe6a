"""Small helpers shared by the interface tests (node client, security, limits, fuzz)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grainery.silo.testing import SiloProcess, TestCluster

GRAINS = ["tests.grains.probes"]


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
    deadline = time.monotonic() + timeout
    seen: object = None
    with grpc.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            try:
                seen = health_status(channel, timeout=1.0)
                if seen == status:
                    return
            except grpc.RpcError as exc:
                seen = exc.code()
            time.sleep(0.05)
    raise TimeoutError(f"{address} health not {status} within {timeout}s (last: {seen})")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
