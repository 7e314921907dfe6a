"""``grainery journal``, ``grainery signal``, ``grainery run-status``, ``grainery cancel-run``:
a grain's journal and its durable run from the command line (one Management RPC each,
through the ``--target`` silo, which forwards to wherever the grain lives)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

import orjson

from grainery.client import durable
from grainery.client.grain_client import GrainClient
from grainery.client.routing import GrainId

FOLLOW_POLL = 0.5  # seconds between reads of a followed journal


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    journal = command("journal", "print a grain's journal, one JSON entry per line")
    client_options(journal)
    _grain(journal)
    journal.add_argument("--after", type=int, default=0, help="entries after this seq")
    journal.add_argument("--limit", type=int, default=1000, help="entries per read")
    journal.add_argument("--follow", action="store_true",
                         help="keep printing new entries as they are appended (Ctrl-C stops)")

    signal = command("signal", "send a signal to a grain's durable run")
    client_options(signal)
    _grain(signal)
    signal.add_argument("name")
    signal.add_argument("payload_json", nargs="?", default="null", help="JSON payload")
    signal.add_argument("--id", dest="signal_id", default=None,
                        help="idempotency key: the grain records a signal once per id, so "
                             "rerunning this command with the same id is safe (default: a "
                             "fresh id)")

    status = command("run-status", "the status of a grain's durable run, as JSON")
    client_options(status)
    _grain(status)
    status.add_argument("--run", type=int, default=0, help="run id (default: current/last)")
    status.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the run to end first")

    cancel = command("cancel-run", "cancel a grain's running durable run")
    client_options(cancel)
    _grain(cancel)
    cancel.add_argument("--run", type=int, default=0, help="run id (default: the current one)")
    cancel.add_argument("--reason", default="", help="recorded in the journal")


def _grain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grain_type")
    parser.add_argument("key")


def _client(options: argparse.Namespace, security: Any) -> GrainClient:
    return GrainClient(options.target, security=security, timeout=options.timeout,
                       refresh_interval=0, gateway_only=True, streamed=False)


async def run_journal(options: argparse.Namespace, security: Any) -> int:
    grain = GrainId(options.grain_type, options.key)
    after = options.after
    async with _client(options, security) as cluster:
        while True:
            entries = await durable.journal(cluster, grain, after, options.limit)
            for entry in entries:
                print(orjson.dumps(entry).decode(), flush=True)
                after = entry["seq"]
            if len(entries) >= options.limit:
                continue
            if not options.follow:
                return 0
            await asyncio.sleep(FOLLOW_POLL)


async def run_signal(options: argparse.Namespace, security: Any) -> int:
    try:
        payload = json.loads(options.payload_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not valid JSON: {exc}") from None
    async with _client(options, security) as cluster:
        seq = await durable.signal(cluster, GrainId(options.grain_type, options.key),
                                   options.name, payload, signal_id=options.signal_id)
    print(json.dumps({"signal": options.name, "seq": seq}))
    return 0


async def run_run_status(options: argparse.Namespace, security: Any) -> int:
    async with _client(options, security) as cluster:
        status = await durable.run_status(cluster, GrainId(options.grain_type, options.key),
                                          options.run, options.wait)
    print(json.dumps(status))
    return 0


async def run_cancel(options: argparse.Namespace, security: Any) -> int:
    async with _client(options, security) as cluster:
        status = await durable.run_status(cluster, GrainId(options.grain_type, options.key),
                                          options.run, cancel=True, reason=options.reason)
    print(json.dumps(status))
    return 0


RUNNERS = {"journal": run_journal, "signal": run_signal, "run-status": run_run_status,
           "cancel-run": run_cancel}
