"""Grain state <-> stored JSON bytes, refusing what JSON cannot give back unchanged.

Why refuse rather than convert: a value that silently comes back different (a
``datetime`` as a string, a tuple as a list, ``{1: ...}`` with a string key, a set,
``NaN`` as ``null``) is a bug that shows only after the next activation, far
from the write that caused it. So :func:`encode_state` checks that decoding the
bytes it produced gives back an equal value, and refuses the write otherwise,
naming the path of the first offending value. The check is C-speed (orjson plus
dict/list equality); the slow walk that names the path runs only on failure.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

EMPTY = b""


class StateEncodingError(TypeError):
    """``self.state`` holds a value JSON cannot store exactly; nothing was written."""


class StateValueError(ValueError):
    """``self.state`` holds a float JSON cannot store (NaN or an infinity)."""


def decode_state(raw: bytes | str | None) -> dict[str, Any]:
    """The state dict stored as ``raw`` (``{}`` when nothing is stored)."""
    if not raw:
        return {}
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else {"value": data}


def encode_state(data: dict[str, Any]) -> bytes:
    """JSON bytes for ``data``; raises :class:`StateEncodingError` (a ``TypeError``) or
    :class:`StateValueError` (a ``ValueError``) naming the path of a value that would not
    round-trip."""
    try:
        payload = orjson.dumps(data)
    except TypeError as exc:
        raise _explain(data, str(exc)) from None
    if payload == b"{}":
        return EMPTY
    try:
        same = orjson.loads(payload) == data
    except Exception:  # noqa: BLE001 - a value whose __eq__ raises cannot round-trip either
        same = False
    if not same:
        raise _explain(data, "decoding the stored JSON would give back a different value")
    return payload


def _explain(data: Any, fallback: str) -> TypeError | ValueError:
    found = _first_bad(data, "state")
    if found is None:
        return StateEncodingError(f"grain state cannot be stored as JSON: {fallback}")
    path, problem, is_value = found
    message = (
        f"grain state cannot be stored as JSON: {path} {problem}; store only dict (str keys), "
        "list, str, int, float (finite), bool and None, and convert other values yourself "
        "(e.g. a datetime to an ISO string)"
    )
    return StateValueError(message) if is_value else StateEncodingError(message)


_SCALARS = (str, bool, type(None))


def _first_bad(value: Any, path: str) -> tuple[str, str, bool] | None:
    """(path, what is wrong, is it a bad value rather than a bad type) of the first value
    that would not round-trip, depth first; None if every value is plain JSON."""
    kind = type(value)
    if kind in _SCALARS:
        return None
    if kind is int:
        if -(2**63) <= value < 2**64:
            return None
        return path, f"is an integer outside the 64-bit range ({value})", True
    if kind is float:
        if math.isfinite(value):
            return None
        return path, f"is {value!r}, which JSON cannot represent", True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                problem = f"has a {type(key).__name__} key {key!r} (JSON keys are strings)"
                return path, problem, False
            found = _first_bad(item, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if kind is list:
        for index, item in enumerate(value):
            found = _first_bad(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return path, f"is a {name} (JSON would give it back as a different type)", False
