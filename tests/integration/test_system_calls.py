"""Runtime hooks cannot be reached from outside the cluster, even by a caller that holds
the token: a raw gRPC ``system`` request without the cluster's system key, or with a wrong
one, is PERMISSION_DENIED and runs nothing; calling the hook by name is ``unknown_method``.
The silo keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.client.channels import SYSTEM_KEY_HEADER
from grainery.silo.testing import TestCluster, TestStore
from tests.integration.helpers import running_cluster


@pytest.fixture(scope="module")
def silo(store: TestStore) -> Iterator[TestCluster]:
    with running_cluster(TestCluster(store, ["tests.grains.hook_probes"], size=1)) as cluster:
        yield cluster


def kind_of(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("grainery-error", "")  # type: ignore[attr-defined]


@pytest.mark.parametrize("metadata", [(), ((SYSTEM_KEY_HEADER, "guessed"),)])
def test_a_system_call_from_outside_the_cluster_is_refused(
    silo: TestCluster, metadata: tuple[tuple[str, str], ...]
) -> None:
    with grpc.insecure_channel(silo.addresses[0]) as channel:
        gateway = pb_grpc.GatewayStub(channel)
        request = pb.InvokeRequest(
            grain_type="HookProbe", grain_key="outsider", method="receive_reminder",
            args_json=json.dumps(["forged", {}]), system=True,
        )
        with pytest.raises(grpc.RpcError) as refused:
            gateway.Invoke(request, timeout=10, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert kind_of(refused.value) == "permission_denied"
        # By name, as a method: not callable at all.
        request.system = False
        with pytest.raises(grpc.RpcError) as unknown:
            gateway.Invoke(request, timeout=10)
        assert kind_of(unknown.value) == "unknown_method"
        # Nothing ran, and the silo serves on.
        hooked = gateway.Invoke(pb.InvokeRequest(
            grain_type="HookProbe", grain_key="outsider", method="hooked"
        ), timeout=10)
        assert json.loads(hooked.result_json) == 0
