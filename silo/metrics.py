"""Prometheus metrics of one silo (names prefixed ``grainery_``; no grain key as a label).

Each silo owns a private registry, so several silos can live in one process
(tests) without clashing, and ``--metrics-port`` serves exactly this silo's.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class SiloMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.activations = Gauge(
            "grainery_activations", "Active grains on this silo", ["grain_type"], registry=r
        )
        self.activations_created = Counter(
            "grainery_activations_created", "Activations created", ["grain_type"], registry=r
        )
        self.deactivations = Counter(
            "grainery_deactivations", "Deactivations by reason", ["grain_type", "reason"],
            registry=r,
        )
        self.activation_failures = Counter(
            "grainery_activation_failures", "Activations that failed", ["grain_type"], registry=r
        )
        self.calls = Counter(
            "grainery_calls", "Grain calls run or rejected here, by outcome",
            ["grain_type", "method", "outcome"], registry=r,
        )
        self.call_duration = Histogram(
            "grainery_call_duration_seconds", "Time to run a grain call on this silo",
            ["grain_type", "method"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.one_way_failures = Counter(
            "grainery_one_way_failures", "One-way calls that failed after they were answered "
            "(raised, or were never run)", ["grain_type", "method"], registry=r,
        )
        self.timer_ticks = Counter(
            "grainery_timer_ticks", "Grain timer ticks by outcome: ok, failed (raised) or "
            "skipped (the previous tick had not finished, or it could not run)",
            ["grain_type", "outcome"], registry=r,
        )
        # Durable agents (silo/durable/).
        self.durable_steps = Counter(
            "grainery_durable_steps", "Durable steps by outcome: ok or failed (recorded), "
            "replayed (returned from the journal without running)",
            ["grain_type", "outcome"], registry=r,
        )
        self.durable_step_retries = Counter(
            "grainery_durable_step_retries", "Retried attempts of durable steps",
            ["grain_type"], registry=r,
        )
        self.durable_runs = Counter(
            "grainery_durable_runs", "Durable runs by event: started, resumed, completed, "
            "failed, cancelled, parked", ["grain_type", "event"], registry=r,
        )
        self.gateway_calls = Counter(
            "grainery_gateway_calls", "Calls received, by route: local (ran here) or forwarded",
            ["route"], registry=r,
        )
        self.storage_ops = Counter(
            "grainery_storage_operations", "State store operations", ["operation", "outcome"],
            registry=r,
        )
        self.storage_duration = Histogram(
            "grainery_storage_duration_seconds", "State store latency", ["operation"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.directory_ops = Counter(
            "grainery_directory_operations", "Grain directory operations",
            ["operation", "outcome"], registry=r,
        )
        self.members = Gauge(
            "grainery_cluster_members", "Cluster members by state", ["state"], registry=r
        )
        self.membership_changes = Counter(
            "grainery_membership_changes", "Membership views adopted", registry=r
        )
        self.membership_version = Gauge(
            "grainery_membership_version", "Membership version seen", registry=r
        )
        self.in_flight = Gauge(
            "grainery_calls_in_flight", "Calls admitted and not yet answered", registry=r
        )
        # ----- reminders (silo/reminders/) -----
        self.reminders_registered = Counter(
            "grainery_reminders_registered", "Reminders registered (created or replaced) "
            "through this silo, by kind (user, runtime)", ["kind"], registry=r,
        )
        self.reminders_unregistered = Counter(
            "grainery_reminders_unregistered", "Reminders removed through this silo", registry=r,
        )
        self.reminder_ticks = Counter(
            "grainery_reminder_ticks", "Reminder ticks this silo delivered, by outcome: ok, "
            "failed (the hook raised), retried (did not run: tried again later), "
            "undeliverable (no such grain type, hook or handler), disabled (stopped after "
            "repeated undeliverable ticks)", ["grain_type", "outcome"], registry=r,
        )
        self.reminder_lateness = Histogram(
            "grainery_reminder_lateness_seconds", "How late a reminder tick was sent, after "
            "its scheduled time", ["grain_type"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.reminder_partitions = Gauge(
            "grainery_reminder_partitions", "Reminder partitions this silo owns", registry=r,
        )
        self.tasks = Gauge(
            "grainery_tasks", "asyncio tasks alive in the silo's event loop", registry=r
        )
        # ----- streams (silo/streams/) -----
        self.stream_published = Counter(
            "grainery_stream_events_published", "Stream events published through this silo",
            ["namespace"], registry=r,
        )
        self.stream_delivered = Counter(
            "grainery_stream_events_delivered", "Stream events whose subscriber's "
            "on_stream_event returned (delivered by this silo's pump)", ["namespace"],
            registry=r,
        )
        self.stream_redelivered = Counter(
            "grainery_stream_events_redelivered", "Stream deliveries attempted again after a "
            "failed attempt", ["namespace"], registry=r,
        )
        self.stream_dead_lettered = Counter(
            "grainery_stream_events_dead_lettered", "Stream events skipped for a subscriber "
            "after its hook failed every attempt (recorded in the dead letters)",
            ["namespace"], registry=r,
        )
        self.stream_delivery_lag = Histogram(
            "grainery_stream_delivery_lag_seconds", "From publish (the store's clock) to the "
            "subscriber's hook returning", ["namespace"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stream_client_subscriptions = Gauge(
            "grainery_stream_client_subscriptions", "Streams/Subscribe calls open on this silo",
            registry=r,
        )
        self.stream_partitions = Gauge(
            "grainery_stream_partitions", "Stream partitions this silo pumps (leases held)",
            registry=r,
        )

    def count_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report ``loop``'s live asyncio tasks as ``grainery_tasks``: under steady load the
        number is flat, so a task leak (one per call, per stream, per peer) shows as a slope."""
        self.tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def storage_op(self, operation: str, outcome: str, started: float) -> None:
        self.storage_ops.labels(operation, outcome).inc()
        self.storage_duration.labels(operation).observe(time.perf_counter() - started)

    def directory_op(self, operation: str, outcome: str) -> None:
        self.directory_ops.labels(operation, outcome).inc()

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on a daemon thread (prometheus-client's own HTTP server)."""
        start_http_server(port, addr=host, registry=self.registry)
