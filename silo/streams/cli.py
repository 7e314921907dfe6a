"""``grainery publish NS KEY JSON`` and ``grainery subscribe NS KEY [--from TOKEN]``.

``publish`` prints the event's token. ``subscribe`` prints one line per event,
``TOKEN JSON`` (the event re-encoded compactly on one line), flushed as it arrives, until
interrupted or ``--count`` events were printed; after a lost connection it resumes from the
last token printed. Both go through ``--target`` (the silo may forward nothing: any silo
serves any stream).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import grpc

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.channels import ChannelPool, ClientSecurity
from grainery.client.errors import from_rpc_error
from grainery.client.grain_client import GrainClient

Command = Callable[[str, str], argparse.ArgumentParser]


def add_commands(command: Command,
                 client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    publish = command("publish", "publish a JSON event to a stream; prints its token")
    client_options(publish)
    publish.add_argument("namespace")
    publish.add_argument("key")
    publish.add_argument("event_json", help="the event, one JSON value")

    subscribe = command("subscribe", "print a stream's events as they come: TOKEN JSON")
    client_options(subscribe)
    subscribe.add_argument("namespace")
    subscribe.add_argument("key")
    subscribe.add_argument("--from", dest="from_token", default=None, metavar="TOKEN",
                           help="start after this token (0: from the oldest retained event; "
                                "default: only events published from now on)")
    subscribe.add_argument("--count", type=int, default=0,
                           help="exit after this many events (0: run until interrupted)")


async def run_publish(options: argparse.Namespace, security: ClientSecurity) -> int:
    pool = ChannelPool(security, 4 * 1024 * 1024)
    request = pb.PublishRequest(namespace=options.namespace, key=options.key,
                                event_json=options.event_json)
    try:
        reply = await pb_grpc.StreamsStub(pool.get(options.target).channel).Publish(
            request, timeout=options.timeout, metadata=security.call_metadata()
        )
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None
    finally:
        await pool.close()
    print(reply.token)
    return 0


async def run_subscribe(options: argparse.Namespace, security: ClientSecurity) -> int:
    printed = 0
    async with GrainClient(options.target, security=security, refresh_interval=0,
                           gateway_only=True) as cluster:
        stream = cluster.get_stream(options.namespace, options.key)
        async for token, event in stream.subscribe(from_token=options.from_token or None):
            print(token, json.dumps(event, separators=(",", ":")), flush=True)
            printed += 1
            if options.count and printed >= options.count:
                break
    return 0
