"""Grain failures reach the silo's log with their traceback, at a bounded rate."""

from __future__ import annotations

import logging

import pytest

from grainery.silo.failures import WINDOW_SECONDS, FailureLog


def _raise(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001 - the test wants the traceback attached
        return caught


def test_failures_are_logged_with_traceback_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    failures = FailureLog(logging.getLogger("test.failures"), per_minute=2,
                          clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="test.failures"):
        logged = [failures.report("Counter", _raise(ValueError(f"bad {i}")), f"call {i}")
                  for i in range(5)]
        # Another exception type or grain type has its own budget.
        assert failures.report("Counter", _raise(KeyError("k")), "key error")
        assert failures.report("Other", _raise(ValueError("v")), "other grain")
        now[0] += WINDOW_SECONDS
        assert failures.report("Counter", _raise(ValueError("later")), "later")
    assert logged == [True, True, False, False, False]
    records = caplog.records
    assert [r.getMessage() for r in records] == [
        "call 0", "call 1", "key error", "other grain",
        "later (3 more like it were not logged in the last minute)",
    ]
    text = caplog.text
    assert "Traceback (most recent call last)" in text
    assert "in _raise" in text and "ValueError: bad 0" in text
