"""``grainery top``: the dashboard's view in a terminal, from any silo's gRPC address.

It asks that silo for the membership, then every live member for its report (the same
``Management.SiloReport`` and the same merge as the web page, overview.py), and prints a
plain-text frame: no dependency, readable in a log, and ``--once`` makes it a one-shot
command for scripts and tests. Without ``--once`` it redraws every ``--interval`` seconds
until interrupted, and an unreachable silo (restarting, say) is shown and retried rather
than ending the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.grain_client import snapshot_from_proto
from grainery.client.routing import MemberInfo, PlacementRing
from grainery.silo.dashboard.overview import gather

SPARKS = "▁▂▃▄▅▆▇█"
CLEAR = "\x1b[H\x1b[2J"
HISTORY = 60  # seconds of the call rate drawn as a sparkline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", dest="target", default=argparse.SUPPRESS,
                        help="any silo's gRPC address host:port (same as --target)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    parser.add_argument("--json", action="store_true", help="print the view as JSON (--once)")


async def fetch_view(target: str, security: ClientSecurity, timeout: float) -> dict[str, Any]:
    pool = ChannelPool(security, 16 * 1024 * 1024)
    metadata = security.call_metadata()
    try:
        members = await pool.get(target).directory.Members(
            pb.MembersRequest(), timeout=timeout, metadata=metadata
        )
        snapshot = snapshot_from_proto(members)

        async def fetch(member: MemberInfo) -> pb.SiloReportResponse:
            reply: pb.SiloReportResponse = await pool.get(member.address).management.SiloReport(
                pb.SiloReportRequest(history_seconds=HISTORY, top=10),
                timeout=timeout, metadata=metadata,
            )
            return reply

        return await gather(snapshot, PlacementRing(snapshot).shares(), fetch,
                            served_by=target, timeout=timeout)
    finally:
        await pool.close()


def sparkline(values: list[float | None], width: int = HISTORY) -> str:
    shown = [v or 0.0 for v in values[-width:]]
    if not shown:
        return ""
    high = max(shown) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / high * (len(SPARKS) - 1)))]
                   for v in shown)


def _last(values: list[Any]) -> Any:
    return next((v for v in reversed(values) if v is not None), None)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def render(view: dict[str, Any]) -> str:
    """One frame of text for ``view`` (what overview.gather returns)."""
    series = view["series"]
    lines = [
        f"grainery top - cluster {view['cluster']} - membership v{view['membership_version']}"
        f" - via {view['served_by']} - {time.strftime('%H:%M:%S', time.localtime(view['time']))}",
        f"calls/s {(_last(series['calls_per_second']) or 0):.1f}   "
        f"errors/s {(_last(series['errors_per_second']) or 0):.1f}   "
        f"p50 {_ms(_last(series['p50_ms']))}  p95 {_ms(_last(series['p95_ms']))}  "
        f"p99 {_ms(_last(series['p99_ms']))}",
        f"reminder ticks/s {(_last(series['reminder_ticks_per_second']) or 0):.1f}   "
        f"not ok/s {(_last(series['reminder_failures_per_second']) or 0):.1f}   "
        f"lag p50 {_ms(_last(series['reminder_lag_p50_ms']))}  "
        f"p99 {_ms(_last(series['reminder_lag_p99_ms']))}",
        f"stream events/s published {(_last(series['stream_published_per_second']) or 0):.1f}"
        f"  delivered {(_last(series['stream_delivered_per_second']) or 0):.1f}"
        f"  dead-lettered {(_last(series['stream_dead_lettered_per_second']) or 0):.1f}   "
        f"lag p50 {_ms(_last(series['stream_lag_p50_ms']))}  "
        f"p99 {_ms(_last(series['stream_lag_p99_ms']))}",
        f"calls/s, last {len(series['time'][-HISTORY:])} s: "
        f"{sparkline(series['calls_per_second'])}",
        "",
        f"{'SILO':20} {'ADDRESS':22} {'STATE':8} {'AGE':>7} {'RING':>6} {'ACTS':>6} "
        f"{'INFLIGHT':>8} {'CALLS/S':>8}",
    ]
    for member in view["members"]:
        rate = _last(series["by_silo"].get(member["silo_id"], []))
        acts = member["activations"]
        inflight = member["calls_in_flight"]
        lines.append(
            f"{member['silo_id'][:20]:20} {member['address'][:22]:22} {member['state']:8} "
            f"{member['age_seconds']:>6.0f}s {member['ring_share'] * 100:>5.1f}% "
            f"{'-' if acts is None else acts:>6} {'-' if inflight is None else inflight:>8} "
            f"{'-' if rate is None else f'{rate:.1f}':>8}"
            + (f"  ({member['error']})" if member["error"] else "")
        )
    by_type = view["activations"]["by_type"]
    lines += ["", "ACTIVATIONS  " + ("  ".join(f"{t}={n}" for t, n in by_type.items()) or "none")]
    for title, rows, columns in (
        ("BUSIEST", view["busiest"], (("CALLS/S", "calls_per_second"), ("MEAN", "mean_ms"))),
        ("SLOWEST", view["slowest"], (("MEAN", "mean_ms"), ("SLOWEST", "slowest_ms"))),
    ):
        lines += ["", f"{title + ' GRAINS':40} {'SILO':20} "
                  + " ".join(f"{name:>10}" for name, _ in columns)]
        for row in rows[:5]:
            grain = f"{row['grain_type']}/{row['grain_key']}"
            lines.append(f"{grain[:40]:40} {row['silo'][:20]:20} "
                         + " ".join(f"{row[field]:>10.2f}" for _, field in columns))
        if not rows:
            lines.append("(no calls in the last seconds)")
    return "\n".join(lines)


async def run_top(options: argparse.Namespace, security: ClientSecurity) -> int:
    timeout = min(options.timeout, 5.0)
    if options.once:
        view = await fetch_view(options.target, security, timeout)
        print(json.dumps(view, indent=2) if options.json else render(view))
        return 0
    while True:
        try:
            frame = render(await fetch_view(options.target, security, timeout))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED):
                raise  # retrying cannot help: say it once and exit
            # The silo may be restarting: keep the last words on screen and try again.
            frame = (f"grainery top: cannot reach {options.target}: {exc.code().name}; "
                     f"retrying every {options.interval:g}s (Ctrl-C stops)")
        sys.stdout.write(CLEAR + frame + "\n")
        sys.stdout.flush()
        await asyncio.sleep(max(0.2, options.interval))
