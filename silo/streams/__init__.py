"""Streams (issue 12): durable, ordered events between grains and to any client.

Modules, one job each: ``names`` (what a stream, a token and an event may be; key names),
``store`` (the Redis Streams commands and scripts), ``subscriptions`` (who subscribes to a
stream), ``delivery`` (one subscription's in-order, at-least-once delivery), ``pump`` (the
partitions this silo delivers for, their leases, one XREAD for all their streams),
``retention`` (trimming by age), ``service`` (the silo's stream service), ``servicer`` (the
``grainery.v1.Streams`` gRPC service), ``grain_api`` (``Grain.get_stream`` and friends),
``cli`` (``grainery publish`` / ``grainery subscribe``).
"""
