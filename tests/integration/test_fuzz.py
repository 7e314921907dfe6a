"""Fuzz a live silo: generated InvokeRequests, raw protobuf bytes, and garbage on the TCP port.

Passes only if every request gets a gRPC status within its deadline, the silo keeps
serving, its memory stays bounded, and a control grain's state is unchanged.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.testing import SiloProcess, TestCluster, TestStore
from tests.integration.helpers import GRAINS, health_status, rss_kib, running_cluster

CALL_TIMEOUT = 5.0
# A longer hunt: GRAINERY_FUZZ_EXAMPLES=5000 pytest tests/integration/test_fuzz.py
EXAMPLES = int(os.environ.get("GRAINERY_FUZZ_EXAMPLES", "200"))
MAX_MESSAGE = 4 * 1024 * 1024  # the silo's default --max-message-bytes
RSS_GROWTH_LIMIT_KIB = 200 * 1024

# Every status a well-formed request may get. DEADLINE_EXCEEDED is not here: the
# generated calls never sleep, so running into the client's deadline means a hang;
# INTERNAL means an unexpected exception inside the silo.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.NOT_FOUND,  # unknown grain type
    grpc.StatusCode.UNIMPLEMENTED,  # unknown or non-callable method
    grpc.StatusCode.INVALID_ARGUMENT,  # bad JSON, wrong arity, key too long
    grpc.StatusCode.UNKNOWN,  # the grain raised
    grpc.StatusCode.FAILED_PRECONDITION,  # on_activate raised (Flaky)
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # message too large
}

# Callable methods per type, minus those whose generated arguments could legitimately
# take long or allocate without bound (Turns.sleep/track sleep; Boom.big builds a
# string of any size): those appear among the names below, which may only fail.
CALLABLE = {
    "Recorder": ["ping", "add", "get"],
    "Turns": ["report"],
    "Flaky": ["attempts_so_far"],
    "Boom": ["explode", "unserialisable", "echo", "kw_only"],
    "Guarded": ["ok"],
    "GuardedChild": ["ok", "child"],
    "Sleepy": ["add"],
    "Relay": ["forward_add", "where"],
}
KNOWN_TYPES = sorted(CALLABLE)
# Names that must never be reachable from the wire (or are excluded above).
FORBIDDEN = ["_private", "__aenter__", "sync_method", "data", "on_activate", "on_deactivate",
             "write_state", "read_state", "clear_state", "get_grain", "state", "key", "_ctx",
             "__init__", "__class__", "__dict__", "__getattribute__", "mro", "__subclasses__",
             "sleep", "track", "big"]

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
control_chars = st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=20)
keys = st.one_of(
    st.just(""), text, control_chars,
    st.text(alphabet=st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)),
            min_size=1, max_size=300),
    st.integers(1000, 20_000).map(lambda n: "k" * n),  # around and over the 1 KiB key limit
    st.sampled_from(["fail-once-a", "fail-always-b", "a/b", "*", "{x}"]),  # Flaky; Redis globs
)
unknown_types = st.one_of(text, control_chars, st.integers(200, 5000).map(lambda n: "T" * n))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


@st.composite
def args_json(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(
        ["valid"] * 6 + ["empty", "not_array", "malformed", "deep", "deep_open", "oversized",
                         "bytes"]))
    if kind == "valid":
        return json.dumps(draw(st.lists(json_values, max_size=3)))
    if kind == "empty":
        return draw(st.sampled_from(["", "[]", " [ ] ", "null"]))
    if kind == "not_array":
        return json.dumps(draw(json_values))
    if kind == "malformed":
        valid = json.dumps(draw(st.lists(json_values, min_size=1, max_size=3)))
        cut = draw(st.integers(0, len(valid)))
        junk = draw(st.sampled_from(["", ",", "}", "NaN", "\x00", "'", "[1,]", "\\u12"]))
        return valid[:cut] + junk
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        return "[" * depth + "]" * depth
    if kind == "deep_open":
        return draw(st.sampled_from(["[", "{"])) * draw(st.integers(1, 100_000))
    if kind == "oversized":
        return '["' + "x" * draw(st.integers(MAX_MESSAGE - 64, MAX_MESSAGE + 4096)) + '"]'
    return draw(st.binary(max_size=64)).decode("latin-1")


@pytest.fixture(scope="module")
def silo(store: TestStore) -> Iterator[SiloProcess]:
    with running_cluster(TestCluster(store, GRAINS, size=1)) as cluster:
        yield cluster.silos[0]


@pytest.fixture(scope="module")
def channel(silo: SiloProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(silo.address, options=options) as opened:
        yield opened


@pytest.fixture(scope="module")
def control(channel: grpc.Channel) -> Iterator[str]:
    """A grain with known state; fuzzing must leave it exactly as it was."""
    key = f"fuzz-control-{uuid.uuid4().hex}"
    gateway = pb_grpc.GatewayStub(channel)
    request = pb.InvokeRequest(grain_type="Recorder", grain_key=key, method="add", args_json="[42]")
    assert gateway.Invoke(request, timeout=CALL_TIMEOUT).result_json == "42"
    yield key
    request = pb.InvokeRequest(grain_type="Recorder", grain_key=key, method="get")
    assert gateway.Invoke(request, timeout=CALL_TIMEOUT).result_json == "42"


def _status(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        return code
    return grpc.StatusCode.OK


def _assert_serving(channel: grpc.Channel, silo: SiloProcess) -> None:
    assert silo.alive, f"silo died:\n{silo.log_tail()}"
    assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING


def test_fuzz_invoke(channel: grpc.Channel, silo: SiloProcess, control: str) -> None:
    assert silo.process is not None
    gateway = pb_grpc.GatewayStub(channel)
    directory = pb_grpc.DirectoryStub(channel)
    raw_invoke = channel.unary_unary(
        "/grainery.v1.Gateway/Invoke", request_serializer=None, response_deserializer=None)
    # Warm up (imports, first activations), then take the baseline.
    for grain_type in KNOWN_TYPES:
        _status(lambda t=grain_type: gateway.Invoke(
            pb.InvokeRequest(grain_type=t, grain_key="warm", method="ok"), timeout=CALL_TIMEOUT))
    rss_before = rss_kib(silo.process.pid)
    seen: dict[grpc.StatusCode, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(data=st.data(), key=keys, args=args_json(),
           hops=st.sampled_from([0, 0, 0, 1, 3, 2**32 - 1]))
    def one_request(data: st.DataObject, key: str, args: str, hops: int) -> None:
        if data.draw(st.integers(0, 9), "known type?") < 8:
            grain_type = data.draw(st.sampled_from(KNOWN_TYPES), "type")
            method = data.draw(st.one_of(
                st.sampled_from(CALLABLE[grain_type]), st.sampled_from(CALLABLE[grain_type]),
                st.sampled_from(FORBIDDEN), text), "method")
        else:
            grain_type = data.draw(unknown_types, "type")
            method = data.draw(st.one_of(st.sampled_from(FORBIDDEN), text), "method")
        request = pb.InvokeRequest(grain_type=grain_type, grain_key=key, method=method,
                                   args_json=args, hops=hops)
        started = time.monotonic()
        code = _status(lambda: gateway.Invoke(request, timeout=CALL_TIMEOUT))
        seen[code] = seen.get(code, 0) + 1
        assert code in DOCUMENTED, (code, time.monotonic() - started, request.grain_type[:80],
                                    request.method[:80], request.args_json[:200])
        locate = pb.LocateRequest(grain_type=grain_type, grain_key=key)
        code = _status(lambda: directory.Locate(locate, timeout=CALL_TIMEOUT))
        assert code in {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.INVALID_ARGUMENT}, (code, grain_type[:80], key[:80])

    one_request()

    # Bytes that are not an InvokeRequest at all (the silo must still answer with a status).
    rng = random.Random(1234)
    for size in (0, 1, 7, 64, 1024, 65536):
        for _ in range(5):
            payload = bytes(rng.getrandbits(8) for _ in range(size))
            code = _status(lambda p=payload: raw_invoke(p, timeout=CALL_TIMEOUT))
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, payload[:32]
    # Invalid UTF-8 in a string field (protobuf forbids it; Python clients cannot send it).
    invalid_utf8 = b"\x0a\x03\xff\xfe\xfd\x12\x01k\x1a\x02ok"
    assert _status(lambda: raw_invoke(invalid_utf8, timeout=CALL_TIMEOUT)) != (
        grpc.StatusCode.DEADLINE_EXCEEDED)

    _assert_serving(channel, silo)
    growth = rss_kib(silo.process.pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT_KIB, f"silo RSS grew by {growth} KiB; statuses {seen}"
    print("fuzz statuses:", {c.name: n for c, n in seen.items()}, "rss growth KiB", growth)
    assert seen.get(grpc.StatusCode.OK, 0) > 0, seen  # the generator does reach grain code


def _garbage(rng: random.Random) -> list[bytes]:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    return [
        b"",
        bytes(rng.getrandbits(8) for _ in range(4096)),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),  # a TLS ClientHello start
        preface,  # then silence
        preface + bytes(rng.getrandbits(8) for _ in range(1000)),
        # A SETTINGS frame header announcing a 16 MB payload that never comes.
        preface + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00",
        # HEADERS on stream 1 with a garbage HPACK block.
        preface + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x10\x01\x04\x00\x00\x00\x01" + bytes(rng.getrandbits(8) for _ in range(16)),
        b"\x00" * 65536,
    ]


def test_garbage_bytes_on_the_grpc_port(
    channel: grpc.Channel, silo: SiloProcess, control: str
) -> None:
    assert silo.process is not None
    host, port = silo.address.rsplit(":", 1)
    rng = random.Random(42)
    rss_before = rss_kib(silo.process.pid)
    lingering = []
    for round_ in range(5):
        for payload in _garbage(rng):
            sock = socket.create_connection((host, int(port)), timeout=2)
            try:
                sock.sendall(payload)
            except OSError:
                pass  # the silo may hang up mid-way: fine
            if round_ == 0:
                lingering.append(sock)  # keep a few half-open connections during the checks
                continue
            try:
                sock.recv(4096)
            except OSError:
                pass
            sock.close()
    try:
        # With garbage connections still open, real calls are served.
        gateway = pb_grpc.GatewayStub(channel)
        reply = gateway.Invoke(pb.InvokeRequest(grain_type="Recorder", grain_key=control,
                                                method="get"), timeout=CALL_TIMEOUT)
        assert reply.result_json == "42"
        _assert_serving(channel, silo)
    finally:
        for sock in lingering:
            sock.close()
    with grpc.insecure_channel(silo.address) as fresh:
        _assert_serving(fresh, silo)
    growth = rss_kib(silo.process.pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT_KIB, f"silo RSS grew by {growth} KiB"
