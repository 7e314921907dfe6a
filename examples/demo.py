"""`make demo`: a three-silo cluster on the embedded store, agents, a crash, a restart.

1. silo-a starts the embedded store; silo-b and silo-c join it with --redis.
2. Six chat agents are told things; they spread across the silos.
3. Durable agents start (examples/supply_chain.py, examples/trading.py): orders run their
   plans, some wait for a human's approval; a trade fans out to three exchanges while its
   progress is queried.
4. A silo hosting waiting order agents is killed with SIGKILL mid-demo; every chat agent
   answers from the survivors with its memory intact; the approvals are sent and every
   order plan finishes on the survivors, each effect applied once.
5. The whole cluster is stopped and silo-a restarted alone on the same data
   directory: the memory is still there (the store's append-only file).
Exits non-zero if any agent forgot anything.

With --keep (`make demo KEEP=1`) the cluster is then brought back to three silos and kept
running under a light load: the demo prints the web dashboard's URL (and the
`grainery top` command) and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples import supply_chain, trading  # noqa: E402
from grainery.client import GrainClient  # noqa: E402
from grainery.silo.storage.embedded import free_port  # noqa: E402

GRAINS = "examples.agents,examples.supply_chain,examples.trading"

AGENTS = ["alice", "bob", "carol", "dave", "erin", "frank"]


class DemoSilo:
    def __init__(self, name: str, data_dir: Path, redis_url: str | None = None,
                 dashboard: bool = False) -> None:
        self.name, self.port = name, free_port()
        self.address = f"127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "grainery", "silo", "--grains", GRAINS,
                "--port", str(self.port), "--silo-id", name, "--cluster", "demo",
                "--data-dir", str(data_dir), "--log-level", "WARNING"]
        if dashboard:  # it prints "dashboard of silo NAME at URL"
            args += ["--dashboard-port", "0"]
        # The first silo runs the embedded store on any free port (so the demo never clashes
        # with a store already on the default port); the others join it with --redis.
        args += ["--redis", redis_url] if redis_url else ["--store-port", "0"]
        self.log = open(data_dir / f"{name}.log", "w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.seek(0)
            if match := re.search(pattern, self.log.read()):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        raise RuntimeError(f"{self.name} did not print {pattern!r}:\n{self.log.read()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(30)
        self.log.close()
        return code


def say(text: str) -> None:
    print(text, flush=True)


async def converse(client: GrainClient) -> Counter[str]:
    placement: Counter[str] = Counter()
    for name in AGENTS:
        agent = client.get_grain("ChatAgent", name)
        first = await agent.chat(f"Hello! My name is {name.title()}.")
        await agent.chat(f"Remember that {name} likes {len(name)}-letter words.")
        placement[first["silo"]] += 1
        say(f"  {name:6} -> {first['reply']:32} (on {first['silo']})")
    return placement


async def check_memory(client: GrainClient, phase: str) -> bool:
    ok = True
    for name in AGENTS:
        agent = client.get_grain("ChatAgent", name)
        answer = await agent.chat("What is my name?")
        notes = await agent.chat("What do you remember?")
        good = answer["reply"] == f"Your name is {name.title()}." and name in notes["reply"]
        ok &= good
        say(f"  {name:6} -> {answer['reply']:28} {notes['reply'][:44]:44} "
            f"(on {answer['silo']}) {'ok' if good else 'FORGOT'}")
    total = await client.get_grain("Counter", "messages").get()
    say(f"  messages counted by the Counter grain so far: {total}  [{phase}]")
    return ok


async def start_durable(
    client: GrainClient,
) -> tuple[list[asyncio.Future[object]], dict[str, str]]:
    """Start the order plans and run one trade, watching its progress; returns the order
    callers and the orders waiting for approval (with their silo)."""
    orders = supply_chain.start_orders(client)
    trade = asyncio.ensure_future(client.get_grain("TradingDesk", "fund-1").trade("ACME", 20000))
    seen = []
    while not trade.done():
        progress = await client.get_grain("TradingDesk", "fund-1").progress()
        if progress["stage"] not in seen:
            seen.append(progress["stage"])
            say(f"  trade progress (query while it runs): {progress}")
        await asyncio.sleep(0.05)
    say(f"  trade (quotes from {', '.join(trading.EXCHANGES)} in parallel): {await trade}")
    hedged = await client.get_grain("TradingDesk", "fund-2").trade("ACME", 80000)
    say(f"  a large trade, routed by risk to another strategy: {hedged}")
    waiting: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(waiting) < 3 and time.monotonic() < deadline:
        waiting = await supply_chain.waiting_for_approval(client)
        await asyncio.sleep(0.1)
    say(f"  orders waiting for a human's approval: {waiting}")
    return orders, waiting


def pick_victim(silos: list[DemoSilo], waiting: dict[str, str]) -> DemoSilo:
    """The joined silo (not silo-a, which runs the store) hosting most waiting agents."""
    joined = silos[1:]
    return max(joined, key=lambda s: sum(1 for where in waiting.values() if where == s.name))


async def finish_durable(
    client: GrainClient, orders: list[asyncio.Future[object]], waiting: dict[str, str]
) -> bool:
    await supply_chain.approve_all(client, sorted(waiting), "ops@example.com")
    results = await supply_chain.results(client)
    for order_id, result in results.items():
        say(f"  {order_id}: {result}")
    lost = sum(1 for caller in orders if caller.done() and caller.exception() is not None)
    say(f"  callers whose call died with the silo: {lost} (the plans went on without them)")
    stock = await supply_chain.stock(client)
    statuses = {order_id: result["status"] for order_id, result in results.items()}
    ok = statuses == supply_chain.EXPECTED and stock == supply_chain.EXPECTED_STOCK
    say(f"  stock after the plans: {stock} "
        f"({'each reservation applied once; the rejected order compensated' if ok else 'WRONG'})")
    for caller in orders:
        caller.cancel()
    return ok


async def keep_running(silos: list[DemoSilo], data_dir: Path) -> None:
    """--keep: three silos again (the restarted silo-a serves the dashboard), a light load,
    and the URL to open; until Ctrl-C."""
    first = silos[0]
    url = first.wait_line(r"embedded store at (\S+)").group(1)
    for name in ("silo-b", "silo-c"):
        silos.append(DemoSilo(name, data_dir, url))
    for silo in silos:
        silo.wait_line("serving on")
    dashboard = first.wait_line(r"dashboard of silo \S+ at (\S+)").group(1)
    say("== keeping the cluster running (Ctrl-C stops it)")
    say(f"  dashboard: {dashboard}")
    say(f"  terminal:  .venv/bin/grainery top --address {first.address}")
    async with GrainClient([s.address for s in silos]) as client:
        await client.wait_for_members(3)
        turn = 0
        while True:  # a light load, so the charts move: one agent talks every 0.2 s
            name = AGENTS[turn % len(AGENTS)]
            with contextlib.suppress(Exception):
                await client.get_grain("ChatAgent", name).chat(f"Still there, {name}?")
                await client.get_grain("Counter", "messages").get()
            turn += 1
            await asyncio.sleep(0.2)


async def main(keep: bool = False) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="grainery-demo-"))
    silos: list[DemoSilo] = []
    try:
        say("== 1. three silos: silo-a starts the embedded store, the others join it")
        first = DemoSilo("silo-a", data_dir)
        silos.append(first)
        url = first.wait_line(r"embedded store at (\S+)").group(1)
        first.wait_line("serving on")
        say(f"  embedded store: {url}")
        for name in ("silo-b", "silo-c"):
            silos.append(DemoSilo(name, data_dir, url))
        for silo in silos:
            silo.wait_line("serving on")
        say("  silos: " + ", ".join(f"{s.name}@{s.address}" for s in silos))

        async with GrainClient([s.address for s in silos]) as client:
            await client.wait_for_members(3)
            say("== 2. agents meet their users (each is one grain, placed by consistent hashing)")
            placement = await converse(client)
            say(f"  placement: {dict(placement)}")

            say("== 3. durable agents: order plans and a trade")
            orders, waiting = await start_durable(client)
            victim = pick_victim(silos, waiting)
            say(f"== 4. kill -9 {victim.name} mid-demo (order agents waiting there: "
                f"{sorted(o for o, s in waiting.items() if s == victim.name) or 'none'})")
            started = time.monotonic()
            victim.stop(signal.SIGKILL)
            ok = await check_memory(client, "after the crash")
            say(f"  every agent answered again within {time.monotonic() - started:.1f}s")
            ok &= await finish_durable(client, orders, waiting)

        say("== 5. stop the cluster, restart silo-a alone on the same data directory")
        for silo in reversed(silos):
            if silo is not victim:
                silo.stop()
        restarted = DemoSilo("silo-a", data_dir, dashboard=keep)
        silos = [restarted]
        restarted.wait_line("serving on")
        async with GrainClient(restarted.address) as client:
            ok &= await check_memory(client, "after a full restart")
        say("== done: " + ("every agent remembered everything" if ok else "MEMORY WAS LOST"))
        if keep and ok:
            with contextlib.suppress(asyncio.CancelledError):
                await keep_running(silos, data_dir)
        return 0 if ok else 1
    finally:
        for silo in silos:
            if silo.process.poll() is None:
                silo.stop()
        if os.environ.get("GRAINERY_KEEP_DEMO_DATA"):
            say(f"(data kept in {data_dir})")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Grainery's three-silo demo")
    parser.add_argument("--keep", action="store_true",
                        help="afterwards, keep a 3-silo cluster running and print the "
                             "dashboard's URL (until Ctrl-C)")
    options = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(options.keep)))
    except KeyboardInterrupt:  # --keep ends with Ctrl-C; main's cleanup has run
        sys.exit(0)
