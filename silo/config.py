"""Silo configuration: one frozen dataclass, filled from flags and GRAINERY_* env vars.

Each flag has an environment variable (the table below is the single source of
truth: the CLI builds its parser from it and tests check the deploy files
against it). Precedence: flag, then env var, then default.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from grainery.silo.cluster.membership import MembershipTiming
from grainery.silo.storage.embedded import DEFAULT_STORE_PORT
from grainery.silo.tracing import TracingOptions


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str
    type: type = str
    default: Any = None
    repeat: bool = False


SILO_OPTIONS: tuple[Option, ...] = (
    Option("--grains", "GRAINERY_GRAINS", "module(s) whose Grain subclasses to host", repeat=True),
    Option("--host", "GRAINERY_HOST", "interface to bind", default="127.0.0.1"),
    Option("--port", "GRAINERY_PORT", "gRPC port (0 = any free port)", int, 7070),
    Option("--redis", "GRAINERY_REDIS_URL", "Redis URL; unset = start the embedded store"),
    Option("--join", "GRAINERY_JOIN", "use the embedded store running on this data directory "
           "(reads DATA_DIR/store.url) instead of --redis"),
    Option("--redis-ca", "GRAINERY_REDIS_CA", "PEM CA that verifies a rediss:// server "
           "(default: the system's CAs)"),
    Option("--cluster", "GRAINERY_CLUSTER", "cluster name (isolates clusters)", default="default"),
    Option("--silo-id", "GRAINERY_SILO_ID", "silo id (default <hostname>-<port>)"),
    Option("--advertise", "GRAINERY_ADVERTISE", "host:port other silos and clients use"),
    Option("--idle-timeout", "GRAINERY_IDLE_TIMEOUT", "seconds before an idle grain is "
           "deactivated", float, 900.0),
    Option("--metrics-port", "GRAINERY_METRICS_PORT", "serve Prometheus /metrics here", int),
    Option("--metrics-host", "GRAINERY_METRICS_HOST", "interface for /metrics",
           default="127.0.0.1"),
    Option("--dashboard-port", "GRAINERY_DASHBOARD_PORT", "serve the web dashboard here "
           "(0 = any free port)", int),
    Option("--dashboard-host", "GRAINERY_DASHBOARD_HOST", "interface for the dashboard",
           default="127.0.0.1"),
    Option("--data-dir", "GRAINERY_DATA_DIR", "embedded store data directory",
           default=".grainery-data"),
    Option("--store-port", "GRAINERY_STORE_PORT", "embedded store port on 127.0.0.1 "
           "(0 = any free port)", int, DEFAULT_STORE_PORT),
    Option("--heartbeat-interval", "GRAINERY_HEARTBEAT_INTERVAL", "membership heartbeat "
           "seconds", float, 1.0),
    Option("--lease-duration", "GRAINERY_LEASE_DURATION", "membership lease seconds", float, 4.0),
    Option("--drain-timeout", "GRAINERY_DRAIN_TIMEOUT", "seconds to finish calls on SIGTERM",
           float, 20.0),
    Option("--max-in-flight", "GRAINERY_MAX_IN_FLIGHT", "calls in flight per silo", int, 10_000),
    Option("--max-queue-per-grain", "GRAINERY_MAX_QUEUE_PER_GRAIN", "queued calls per grain",
           int, 1_000),
    Option("--max-message-bytes", "GRAINERY_MAX_MESSAGE_BYTES", "largest request/response",
           int, 4 * 1024 * 1024),
    Option("--max-nesting", "GRAINERY_MAX_NESTING", "deepest JSON nesting in arguments", int, 64),
    Option("--tls-cert", "GRAINERY_TLS_CERT", "PEM server certificate (enables TLS)"),
    Option("--tls-key", "GRAINERY_TLS_KEY", "PEM server private key"),
    Option("--tls-client-ca", "GRAINERY_TLS_CLIENT_CA", "PEM CA: require client certificates"),
    Option("--tls-ca", "GRAINERY_TLS_CA", "PEM CA to verify other silos (silo-to-silo)"),
    Option("--token", "GRAINERY_TOKEN", "require this bearer token on every call"),
    Option("--filter", "GRAINERY_FILTERS", "call filter MODULE:NAME (an async def) run around "
           "every call that runs on this silo", repeat=True),
    Option("--stream-maxlen", "GRAINERY_STREAM_MAXLEN", "events kept per stream "
           "(approximate: at least this many)", int, 100_000),
    Option("--stream-max-age", "GRAINERY_STREAM_MAX_AGE", "seconds an event is kept "
           "(0 = no age limit)", float, 0.0),
    Option("--stream-attempts", "GRAINERY_STREAM_ATTEMPTS", "on_stream_event failures "
           "before an event is dead-lettered for that subscriber", int, 5),
    Option("--reflection", "GRAINERY_REFLECTION", "serve gRPC reflection (on/off)", default="on"),
    Option("--log-format", "GRAINERY_LOG_FORMAT", "human or json", default="human"),
    Option("--log-level", "GRAINERY_LOG_LEVEL", "log level", default="INFO"),
    # Tracing (silo/tracing.py): off unless an endpoint is given.
    Option("--otlp-endpoint", "GRAINERY_OTLP_ENDPOINT", "export OpenTelemetry traces over "
           "OTLP/gRPC to HOST:PORT (https://HOST:PORT: TLS); unset = tracing off"),
    Option("--trace-sampling", "GRAINERY_TRACE_SAMPLING", "share of new traces recorded "
           "(0-1; a call with a traceparent follows its caller)", float, 1.0),
    Option("--trace-grain-keys", "GRAINERY_TRACE_GRAIN_KEYS", "record grain keys on spans "
           "(on/off; keys can be user data)", default="off"),
    Option("--trace-arguments", "GRAINERY_TRACE_ARGUMENTS", "record call argument values on "
           "spans (on/off; user data)", default="off"),
)
ENV_VARS: frozenset[str] = frozenset(o.env for o in SILO_OPTIONS)


@dataclass(frozen=True)
class SiloConfig:
    grains: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 7070
    redis: str | None = None
    join: str | None = None
    redis_ca: str | None = None
    cluster: str = "default"
    silo_id: str | None = None
    advertise: str | None = None
    idle_timeout: float = 900.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    dashboard_port: int | None = None
    dashboard_host: str = "127.0.0.1"
    data_dir: str = ".grainery-data"
    store_port: int = DEFAULT_STORE_PORT
    heartbeat_interval: float = 1.0
    lease_duration: float = 4.0
    drain_timeout: float = 20.0
    max_in_flight: int = 10_000
    max_queue_per_grain: int = 1_000
    max_message_bytes: int = 4 * 1024 * 1024
    max_nesting: int = 64
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_ca: str | None = None
    token: str | None = None
    filter: tuple[str, ...] = ()
    stream_maxlen: int = 100_000
    stream_max_age: float = 0.0
    stream_attempts: int = 5
    reflection: str = "on"
    log_format: str = "human"
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    trace_sampling: float = 1.0
    trace_grain_keys: str = "off"
    trace_arguments: str = "off"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.grains:
            raise ValueError("no grain modules: pass --grains MODULE (or GRAINERY_GRAINS)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert/--tls-key")
        if self.redis and self.join:
            raise ValueError("--redis and --join both name the store: pass one of them")
        if not 0 <= self.store_port <= 65535:
            raise ValueError("--store-port is a port number (0 = any free port)")
        if self.dashboard_port is not None and not 0 <= self.dashboard_port <= 65535:
            raise ValueError("--dashboard-port is a port number (0 = any free port)")
        if self.idle_timeout <= 0:
            raise ValueError("--idle-timeout must be positive")
        if self.log_format not in ("human", "json"):
            raise ValueError("--log-format is human or json")
        self.timing()  # validates heartbeat vs lease
        self.tracing()  # validates the tracing options

    def tracing(self) -> TracingOptions:
        return TracingOptions(
            self.otlp_endpoint or None, self.trace_sampling,
            switch("--trace-grain-keys", self.trace_grain_keys),
            switch("--trace-arguments", self.trace_arguments),
        )

    def timing(self) -> MembershipTiming:
        return MembershipTiming(self.heartbeat_interval, self.lease_duration)

    def resolved_silo_id(self, bound_port: int) -> str:
        return self.silo_id or f"{socket.gethostname()}-{bound_port}"

    def resolved_advertise(self, bound_port: int) -> str:
        if self.advertise:
            return self.advertise
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            try:
                host = socket.gethostbyname(socket.gethostname())
            except OSError:
                host = "127.0.0.1"
        return f"{host}:{bound_port}"


def switch(flag: str, value: str) -> bool:
    """An on/off option's value; anything else is a clear error."""
    lowered = value.strip().lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{flag} is on or off, not {value!r}")


def env_defaults(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Values from GRAINERY_* variables, converted to each option's type."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in SILO_OPTIONS:
        raw = env.get(option.env)
        if raw is None or raw == "":
            continue
        name = option.flag.lstrip("-").replace("-", "_")
        if option.repeat:
            values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
        else:
            try:
                values[name] = option.type(raw)
            except ValueError:
                raise ValueError(
                    f"{option.env}={raw!r} is not a valid {option.type.__name__}"
                ) from None
    return values
