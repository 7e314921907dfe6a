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
from grainery.client.codec import decode_args, decode_kwargs
from grainery.client.errors import GrainError, from_rpc_error
from grainery.client.grain_client import GrainClient, snapshot_from_proto
from grainery.client.routing import PlacementRing
from grainery.silo.config import SILO_OPTIONS, SiloConfig, env_defaults
from grainery.silo.reminders import cli as reminders_cli
from grainery.silo.startup_error import StartupError
from grainery.silo.streams import cli as streams_cli

DEFAULT_TARGET = "127.0.0.1:7070"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except for options that have none (or a plain switch)
    and secrets: a default read from GRAINERY_TOKEN must not be printed by ``--help``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or action.dest == "token":
            return action.help
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grainery")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    # The CLI's own variables: GRAINERY_TLS_CA is the *silo's* CA for other silos, so the
    # CLI's CA (which verifies the silo it calls) is GRAINERY_CLIENT_CA, like CLIENT_CERT/KEY.
    env = os.environ.get
    parser.add_argument("--target", default=env("GRAINERY_TARGET", DEFAULT_TARGET),
                        help="silo address host:port (env GRAINERY_TARGET)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    parser.add_argument("--tls-ca", default=env("GRAINERY_CLIENT_CA"),
                        help="PEM CA to verify the silo; enables TLS (env GRAINERY_CLIENT_CA)")
    parser.add_argument("--tls-cert", default=env("GRAINERY_CLIENT_CERT"),
                        help="PEM client certificate, mutual TLS (env GRAINERY_CLIENT_CERT)")
    parser.add_argument("--tls-key", default=env("GRAINERY_CLIENT_KEY"),
                        help="PEM client key, mutual TLS (env GRAINERY_CLIENT_KEY)")
    parser.add_argument("--token", default=env("GRAINERY_TOKEN"),
                        help="bearer token (env GRAINERY_TOKEN)")


def _security(options: argparse.Namespace) -> ClientSecurity:
    return ClientSecurity.from_files(options.tls_ca, options.tls_cert, options.tls_key,
                                     options.token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grainery", description="Grainery virtual actors",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"grainery {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text,
                                   formatter_class=_HelpFormatter)

    silo = command("silo", "run a silo")
    for option in SILO_OPTIONS:
        # The parser's own default stays None (so a flag beats its env var, which beats the
        # default); the help shows the real default.
        default = "" if option.default is None else f"; default: {option.default}"
        kwargs: dict[str, Any] = {"help": f"{option.help} (env {option.env}{default})"}
        if option.repeat:
            kwargs["action"] = "append"
        else:
            kwargs["type"] = option.type
        silo.add_argument(option.flag, **kwargs)

    call = command("call", "call a grain method; prints the JSON result")
    _add_client_options(call)
    call.add_argument("grain_type")
    call.add_argument("key")
    call.add_argument("method")
    call.add_argument("args_json", nargs="?", default="[]", help="JSON array of arguments")
    call.add_argument("--kwargs", default="", metavar="JSON",
                      help="JSON object of keyword arguments")

    status = command("status", "members, ring share, activations per silo")
    _add_client_options(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    health = command("health", "exit 0 when the silo is SERVING")
    _add_client_options(health)

    reminders = command("reminders", "list a grain's durable reminders")
    _add_client_options(reminders)
    reminders_cli.add_arguments(reminders)
    from grainery.silo.durable import cli as durable_cli  # journal, signal, run-status, ...

    durable_cli.add_commands(command, _add_client_options)
    streams_cli.add_commands(command, _add_client_options)  # publish, subscribe

    from grainery.silo.dashboard import top as top_command

    top = command("top", "the cluster live in the terminal: members, rates, latency, "
                  "busiest and slowest grains (the web dashboard's view)")
    _add_client_options(top)
    top_command.add_arguments(top)
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
    from grainery.silo.registry import GrainRegistry
    from grainery.silo.runtime import Silo
    from grainery.silo.startup_checks import check_port, check_store, load_grains

    try:
        # Before logging and before anything binds: a refused start is one line on stderr.
        check_store(config)
        check_port(config)
        configure_logging(config.log_format, config.log_level)
        registry = GrainRegistry()
        load_grains(config, registry)
    except StartupError as exc:
        print(f"grainery: error: {exc.one_line()}", file=sys.stderr)
        return 2
    silo = Silo(config, registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        await silo.start()
    except StartupError as exc:
        await silo.abort()
        print(f"grainery: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except (RedisError, OSError, RuntimeError, ValueError, ImportError) as exc:
        await silo.abort()
        where, hint = "", "grainery silo --help lists every option"
        if isinstance(exc, RedisError):
            store = redact(config.redis) if config.redis else (config.join or "embedded")
            where = f" (state store {store})"
            hint = "check that this store is running and reachable, and its URL (--redis/--join)"
        elif isinstance(exc, OSError):
            hint = "check the ports and files this names (--port, --metrics-port, --tls-*)"
        message = " ".join(f"{type(exc).__name__}: {redact(str(exc))}{where}".split())
        print(f"grainery: error: silo could not start: {message} (hint: {hint})",
              file=sys.stderr)
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
    kwargs = decode_kwargs(options.kwargs)
    # One call: go through the target silo (it forwards), since the caller may not be able
    # to reach the other silos' advertised addresses (e.g. from outside docker compose).
    async with GrainClient(options.target, security=_security(options),
                           timeout=options.timeout, refresh_interval=0,
                           gateway_only=True, streamed=False) as cluster:
        result = await cluster.invoke(options.grain_type, options.key, options.method, args,
                                      kwargs=kwargs)
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


# ----- grainery top ------------------------------------------------------
async def run_top(options: argparse.Namespace) -> int:
    from grainery.silo.dashboard.top import run_top as top

    return await top(options, _security(options))


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
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # `grainery status | head -1`: the reader left. Exit quietly, as a tool killed by
        # SIGPIPE would, and point stdout at /dev/null so the interpreter's final flush
        # does not print a second BrokenPipeError.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    options = build_parser().parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        if options.command == "silo":
            return asyncio.run(run_silo(silo_config(options)))
        if options.command == "reminders":
            return asyncio.run(reminders_cli.run(options, _security(options)))
        from grainery.silo.durable import cli as durable_cli

        if options.command in durable_cli.RUNNERS:
            durable_runner = durable_cli.RUNNERS[options.command]
            return asyncio.run(durable_runner(options, _security(options)))
        if options.command in ("publish", "subscribe"):
            stream_runner = (streams_cli.run_publish if options.command == "publish"
                             else streams_cli.run_subscribe)
            return asyncio.run(stream_runner(options, _security(options)))
        runner = {"call": run_call, "status": run_status, "health": run_health,
                  "top": run_top}[options.command]
        return asyncio.run(runner(options))
    except GrainError as error:
        print(f"grainery: {type(error).__name__} ({error.code.name}): {error.message}",
              file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        converted = from_rpc_error(exc)
        print(f"grainery: {converted.code.name}: {converted.message}", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"grainery: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        hint = " (hint: grainery silo --help)" if options.command == "silo" else ""
        print(f"grainery: error: {' '.join(str(exc).split())}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
