"""Assemble the silo's gRPC server: servicers, health, reflection, auth, TLS, bounds."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grainery.client._proto.grainery.v1 import grainery_pb2 as pb
from grainery.client._proto.grainery.v1 import grainery_pb2_grpc as pb_grpc
from grainery.silo.config import SiloConfig
from grainery.silo.rpc.auth import TokenAuthInterceptor
from grainery.silo.rpc.servicers import DirectoryServicer, GatewayServicer, ManagementServicer

MAX_METADATA_BYTES = 128 * 1024

GRAINERY_SERVICES = tuple(
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("Gateway", "Directory", "Management", "Streams")
)


def _server_credentials(config: SiloConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert or not config.tls_key:
        return None
    pair = (Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def create_server(config: SiloConfig) -> tuple[grpc.aio.Server, int]:
    """Create the server and bind its port first: the port decides the silo's id and address."""
    interceptors = [TokenAuthInterceptor(config.token)] if config.token else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            # A second process must not bind the same port: a silo's address identifies it.
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", 1000),
            # A unary call's request context (<= 8 KiB) and call chain (<= 32 "Type/key"
            # entries) ride in its metadata: room for both past gRPC's 8/16 KiB default.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    address = f"{config.host}:{config.port}"
    credentials = _server_credentials(config)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind gRPC port {address}")
    return server, port


def add_services(
    server: grpc.aio.Server,
    config: SiloConfig,
    gateway: GatewayServicer,
    directory: DirectoryServicer,
    management: ManagementServicer,
    health_servicer: health.aio.HealthServicer,
    streams: pb_grpc.StreamsServicer | None = None,
) -> None:
    pb_grpc.add_GatewayServicer_to_server(gateway, server)
    pb_grpc.add_DirectoryServicer_to_server(directory, server)
    pb_grpc.add_ManagementServicer_to_server(management, server)
    if streams is not None:
        pb_grpc.add_StreamsServicer_to_server(streams, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection.lower() not in ("off", "false", "0", "no"):
        names = (*GRAINERY_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
