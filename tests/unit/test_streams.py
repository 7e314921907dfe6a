"""Streams' pure logic (issue 12): bounds, tokens, the recent-events feed a stream's
subscriptions share, and how a failed delivery says how far it got."""

from __future__ import annotations

import pytest

from grainery.client.errors import GrainApplicationError, InvalidArgumentsError
from grainery.silo.streams.feed import RECENT, StreamFeed
from grainery.silo.streams.grain_api import StreamBatchInterrupted, interrupted_at
from grainery.silo.streams.names import (
    MAX_EVENT_BYTES,
    StreamId,
    StreamKeys,
    check_stream,
    check_token,
    encode_event,
    token_order,
)


def test_tokens_compare_as_integer_pairs_not_strings() -> None:
    assert token_order("10-0") > token_order("9-5")
    assert token_order("9-10") > token_order("9-9")
    assert check_token("") == "" and check_token("0") == "0"
    assert check_token("17-3") == "17-3"
    for bad in ("yesterday", "1-x", "-1-0", "1--1"):
        with pytest.raises(InvalidArgumentsError):
            check_token(bad)


def test_names_and_events_are_bounded() -> None:
    assert check_stream("orders", "a:b/c") == StreamId("orders", "a:b/c")
    for namespace, key in (("", "k"), ("n", ""), ("n" * 129, "k"), ("n", "k" * 513), (1, "k")):
        with pytest.raises(InvalidArgumentsError):
            check_stream(namespace, key)
    assert encode_event({"a": [1, None]}) == '{"a":[1,null]}'
    with pytest.raises(InvalidArgumentsError, match="too large"):
        encode_event("x" * MAX_EVENT_BYTES)
    with pytest.raises(InvalidArgumentsError, match="not JSON-serialisable"):
        encode_event(float("nan"))


def test_stream_names_are_unambiguous_and_keys_share_their_partition_tag() -> None:
    a, b = StreamId("a:b", "c"), StreamId("a", "b:c")
    assert a.name != b.name and StreamId.from_name(a.name) == a
    keys = StreamKeys("prod")
    partition = keys.partition(a)
    tag = f"{{prod:streams:{partition}}}"
    for key in (keys.events(a), keys.positions(a), keys.subscribers(a), keys.lease(partition),
                keys.index(partition), keys.bell(partition)):
        assert tag in key  # one Lua script may touch them all (one Redis Cluster slot)


class Reader:
    def __init__(self, position: str) -> None:
        self.position = position
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def test_the_feed_serves_what_follows_a_position_or_sends_the_reader_to_the_store() -> None:
    feed = StreamFeed(StreamId("n", "k"), "5-0")
    reader = Reader("5-0")
    feed.listen(reader)
    assert feed.after("5-0", 10) == []
    assert feed.after("4-0", 10) is None  # older than what the feed holds: read the store
    feed.feed([("6-0", "1"), ("6-1", "2"), ("7-0", "3")])
    assert feed.cursor == "7-0" and reader.woken == 1
    assert feed.after("5-0", 10) == [("6-0", "1"), ("6-1", "2"), ("7-0", "3")]
    assert feed.after("6-0", 1) == [("6-1", "2")]
    assert feed.after("7-0", 10) == []
    feed.feed([(f"{8 + n}-0", "x") for n in range(RECENT)])  # the first ones fall out
    assert len(feed) == RECENT
    assert feed.after("6-1", 10) is None
    assert feed.after("7-0", 1) == [("8-0", "x")]


def test_the_feed_keeps_only_what_a_reader_has_not_passed() -> None:
    feed = StreamFeed(StreamId("n", "k"), "1-0")
    feed.feed([("2-0", "a")])
    assert len(feed) == 0  # nobody reads this stream: nothing is kept
    slow, fast = Reader("2-0"), Reader("2-0")
    feed.listen(slow)
    feed.listen(fast)
    feed.feed([("3-0", "b"), ("4-0", "c")])
    fast.position = "4-0"
    feed.feed([("5-0", "d")])
    assert len(feed) == 3 and feed.after("2-0", 10) == [("3-0", "b"), ("4-0", "c"), ("5-0", "d")]
    slow.position = "4-0"
    feed.feed([("6-0", "e")])
    assert len(feed) == 2 and feed.after("4-0", 10) == [("5-0", "d"), ("6-0", "e")]
    assert feed.after("3-0", 10) is None


def test_a_failed_delivery_says_how_many_events_it_handled() -> None:
    interrupted = StreamBatchInterrupted(3, ValueError("bad sku"))
    error = GrainApplicationError(f"StreamBatchInterrupted: {interrupted}",
                                  "StreamBatchInterrupted")
    assert interrupted_at(error) == (3, "ValueError: bad sku")
    other = GrainApplicationError("RuntimeError: boom", "RuntimeError")
    assert interrupted_at(other) == (0, "GrainApplicationError: RuntimeError: boom")
