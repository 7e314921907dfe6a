"""The durable API on Grain, without a run: what it refuses, and that it took no method
name away from existing grains."""

from __future__ import annotations

import pytest

from grainery import Grain, RetryPolicy, durable
from grainery.silo.registry import callable_methods


class Sleeper(Grain):
    """A grain written before durable agents: its own ``sleep`` and ``step`` methods."""

    async def sleep(self, seconds: float) -> float:
        return seconds

    async def step(self) -> str:
        return "mine"


class Planner(Grain):
    @durable
    async def plan(self) -> int:
        return 1

    async def plain(self) -> None:
        await self.step("x", _noop)


async def _noop() -> None:
    return None


def test_a_grains_own_sleep_and_step_stay_callable() -> None:
    assert {"sleep", "step"} <= set(callable_methods(Sleeper))
    # The API itself is never a callable method of a grain that does not define it.
    assert not {"sleep", "step", "wait_signal", "journal"} & set(callable_methods(Planner))
    assert "plan" in callable_methods(Planner)


async def test_the_api_outside_a_run_is_a_clear_error() -> None:
    grain = Planner()
    with pytest.raises(RuntimeError, match=r"self\.step\(\) works only inside a @durable"):
        await grain.plain()
    with pytest.raises(RuntimeError, match="wait_signal"):
        await grain.wait_signal("go")
    with pytest.raises(RuntimeError, match="step_key"):
        _ = grain.step_key
    with pytest.raises(ValueError, match="seconds"):
        await grain.sleep(-1)


def test_durable_needs_an_async_method() -> None:
    with pytest.raises(TypeError, match="async def"):
        durable(lambda self: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    {"max_attempts": 0}, {"max_attempts": 1.5}, {"initial": -1}, {"backoff": 0.5},
    {"max_interval": float("inf")}, {"timeout": 0},
])
def test_a_retry_policy_refuses_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_a_retry_policy_backs_off_up_to_its_bound() -> None:
    policy = RetryPolicy(max_attempts=6, initial=0.1, backoff=3.0, max_interval=1.0)
    assert [round(policy.delay(n), 3) for n in range(1, 5)] == [0.1, 0.3, 0.9, 1.0]
