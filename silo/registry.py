"""Grain types and their remote-callable method tables, computed once at registration.

The method table is the *only* way a name from the wire becomes code: a method
is callable iff it is a public (no leading underscore) ``async def`` defined by
the grain class or one of its bases other than :class:`Grain` and ``object`` (so
methods of mixin classes count), and it is not one of
``Grain``'s own names. Nothing else (dunders, private methods, attributes,
``Grain``'s hooks) is reachable.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from grainery.client.errors import InvalidArgumentsError, UnknownGrainTypeError, UnknownMethodError
from grainery.silo.grain import RESERVED_NAMES, Grain

MAX_TYPE_NAME = 256

GrainMethod = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    func: GrainMethod
    min_args: int
    max_args: int | None  # None: accepts *args

    def check_arity(self, count: int) -> None:
        if count < self.min_args or (self.max_args is not None and count > self.max_args):
            expected = (
                f"{self.min_args}" if self.min_args == self.max_args
                else f"{self.min_args} to {self.max_args if self.max_args is not None else 'any'}"
            )
            raise InvalidArgumentsError(
                f"{self.name}() takes {expected} positional argument(s), got {count}"
            )


@dataclass(frozen=True)
class GrainType:
    name: str
    cls: type[Grain]
    methods: dict[str, MethodSpec]
    idle_timeout: float | None

    def method(self, name: str) -> MethodSpec:
        spec = self.methods.get(name)
        if spec is None:
            raise UnknownMethodError(f"grain type {self.name!r} has no callable method {name!r}")
        return spec


def _method_spec(name: str, func: GrainMethod) -> MethodSpec | None:
    signature = inspect.signature(func)
    params = list(signature.parameters.values())[1:]  # drop self
    positional = [
        p for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
        return None  # cannot be called with positional arguments only
    required = sum(1 for p in positional if p.default is p.empty)
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    return MethodSpec(name, func, required, None if variadic else len(positional))


_BASE_MRO = frozenset(Grain.__mro__)


def callable_methods(cls: type[Grain]) -> dict[str, MethodSpec]:
    """The remote-callable methods of a grain class (see module docstring)."""
    table: dict[str, MethodSpec] = {}
    for klass in reversed(cls.__mro__):
        if klass in _BASE_MRO:
            continue  # Grain itself and what it inherits; mixins of the grain class count
        for name, value in vars(klass).items():
            if name.startswith("_") or name in RESERVED_NAMES:
                continue
            if not inspect.iscoroutinefunction(value):
                table.pop(name, None)  # a subclass may shadow an async method with a non-method
                continue
            spec = _method_spec(name, value)
            if spec is not None:
                table[name] = spec
    return table


class GrainRegistry:
    """Grain types known to this silo, by wire name."""

    def __init__(self) -> None:
        self._types: dict[str, GrainType] = {}

    def register(self, cls: type[Grain]) -> GrainType:
        name = cls.grain_type
        if not name or len(name) > MAX_TYPE_NAME:
            raise ValueError(f"invalid grain type name {name!r} on {cls.__qualname__}")
        existing = self._types.get(name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(
                f"grain type {name!r} is defined twice: {existing.cls.__module__}."
                f"{existing.cls.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        grain_type = GrainType(name, cls, callable_methods(cls), cls.idle_timeout)
        self._types[name] = grain_type
        return grain_type

    def register_module(self, module: ModuleType) -> list[GrainType]:
        """Register every concrete Grain subclass *defined* in ``module``."""
        found = [
            value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Grain)
            and value.__module__ == module.__name__ and not value.abstract
        ]
        return [self.register(cls) for cls in found]

    def load_modules(self, names: Iterable[str]) -> list[GrainType]:
        """Import and register modules; like ``python -m``, the working directory is importable."""
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        registered: list[GrainType] = []
        for name in names:
            registered += self.register_module(importlib.import_module(name))
        return registered

    def get(self, name: str) -> GrainType:
        grain_type = self._types.get(name)
        if grain_type is None:
            raise UnknownGrainTypeError(f"unknown grain type {name[:MAX_TYPE_NAME]!r}")
        return grain_type

    def names(self) -> list[str]:
        return sorted(self._types)

    def min_idle_timeout(self, default: float) -> float:
        timeouts = [t.idle_timeout for t in self._types.values() if t.idle_timeout is not None]
        return min([default, *timeouts])
