"""Call filters over the in-process runtime (tests/inprocess.py): silo-wide filters around
the calls that run on a silo (client and grain-to-grain alike, never on a silo that only
forwards), a grain's own on_incoming_call, and the error rules (a filter's PermissionError
is permission_denied, its other exceptions are kind ``filter``, the grain's own failures
pass through unchanged) — and a silo keeps serving after a filter failed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from grainery.client.errors import (
    FilterError,
    GrainApplicationError,
    OverloadedError,
    PermissionDeniedError,
    StaleStateError,
)
from grainery.client.filters import Call, Proceed, named
from grainery.client.routing import GrainId
from grainery.silo.call import current_call
from grainery.silo.filters import SiloFilters, load_filters
from grainery.silo.grain import Grain
from grainery.silo.registry import GrainRegistry
from grainery.silo.startup_error import StartupError
from tests.eventually import until
from tests.inprocess import InProcessCluster, InProcessSilo

SEEN: list[tuple[str, str]] = []  # (filter tag, "Type/key.method"), in call order


class Agent(Grain):
    async def where(self) -> str:
        return self.silo_id

    async def ask(self, key: str) -> str:
        where: str = await self.get_grain("Agent", key).where()
        return where

    async def tenant(self) -> str | None:
        call = current_call()
        assert call is not None
        return call.context.get("tenant")

    async def drop(self) -> str:
        return "dropped"

    async def fail(self) -> None:
        raise ValueError("grain says no")

    async def stale(self) -> None:
        raise StaleStateError("stale on purpose")


class Wrapped(Grain):
    async def on_incoming_call(self, call: Call, proceed: Proceed) -> Any:
        if call.method == "guarded" and call.context.get("role") != "admin":
            raise PermissionError("admins only")
        if call.method == "broken":
            raise KeyError("hook bug")
        result = await proceed()
        return {"wrapped": result, "method": call.method, "args": list(call.args)}

    async def echo(self, value: int) -> int:
        return value

    async def guarded(self) -> str:
        return "secret"

    async def broken(self) -> str:
        return "never"

    async def fail(self) -> None:
        raise ValueError("method says no")


def tag(name: str) -> Any:
    """A timing-style filter that records every call it sees, tagged with ``name``."""

    async def record(call: Call, proceed: Proceed) -> Any:
        SEEN.append((name, call.target))
        return await proceed()

    return record


async def check_token(call: Call, proceed: Proceed) -> Any:
    """Refuses ``drop`` unless the key is an admin's; lets everything else through."""
    if call.method == "drop" and not call.key.startswith("admin"):
        raise PermissionError(f"{call.key} may not drop")
    return await proceed()


async def explode(call: Call, proceed: Proceed) -> Any:
    if call.method == "where" and call.key == "boom":
        raise ZeroDivisionError("filter bug")
    return await proceed()


async def set_tenant(call: Call, proceed: Proceed) -> Any:
    call.context["tenant"] = "acme"
    return await proceed()


@pytest.fixture
async def cluster() -> AsyncIterator[InProcessCluster]:
    SEEN.clear()
    registry = GrainRegistry()
    registry.register(Agent)
    registry.register(Wrapped)
    built = InProcessCluster(registry)
    yield built
    built.close()


def with_filters(silo: InProcessSilo, *filters: Any) -> None:
    silo.dispatcher.filters = SiloFilters(named(filters))


async def test_token_filter_refuses_with_permission_denied_and_lets_good_calls_through(
    cluster: InProcessCluster,
) -> None:
    silo = cluster.add("s1")
    with_filters(silo, check_token)
    with pytest.raises(PermissionDeniedError) as refused:
        await silo.call("Agent", "bob", "drop")
    assert refused.value.kind == "permission_denied"
    assert "bob may not drop" in refused.value.message
    assert "check_token" in refused.value.message
    assert await silo.call("Agent", "admin-1", "drop") == "dropped"
    assert await silo.call("Agent", "bob", "where") == silo.silo_id
    counted = silo.metrics.calls.labels("Agent", "drop", "permission_denied")
    assert counted._value.get() == 1


async def test_filters_see_every_call_once_including_grain_to_grain_across_silos(
    cluster: InProcessCluster,
) -> None:
    one, two = cluster.add("s1"), cluster.add("s2")
    with_filters(one, tag("s1"))
    with_filters(two, tag("s2"))
    caller = cluster.key_owned_by(one, "Agent", "a")
    callee = cluster.key_owned_by(two, "Agent", "b")
    assert await one.call("Agent", caller, "ask", callee) == "s2"
    # A call sent to s1 for a grain s2 owns is forwarded by s1 and filtered only by s2.
    assert await one.call("Agent", callee, "where") == "s2"
    # A grain-to-grain call to a grain on the same silo (no network) is filtered too.
    neighbour = cluster.key_owned_by(one, "Agent", "n")
    assert await one.call("Agent", caller, "ask", neighbour) == "s1"
    assert SEEN == [
        ("s1", f"Agent/{caller}.ask"),
        ("s2", f"Agent/{callee}.where"),
        ("s2", f"Agent/{callee}.where"),
        ("s1", f"Agent/{caller}.ask"),
        ("s1", f"Agent/{neighbour}.where"),
    ]


async def test_a_raising_filter_is_the_callers_error_and_the_silo_keeps_serving(
    cluster: InProcessCluster,
) -> None:
    silo = cluster.add("s1")
    with_filters(silo, explode)
    with pytest.raises(FilterError) as failed:
        await silo.call("Agent", "boom", "where")
    assert failed.value.kind == "filter"
    assert failed.value.error_type == "ZeroDivisionError"
    assert "test_filters_in_process:explode raised ZeroDivisionError: filter bug" in (
        failed.value.message
    )
    assert await silo.call("Agent", "boom", "tenant") is None  # the silo lives on
    assert silo.dispatcher.in_flight == 0


async def test_the_grains_own_failure_passes_through_a_filter_unchanged(
    cluster: InProcessCluster,
) -> None:
    silo = cluster.add("s1")
    with_filters(silo, tag("t"), check_token)
    with pytest.raises(GrainApplicationError) as failed:
        await silo.call("Agent", "x", "fail")
    assert type(failed.value) is GrainApplicationError
    assert failed.value.error_type == "ValueError"
    with pytest.raises(StaleStateError):
        await silo.call("Agent", "x", "stale")


async def test_a_context_value_a_filter_sets_reaches_the_grain(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    assert await silo.call("Agent", "t", "tenant") is None
    with_filters(silo, set_tenant)
    assert await silo.call("Agent", "t", "tenant") == "acme"


async def test_a_filter_may_replace_the_result_or_skip_the_grain(
    cluster: InProcessCluster,
) -> None:
    silo = cluster.add("s1")

    async def cached(call: Call, proceed: Proceed) -> Any:
        if call.method == "where":
            return "from-cache"
        return {"inner": await proceed()}

    with_filters(silo, cached)
    assert await silo.call("Agent", "c", "where") == "from-cache"
    assert await silo.call("Agent", "c", "drop") == {"inner": "dropped"}


async def test_filter_mistakes_are_named_errors(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")

    async def twice(call: Call, proceed: Proceed) -> Any:
        await proceed()
        return await proceed()

    async def unawaited(call: Call, proceed: Proceed) -> Any:
        return proceed()

    async def bad_context(call: Call, proceed: Proceed) -> Any:
        call.context["n"] = 5  # type: ignore[assignment]
        return await proceed()

    for bad, words in ((twice, "called twice"), (unawaited, "returned a coroutine"),
                       (bad_context, "context names and values are strings")):
        with_filters(silo, bad)
        with pytest.raises(FilterError) as failed:
            await silo.call("Agent", "m", "where")
        assert words in failed.value.message
        assert bad.__name__ in failed.value.message
    with_filters(silo)
    assert await silo.call("Agent", "m", "where") == "s1"


async def test_arguments_are_read_only_in_a_filter(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")

    async def meddle(call: Call, proceed: Proceed) -> Any:
        assert call.args == (7,)
        call.args[0] = 8  # type: ignore[index]
        return await proceed()

    with_filters(silo, meddle)
    with pytest.raises(FilterError) as failed:
        await silo.call("Wrapped", "w", "echo", 7)
    assert failed.value.error_type == "TypeError"


async def test_on_incoming_call_wraps_the_result_inside_the_silo_filters(
    cluster: InProcessCluster,
) -> None:
    silo = cluster.add("s1")
    with_filters(silo, tag("silo"))
    assert await silo.call("Wrapped", "w", "echo", 3) == {
        "wrapped": 3, "method": "echo", "args": [3],
    }
    assert SEEN == [("silo", "Wrapped/w.echo")]


async def test_on_incoming_call_refusals_and_failures(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    with pytest.raises(PermissionDeniedError) as refused:
        await silo.call("Wrapped", "w", "guarded")
    assert "Wrapped.on_incoming_call" in refused.value.message
    assert "admins only" in refused.value.message

    async def admin(call: Call, proceed: Proceed) -> Any:
        call.context["role"] = "admin"
        return await proceed()

    with_filters(silo, admin)
    assert (await silo.call("Wrapped", "w", "guarded"))["wrapped"] == "secret"
    with pytest.raises(FilterError) as broken:
        await silo.call("Wrapped", "w", "broken")
    assert "Wrapped.on_incoming_call raised KeyError" in broken.value.message
    with pytest.raises(GrainApplicationError) as failed:  # the method's own failure
        await silo.call("Wrapped", "w", "fail")
    assert type(failed.value) is GrainApplicationError
    assert failed.value.error_type == "ValueError"


async def test_on_incoming_call_is_not_callable_from_the_wire(cluster: InProcessCluster) -> None:
    silo = cluster.add("s1")
    with pytest.raises(Exception) as refused:
        await silo.call("Wrapped", "w", "on_incoming_call", None, None)
    assert getattr(refused.value, "kind", "") == "unknown_method"


def test_bad_filter_specs_are_one_line_startup_errors() -> None:
    cases = {
        "nocolon": "takes MODULE:NAME",
        "tests.no_such_module_k:f": "no module named 'tests.no_such_module_k'",
        "tests.unit.test_filters_in_process:missing": "has no attribute 'missing'",
        "tests.unit.test_filters_in_process:SEEN": "is not an async callable",
    }
    for spec, words in cases.items():
        with pytest.raises(StartupError) as refused:
            load_filters([spec])
        assert words in refused.value.one_line(), (spec, refused.value.one_line())
        assert "hint: " in refused.value.one_line()
    loaded = load_filters(["tests.unit.test_filters_in_process:check_token"], [explode])
    assert [f.name for f in loaded] == [
        "tests.unit.test_filters_in_process:explode",
        "tests.unit.test_filters_in_process:check_token",
    ]


async def test_a_grain_deactivating_while_a_filter_waits_reroutes_the_call(
    cluster: InProcessCluster,
) -> None:
    """The grain starts deactivating while a filter awaits before proceed(): the call is
    routed again to the next activation (the filters run again there), and a filter's
    ``except Exception`` cannot turn the reroute into a result."""
    silo = cluster.add("s1")
    first = await silo.call("Agent", "r", "where")
    assert first == "s1"
    gate = asyncio.Event()
    entered: list[str] = []

    async def slow_and_greedy(call: Call, proceed: Proceed) -> Any:
        entered.append(call.target)
        await gate.wait()
        try:
            return await proceed()
        except Exception:  # noqa: BLE001 - the point: a filter that swallows everything
            return "swallowed"

    with_filters(silo, slow_and_greedy)
    pending = asyncio.create_task(silo.call("Agent", "r", "where"))
    await until(lambda: len(entered) == 1, "the filter waits at its gate")
    old = silo.catalog.get(GrainId("Agent", "r"))
    assert old is not None
    old.deactivate("test")
    gate.set()
    assert await pending == "s1"
    assert entered == ["Agent/r.where", "Agent/r.where"]
    assert silo.catalog.get(GrainId("Agent", "r")) is not old



async def test_a_grain_error_a_filter_raises_reaches_the_caller_as_it_is(
    cluster: InProcessCluster,
) -> None:
    silo = cluster.add("s1")

    async def busy(call: Call, proceed: Proceed) -> Any:
        raise OverloadedError("the filter says: come back later")

    with_filters(silo, busy)
    with pytest.raises(OverloadedError) as refused:
        await silo.call("Agent", "o", "where")
    assert refused.value.retry_safe and refused.value.kind == "overloaded"
    assert refused.value.message == "the filter says: come back later"


class Admin(Grain):
    async def admin_reset(self) -> str:
        return "reset"


def readme_filters() -> dict[str, Any]:
    """The ```python block of README "Call filters", executed as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Call filters", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    module: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), module)  # noqa: S102 - our own README
    return module


async def test_the_readme_filters_work_as_written() -> None:
    module = readme_filters()

    async def as_admin(call: Call, proceed: Proceed) -> Any:
        if call.key == "root":
            call.context["role"] = "admin"
        return await proceed()

    registry = GrainRegistry()
    registry.register(Admin)
    built = InProcessCluster(registry)
    try:
        silo = built.add("s1")
        with_filters(silo, as_admin, module["timing"], module["check_token"])
        with pytest.raises(PermissionDeniedError) as refused:
            await silo.call("Admin", "guest", "admin_reset")
        assert "admin_reset needs role=admin" in refused.value.message
        assert await silo.call("Admin", "root", "admin_reset") == "reset"
    finally:
        built.close()
