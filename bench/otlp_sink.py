"""A minimal OTLP/gRPC trace sink for the tracing benchmark: accepts
``opentelemetry.proto.collector.trace.v1.TraceService/Export`` and discards the spans
without decoding them (so it costs the machine as little as a remote collector would).
On SIGTERM it writes ``requests bytes`` to the file given, so the benchmark can tell the
silos really exported.

    python -m bench.otlp_sink PORT COUNTS_FILE
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def main() -> int:
    port, counts_path = int(sys.argv[1]), sys.argv[2]
    lock = threading.Lock()
    counts = [0, 0]  # requests, bytes

    def export(request: bytes, context: Any) -> bytes:
        with lock:
            counts[0] += 1
            counts[1] += len(request)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(export),  # raw bytes in and out
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("listening", flush=True)
    done.wait()
    server.stop(grace=None)
    with open(counts_path, "w") as out, lock:
        out.write(f"{counts[0]} {counts[1]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
