"""Every series the Grafana dashboard queries must be one a live silo really exports.

The static test checks the dashboard against the documented families; this one starts the
compose `silo1` service as a local process, makes a call, and compares with its /metrics.
"""

from __future__ import annotations

import re
import time
from typing import Any


def exported_names(metrics: str) -> set[str]:
    """Sample names, plus the series names each # TYPE line implies (a labelled family with
    no samples yet still declares its type)."""
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", metrics, re.MULTILINE))
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def test_dashboard_series_are_exported(deploy: Any, local_compose: Any) -> None:
    lc = local_compose
    lc.start_redis("redis")
    silo = lc.start_silo("silo1")
    lc.wait_ready(silo)
    assert lc.call_until_ok([silo.target], "Counter", "dash", "add", "[2]",
                            deadline=time.monotonic() + 20) == 2
    metrics = lc.scrape(silo)
    missing = deploy.dashboard_series - exported_names(metrics)
    assert not missing, f"dashboard queries series the silo does not export: {missing}"
    # A call was made, so the latency histogram has real buckets, not just a declaration.
    assert re.search(r"^grainery_call_duration_seconds_bucket\{", metrics, re.MULTILINE)
