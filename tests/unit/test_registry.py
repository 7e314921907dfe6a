"""Grain types and their method tables: exactly the public async methods below Grain."""

from __future__ import annotations

import logging
import types
from typing import Any

import pytest

from grainery.client.errors import InvalidArgumentsError, UnknownGrainTypeError, UnknownMethodError
from grainery.silo import Grain
from grainery.silo.grain import RESERVED_NAMES
from grainery.silo.registry import MAX_TYPE_NAME, GrainRegistry, MethodSpec, callable_methods
from tests.grains import probes


class Shapes(Grain):
    """One method per signature shape."""

    async def none(self) -> None: ...

    async def one(self, a: int) -> None: ...

    async def defaults(self, a: int, b: int = 1, c: int = 2) -> None: ...

    async def star(self, a: int, *rest: int) -> None: ...

    async def only_star(self, *rest: int) -> None: ...

    async def positional_only(self, a: int, /, b: int) -> None: ...

    async def kw_optional(self, a: int, *, flag: bool = False) -> None: ...

    async def kw_required(self, a: int, *, flag: bool) -> None: ...

    async def kwargs(self, a: int, **extra: Any) -> None: ...


class Hidden(Grain):
    """Nothing here is callable from the wire."""

    counter = 0
    label = "x"
    handler = staticmethod(len)

    async def _private(self) -> None: ...

    async def __aenter__(self) -> Hidden:
        return self

    async def __call__(self) -> None: ...

    def sync_method(self) -> None: ...

    @property
    def prop(self) -> int:
        return 1

    # Grain's own names, overridden: still not callable.
    async def on_activate(self) -> None: ...

    async def on_deactivate(self, reason: str) -> None: ...

    async def write_state(self) -> None: ...

    async def read_state(self) -> None: ...

    async def clear_state(self) -> None: ...

    async def get_grain(self, grain_type: str, key: str) -> Any:  # type: ignore[override]
        ...

    async def deactivate_on_idle(self) -> None:  # type: ignore[override]
        ...


class Base(Grain):
    abstract = True

    async def inherited(self) -> str:
        return "base"

    async def shadowed_by_sync(self) -> None: ...

    async def shadowed_by_value(self) -> None: ...

    async def overridden(self, a: int) -> None: ...


class Derived(Base):
    shadowed_by_value = None  # type: ignore[assignment]

    def shadowed_by_sync(self) -> None:  # type: ignore[override]
        ...

    async def overridden(self, a: int, b: int) -> None:  # type: ignore[override]
        ...

    async def own(self) -> None: ...


class Renamed(Grain):
    grain_type = "custom-name"
    idle_timeout = 3.0

    async def hello(self) -> str:
        return "hi"


def arity(spec: MethodSpec) -> tuple[int, int | None]:
    return spec.min_args, spec.max_args


# ----- method tables -----------------------------------------------------
def test_signature_shapes_and_arity() -> None:
    table = callable_methods(Shapes)
    assert {name: arity(spec) for name, spec in table.items()} == {
        "none": (0, 0),
        "one": (1, 1),
        "defaults": (1, 3),
        "star": (1, None),
        "only_star": (0, None),
        "positional_only": (2, 2),
        "kw_optional": (1, 1),
        "kw_required": (1, 1),  # callable now: its keyword comes in kwargs_json
        "kwargs": (1, 1),
    }


def test_private_dunder_sync_attributes_and_grain_names_are_not_callable() -> None:
    assert callable_methods(Hidden) == {}


def test_grain_base_names_are_reserved() -> None:
    for name in ("on_activate", "on_deactivate", "write_state", "read_state", "clear_state",
                 "get_grain", "deactivate_on_idle", "key", "silo_id", "state", "grain_type"):
        assert name in RESERVED_NAMES, name
    assert callable_methods(Grain) == {}


def test_inherited_methods_are_callable_and_shadowing_removes_them() -> None:
    table = callable_methods(Derived)
    assert set(table) == {"inherited", "overridden", "own"}
    assert arity(table["overridden"]) == (2, 2)  # the subclass's signature wins
    assert table["inherited"].func is Base.inherited


def test_probe_tables() -> None:
    assert set(callable_methods(probes.Guarded)) == {"ok"}
    assert set(callable_methods(probes.GuardedChild)) == {"ok", "child"}
    boom = callable_methods(probes.Boom)
    assert set(boom) == {"explode", "unserialisable", "big", "echo", "kw_only"}
    assert arity(boom["echo"]) == (0, None)
    assert set(callable_methods(probes.Recorder)) == {"ping", "add", "get"}
    assert arity(callable_methods(probes.Turns)["track"]) == (1, 2)


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (2, True), (3, True), (4, False)])
def test_check_arity(count: int, ok: bool) -> None:
    spec = callable_methods(Shapes)["defaults"]
    if ok:
        spec.check_arity(count)
    else:
        with pytest.raises(InvalidArgumentsError, match=r"defaults\(\) takes 1 to 3"):
            spec.check_arity(count)


def test_check_arity_messages() -> None:
    table = callable_methods(Shapes)
    expected = r"one\(\) takes 1 positional argument\(s\), got 2"
    with pytest.raises(InvalidArgumentsError, match=expected):
        table["one"].check_arity(2)
    with pytest.raises(InvalidArgumentsError, match="1 to any"):
        table["star"].check_arity(0)
    table["star"].check_arity(100)


# ----- the registry ------------------------------------------------------
def test_registry_lookup_and_errors() -> None:
    registry = GrainRegistry()
    grain_type = registry.register(Renamed)
    assert registry.get("custom-name") is grain_type
    assert grain_type.idle_timeout == 3.0
    assert grain_type.method("hello").name == "hello"
    with pytest.raises(UnknownGrainTypeError, match="Renamed"):
        registry.get("Renamed")  # registered under its grain_type, not the class name
    with pytest.raises(UnknownMethodError, match="nope"):
        grain_type.method("nope")


def test_register_is_idempotent_but_names_are_unique() -> None:
    registry = GrainRegistry()
    registry.register(Shapes)
    registry.register(Shapes)
    clash = type("Shapes", (Grain,), {"__module__": "elsewhere"})
    with pytest.raises(ValueError, match="defined twice"):
        registry.register(clash)


def test_type_name_bounds() -> None:
    registry = GrainRegistry()
    too_long = type("TooLong", (Grain,), {"grain_type": "x" * (MAX_TYPE_NAME + 1)})
    with pytest.raises(ValueError, match="invalid grain type name"):
        registry.register(too_long)
    with pytest.raises(UnknownGrainTypeError) as info:
        registry.get("y" * 10_000)
    assert len(str(info.value)) < MAX_TYPE_NAME + 100  # the echo of the name is bounded


def test_register_module_takes_only_concrete_grains_defined_there() -> None:
    module = types.ModuleType("fake_grains")
    defined_here = type("Here", (Grain,), {"__module__": "fake_grains"})
    abstract = type("Abstract", (Grain,), {"__module__": "fake_grains", "abstract": True})
    module.Here = defined_here  # type: ignore[attr-defined]
    module.Abstract = abstract  # type: ignore[attr-defined]
    module.Imported = Renamed  # type: ignore[attr-defined]
    module.Grain = Grain  # type: ignore[attr-defined]
    module.not_a_class = 3  # type: ignore[attr-defined]
    registry = GrainRegistry()
    assert [t.name for t in registry.register_module(module)] == ["Here"]
    assert registry.names() == ["Here"]


def test_load_modules_registers_the_probes() -> None:
    registry = GrainRegistry()
    registry.load_modules(["tests.grains.probes"])
    expected = {"Recorder", "Turns", "Flaky", "Boom", "Guarded", "GuardedChild", "Sleepy", "Relay"}
    assert expected <= set(registry.names())
    assert registry.names() == sorted(registry.names())
    assert registry.get("Sleepy").idle_timeout == 0.5


def test_min_idle_timeout() -> None:
    registry = GrainRegistry()
    registry.register(Shapes)
    assert registry.min_idle_timeout(900.0) == 900.0
    registry.register(Renamed)
    assert registry.min_idle_timeout(900.0) == 3.0
    assert registry.min_idle_timeout(1.0) == 1.0


def test_methods_of_a_mixin_are_callable() -> None:
    """A plain mixin mixed into a grain contributes its public async methods (as Ray users
    expect); its private and sync methods stay unreachable."""
    from grainery.silo import Grain
    from grainery.silo.registry import callable_methods

    class Greeter:
        async def greet(self, name: str) -> str:
            return f"hello {name}"

        async def _secret(self) -> str:
            return "no"

        def sync(self) -> str:
            return "no"

    class Host(Greeter, Grain):
        async def own(self) -> int:
            return 1

    assert set(callable_methods(Host)) == {"greet", "own"}


# ----- keyword arguments (item 5) -----------------------------------------
def test_keyword_arguments_are_checked_against_the_signature() -> None:
    table = callable_methods(Shapes)
    table["kw_required"].check_call(1, {"flag": True})
    table["kw_optional"].check_call(1, {"flag": True})
    table["one"].check_call(0, {"a": 1})  # a positional-or-keyword parameter, by name
    table["kwargs"].check_call(1, {"anything": 1, "else": 2})
    table["defaults"].check_call(1, {"c": 5})
    with pytest.raises(InvalidArgumentsError,
                       match=r"kw_required\(\) is missing required keyword argument\(s\): flag"):
        table["kw_required"].check_call(1, {})
    with pytest.raises(InvalidArgumentsError,
                       match=r"one\(\) got an unexpected keyword argument 'b' "
                             r"\(keyword arguments it accepts: a\)"):
        table["one"].check_call(1, {"b": 2})
    with pytest.raises(InvalidArgumentsError, match="accepts: none"):
        table["none"].check_call(0, {"x": 1})
    with pytest.raises(InvalidArgumentsError, match="multiple values for argument 'a'"):
        table["one"].check_call(1, {"a": 2})
    with pytest.raises(InvalidArgumentsError, match="unexpected keyword argument 'a'"):
        table["positional_only"].check_call(1, {"a": 1, "b": 2})
    with pytest.raises(InvalidArgumentsError, match="missing a required argument: 'a'"):
        table["kw_required"].check_call(0, {"flag": True})
    with pytest.raises(InvalidArgumentsError, match="multiple values for argument 'self'"):
        table["kwargs"].check_call(1, {"self": 1})


class Sloppy(Grain):
    """Public methods the registry cannot expose: it must say so."""

    async def fine(self) -> None: ...

    def forgot_async(self) -> None: ...

    async def streams(self) -> Any:
        yield 1

    def _helper(self) -> None: ...

    limit = 3


def test_registration_logs_methods_and_warns_about_skipped_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = GrainRegistry()
    with caplog.at_level(logging.INFO, logger="grainery.registry"):
        registry.register(Sloppy)
        assert not caplog.records, "registering logs nothing; the silo logs once it serves"
        registry.log_summary()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert any("registered grain type Sloppy" in m and "methods fine" in m for m in infos)
    assert len(warnings) == 2, warnings
    assert "Sloppy.forgot_async is a plain def" in warnings[0]
    assert "Sloppy.streams is an async generator" in warnings[1]
    assert not any("_helper" in m or "limit" in m for m in warnings)


def test_no_warning_when_a_subclass_makes_the_method_async(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Fixed(Sloppy):
        async def forgot_async(self) -> None:  # type: ignore[override]
            ...

    registry = GrainRegistry()
    with caplog.at_level(logging.WARNING, logger="grainery.registry"):
        registry.register(Fixed)
        registry.log_summary()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("forgot_async" in m for m in messages), messages


def test_any_keyword_arguments_from_the_wire_get_a_clear_error_or_bind() -> None:
    """Whatever names and values kwargs_json carries, checking them either passes (and the
    call then binds exactly as checked) or raises InvalidArgumentsError, never TypeError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    table = callable_methods(Shapes)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(sorted(table)), st.integers(0, 4),
           st.dictionaries(st.sampled_from(["a", "b", "c", "flag", "extra", "self", "", "1x",
                                            "rest"]) | st.text(max_size=5),
                           st.integers(), max_size=4))
    def check(name: str, count: int, kwargs: dict[str, Any]) -> None:
        spec = table[name]
        try:
            spec.check_call(count, kwargs)
        except InvalidArgumentsError:
            return
        assert spec.signature is not None
        spec.signature.bind(None, *([0] * count), **kwargs)  # no TypeError once accepted

    check()
