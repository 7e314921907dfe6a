"""The ``grainery`` command: run a silo, call a grain, show the cluster, probe health."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.codec import decode_args
from grainery.client.errors import GrainError, from_rpc_error
from grainery.client.grain_client import GrainClient, snapshot_from_proto
from grainery.client.routing import PlacementRing
from grainery.silo.config import SILO_OPTIONS, SiloConfig, env_defaults

DEFAULT_TARGET = "127.0.0.1:7070"


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--target", default=env("GRAINERY_TARGET", DEFAULT_TARGET),
                        help="silo address host:port (env GRAINERY_TARGET)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    parser.add_argument("--tls-ca", default=env("GRAINERY_TLS_CA"),
                        help="PEM CA to verify the silo (enables TLS)")
    parser.add_argument("--tls-cert", default=env("GRAINERY_CLIENT_CERT"),
                        help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", default=env("GRAINERY_CLIENT_KEY"),
                        help="PEM client key (mutual TLS)")
    parser.add_argument("--token", default=env("GRAINERY_TOKEN"), help="bearer token")


def _security(options: argparse.Namespace) -> ClientSecurity:
    return ClientSecurity.from_files(options.tls_ca, options.tls_cert, options.tls_key,
                                     options.token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grainery", description="Grainery virtual actors")
    commands = parser.add_subparsers(dest="command", required=True)

    silo = commands.add_parser("silo", help="run a silo")
    for option in SILO_OPTIONS:
        kwargs: dict[str, Any] = {"help": f"{option.help} (env {option.env})"}
        if option.repeat:
            kwargs["action"] = "append"
        else:
            kwargs["type"] = option.type
        silo.add_argument(option.flag, **kwargs)

    call = commands.add_parser("call", help="call a grain method; prints the JSON result")
    _add_client_options(call)
    call.add_argument("grain_type")
    call.add_argument("key")
    call.add_argument("method")
    call.add_argument("args_json", nargs="?", default="[]", help="JSON array of arguments")

    status = commands.add_parser("status", help="members, ring share, activations per silo")
    _add_client_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    health = commands.add_parser("health", help="exit 0 when the silo is SERVING")
    _add_client_options(health)
    return parser


# ----- grainery silo -----------------------------------------------------
def silo_config(options: argparse.Namespace) -> SiloConfig:
    values = env_defaults()
    for option in SILO_OPTIONS:
        name = option.flag.lstrip("-").replace("-", "_")
        given = getattr(options, name)
        if given is not None:
            if option.repeat:
                given = tuple(m.strip() for item in given for m in item.split(",") if m.strip())
            values[name] = given
    values.setdefault("grains", ())
    return SiloConfig(**values)


def dump_tasks() -> None:
    """SIGUSR1: log every asyncio task's stack (what is this silo waiting for?)."""
    import io
    import logging

    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"{task!r}\n")
        for frame in task.get_stack(limit=8):
            code = frame.f_code
            out.write(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}\n")
    logging.getLogger("grainery.debug").warning("asyncio tasks:\n%s", out.getvalue())


async def run_silo(config: SiloConfig) -> int:
    from redis.exceptions import RedisError

    from grainery.silo.logs import configure_logging, redact
    from grainery.silo.runtime import Silo

    configure_logging(config.log_format, config.log_level)
    try:
        import uvloop  # noqa: F401 - only checks availability; the policy is set in main()
    except ImportError:
        pass
    silo = Silo(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        await silo.start()
    except (RedisError, OSError, RuntimeError, ValueError, ImportError) as exc:
        await silo.abort()
        where = ""
        if isinstance(exc, RedisError):
            where = f" (state store {redact(config.redis) if config.redis else 'embedded'})"
        print(f"grainery: error: silo could not start: {type(exc).__name__}: "
              f"{redact(str(exc))}{where}", file=sys.stderr)
        return 2
    # Start-up objects (modules, the registry, the server) never die: keep them out of the
    # collector's scans, and collect young objects less often, since a silo holding many
    # grains otherwise spends a large share of its CPU in full collections.
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    await stop.wait()
    await silo.stop()
    return 0


# ----- grainery call -----------------------------------------------------
async def run_call(options: argparse.Namespace) -> int:
    args = decode_args(options.args_json)
    # One call: go through the target silo (it forwards), since the caller may not be able
    # to reach the other silos' advertised addresses (e.g. from outside docker compose).
    async with GrainClient(options.target, security=_security(options),
                           timeout=options.timeout, refresh_interval=0,
                           gateway_only=True, streamed=False) as cluster:
        result = await cluster.invoke(options.grain_type, options.key, options.method, args)
    print(json.dumps(result))
    return 0


# ----- grainery status ---------------------------------------------------
async def run_status(options: argparse.Namespace) -> int:
    security = _security(options)
    pool = ChannelPool(security, 4 * 1024 * 1024)
    metadata = security.call_metadata()
    try:
        members = await pool.get(options.target).directory.Members(
            pb.MembersRequest(), timeout=options.timeout, metadata=metadata
        )
        snapshot = snapshot_from_proto(members)
        shares = PlacementRing(snapshot).shares()
        rows: list[dict[str, Any]] = []
        for member in sorted(snapshot.members, key=lambda m: m.silo_id):
            stats: dict[str, Any] = {}
            state = member.state
            if member.state != "left":  # a dead row may be a silo that fenced itself: ask it
                try:
                    reply = await pool.get(member.address).management.SiloStats(
                        pb.SiloStatsRequest(), timeout=5.0, metadata=metadata
                    )
                    stats = {t.grain_type: t.activations for t in reply.activations}
                    state = _shown_state(member.state, reply.silo_id == member.silo_id,
                                         reply.state)
                except grpc.aio.AioRpcError as exc:
                    stats = {"error": exc.code().name} if member.state != "dead" else {}
            rows.append({
                "silo_id": member.silo_id, "address": member.address, "state": state,
                "age_seconds": round(time.time() - member.started_at, 1),
                "ring_share": round(shares.get(member.silo_id, 0.0), 4),
                "activations": stats,
            })
    finally:
        await pool.close()
    report = {"cluster": snapshot.cluster, "membership_version": snapshot.version,
              "members": rows}
    if options.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"cluster {report['cluster']}  membership version {snapshot.version}")
    print(f"{'SILO':24} {'ADDRESS':22} {'STATE':8} {'AGE':>8} {'RING':>6}  ACTIVATIONS")
    for row in rows:
        acts: dict[str, Any] = row["activations"]
        total = sum(v for v in acts.values() if isinstance(v, int))
        detail = ", ".join(f"{k}={v}" for k, v in sorted(acts.items()))
        print(f"{row['silo_id']:24} {row['address']:22} {row['state']:8} "
              f"{row['age_seconds']:>7.0f}s {row['ring_share'] * 100:>5.1f}%  {total} ({detail})")
    return 0


def _shown_state(listed: str, same_silo: bool, reported: str) -> str:
    """The silo's own state when it differs from the membership row (e.g. "fenced" while the
    row still says active, or dead). A dead row answered by a live process is a newer
    incarnation at the same address: keep "dead" then."""
    if not same_silo or not reported or reported == listed:
        return listed
    if listed == "dead" and reported in ("active", "leaving", "joining"):
        return listed
    return reported


# ----- grainery health ---------------------------------------------------
async def run_health(options: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    pool = ChannelPool(_security(options), 1024 * 1024)
    try:
        stub = health_pb2_grpc.HealthStub(pool.get(options.target).channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""),
                                 timeout=min(options.timeout, 5.0))
    except grpc.aio.AioRpcError as exc:
        print(f"grainery: {options.target} health check failed: {exc.code().name}",
              file=sys.stderr)
        return 1
    finally:
        await pool.close()
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if serving else 1


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        if options.command == "silo":
            return asyncio.run(run_silo(silo_config(options)))
        runner = {"call": run_call, "status": run_status, "health": run_health}[options.command]
        return asyncio.run(runner(options))
    except GrainError as error:
        print(f"grainery: {type(error).__name__} ({error.code.name}): {error.message}",
              file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        converted = from_rpc_error(exc)
        print(f"grainery: {converted.code.name}: {converted.message}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"grainery: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
