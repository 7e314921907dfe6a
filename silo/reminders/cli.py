"""``grainery reminders TYPE KEY``: list a grain's durable reminders.

Output: one line per reminder (name, period, next due time in UTC and how far away, status),
or ``no reminders for TYPE/KEY``; ``--json`` prints the list as JSON; ``--all`` includes the
runtime's own ``$`` reminders. Exit codes: 0 listed (also when there are none), 1 the silo
refused (e.g. an unknown grain type: NOT_FOUND) or could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from typing import Any

from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.reminders import list_reminders


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grain_type")
    parser.add_argument("key")
    parser.add_argument("--all", action="store_true",
                        help="include the runtime's own reminders (names starting with $)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _seconds(value: float) -> str:
    """A period as people write it: 1h, 15m, 90s."""
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g}h"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"


def render(grain_type: str, key: str, found: list[dict[str, Any]], now: float) -> list[str]:
    if not found:
        return [f"no reminders for {grain_type}/{key}"]
    rows = [("NAME", "PERIOD", "NEXT DUE (UTC)", "STATUS")]
    for r in found:
        if r["disabled"]:
            due, status = "-", f"disabled: {r['disabled']}"
        else:
            when = datetime.fromtimestamp(r["next_due"], timezone.utc)
            due = when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            delta = r["next_due"] - now
            status = "delivering" if r["delivering"] else (
                f"due in {delta:.1f}s" if delta >= 0 else f"due {-delta:.1f}s ago")
            if r["failures"]:
                status += f" ({r['failures']} undeliverable)"
        rows.append((r["name"], _seconds(r["period"]), due, status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{grain_type}/{key}: {len(found)} reminder{'s' if len(found) != 1 else ''}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
              + "  " + row[3] for row in rows]
    return lines


async def run(options: argparse.Namespace, security: ClientSecurity) -> int:
    pool = ChannelPool(security, 4 * 1024 * 1024)
    try:
        found = await list_reminders(
            pool, options.target, security.call_metadata(), options.grain_type, options.key,
            options.all, options.timeout,
        )
    finally:
        await pool.close()
    if options.json:
        print(json.dumps(found, indent=2))
    else:
        print("\n".join(render(options.grain_type, options.key, found, time.time())))
    return 0
