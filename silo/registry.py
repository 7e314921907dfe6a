"""Grain types and their remote-callable method tables, computed once at registration.

The method table is the *only* way a name from the wire becomes code: a method
is callable iff it is a public (no leading underscore) ``async def`` defined by
the grain class or one of its bases other than :class:`Grain` and ``object`` (so
methods of mixin classes count), and it is not one of
``Grain``'s own names. Nothing else (dunders, private methods, attributes,
``Grain``'s hooks) is reachable. Runtime hooks (silo/hooks.py: ``receive_reminder``, ...)
are kept in a table of their own that only system calls reach.

Registration logs what it found (INFO) and warns about public functions it had to
skip (a plain ``def``, an async generator), naming class and method: a method a user
meant to expose but wrote as ``def`` otherwise fails only at call time, with
``unknown_method``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from grainery.client.errors import InvalidArgumentsError, UnknownGrainTypeError, UnknownMethodError
from grainery.silo.decorators import (
    INTERLEAVE,
    ONE_WAY,
    READ_ONLY,
    STATELESS_MAX_LOCAL,
    marked,
)
from grainery.silo.grain import RESERVED_NAMES, Grain
from grainery.silo.hooks import HOOK_NAMES

log = logging.getLogger("grainery.registry")

MAX_TYPE_NAME = 256

GrainMethod = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    func: GrainMethod
    min_args: int
    max_args: int | None  # None: accepts *args
    keywords: frozenset[str] = frozenset()  # parameter names that may be given by keyword
    required_keywords: frozenset[str] = frozenset()  # keyword-only, no default
    any_keyword: bool = False  # accepts **kwargs
    signature: inspect.Signature | None = None
    interleave: bool = False  # @interleave: may run while another call waits at an await
    read_only: bool = False  # @read_only: may interleave with other read-only calls
    one_way: bool = False  # @one_way: answered once admitted; runs later

    def check_call(self, count: int, kwargs: Mapping[str, Any]) -> None:
        """Refuse, with a clear message, any call the signature would refuse with TypeError.
        Calls without keywords (the common case) skip ``Signature.bind``."""
        if not kwargs:
            self.check_arity(count)
            if self.required_keywords:
                names = ", ".join(sorted(self.required_keywords))
                raise InvalidArgumentsError(
                    f"{self.name}() is missing required keyword argument(s): {names}"
                )
            return
        if not self.any_keyword:
            for name in kwargs:
                if name not in self.keywords:
                    accepted = ", ".join(sorted(self.keywords)) or "none"
                    raise InvalidArgumentsError(
                        f"{self.name}() got an unexpected keyword argument {name[:100]!r} "
                        f"(keyword arguments it accepts: {accepted})"
                    )
        if self.signature is not None:
            try:
                self.signature.bind(None, *([None] * count), **kwargs)
            except TypeError as exc:
                raise InvalidArgumentsError(f"{self.name}(): {exc}") from None

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
    skipped: tuple[str, ...] = ()  # why public functions of the class are not callable
    reentrant: bool = False  # every call may interleave at await points
    call_chain_reentrant: bool = False  # calls from its own call chain may come back in
    stateless_max_local: int | None = None  # @stateless_worker: local activations per silo
    hooks: Mapping[str, MethodSpec] = field(default_factory=dict)  # runtime hooks it defines

    def method(self, name: str) -> MethodSpec:
        spec = self.methods.get(name)
        if spec is None:
            raise UnknownMethodError(f"grain type {self.name!r} has no callable method {name!r}")
        return spec

    def hook(self, name: str) -> MethodSpec:
        """A runtime hook of the type (silo/hooks.py); only system calls reach these."""
        spec = self.hooks.get(name)
        if spec is None:
            raise UnknownMethodError(f"grain type {self.name!r} has no hook {name!r}")
        return spec


def _method_spec(name: str, func: GrainMethod) -> MethodSpec:
    signature = inspect.signature(func)
    params = list(signature.parameters.values())[1:]  # drop self
    positional = [
        p for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = sum(1 for p in positional if p.default is p.empty)
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    keywords = frozenset(
        p.name for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
    required_keywords = frozenset(
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    )
    return MethodSpec(
        name, func, required, None if variadic else len(positional), keywords,
        required_keywords, any(p.kind is p.VAR_KEYWORD for p in params), signature,
        interleave=marked(func, INTERLEAVE), read_only=marked(func, READ_ONLY),
        one_way=marked(func, ONE_WAY),
    )


_BASE_MRO = frozenset(Grain.__mro__)


def hook_methods(cls: type[Grain]) -> dict[str, MethodSpec]:
    """The runtime hooks ``cls`` defines (an ``async def`` named in HOOK_NAMES)."""
    hooks: dict[str, MethodSpec] = {}
    for name in HOOK_NAMES:
        func = getattr(cls, name, None)
        if func is not None and inspect.iscoroutinefunction(func):
            hooks[name] = _method_spec(name, func)
    return hooks


def callable_methods(cls: type[Grain]) -> dict[str, MethodSpec]:
    """The remote-callable methods of a grain class (see module docstring)."""
    return scan_methods(cls)[0]


def scan_methods(cls: type[Grain]) -> tuple[dict[str, MethodSpec], dict[str, str]]:
    """The callable methods, and the public functions skipped with the reason (by name)."""
    table: dict[str, MethodSpec] = {}
    skipped: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass in _BASE_MRO:
            continue  # Grain itself and what it inherits; mixins of the grain class count
        for name, value in vars(klass).items():
            if name.startswith("_") or name in RESERVED_NAMES or name in HOOK_NAMES:
                continue
            skipped.pop(name, None)
            if not inspect.iscoroutinefunction(value):
                table.pop(name, None)  # a subclass may shadow an async method with a non-method
                if inspect.isasyncgenfunction(value):
                    skipped[name] = f"{klass.__qualname__}.{name} is an async generator"
                elif inspect.isfunction(value):
                    skipped[name] = f"{klass.__qualname__}.{name} is a plain def, not async def"
                continue
            table[name] = _method_spec(name, value)
    return table, skipped


class GrainRegistry:
    """Grain types known to this silo, by wire name."""

    def __init__(self) -> None:
        self._types: dict[str, GrainType] = {}

    def register(self, cls: type[Grain]) -> GrainType:
        name = cls.grain_type
        if not name or len(name) > MAX_TYPE_NAME:
            raise ValueError(f"invalid grain type name {name!r} on {cls.__qualname__}")
        existing = self._types.get(name)
        if existing is not None and existing.cls is cls:
            return existing
        if existing is not None:
            raise ValueError(
                f"grain type {name!r} is defined twice: {existing.cls.__module__}."
                f"{existing.cls.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
        methods, skipped = scan_methods(cls)
        grain_type = GrainType(
            name, cls, methods, cls.idle_timeout, tuple(skipped.values()),
            reentrant=bool(cls.reentrant),
            call_chain_reentrant=bool(cls.allow_call_chain_reentrancy),
            stateless_max_local=getattr(cls, STATELESS_MAX_LOCAL, None),
            hooks=hook_methods(cls),
        )
        self._types[name] = grain_type
        return grain_type

    def log_summary(self) -> None:
        """Log what was registered and warn about public methods that are not callable.

        Called once the silo serves, not while modules load: a start that fails must
        print its one error line and nothing else."""
        for grain_type in self._types.values():
            cls = grain_type.cls
            log.info(
                "registered grain type %s (%s.%s): methods %s", grain_type.name, cls.__module__,
                cls.__qualname__, ", ".join(sorted(grain_type.methods)) or "(none)",
            )
            for reason in grain_type.skipped:
                log.warning(
                    "grain type %s: skipped public method %s; it is not callable "
                    "(make it `async def`, or prefix it with _ to silence this)",
                    grain_type.name, reason,
                )

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
