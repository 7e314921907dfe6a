"""JSON codec for arguments and results.

Arguments travel as a JSON array of positional arguments (plus, optionally, a
JSON object of keyword arguments), results as a JSON value: the only encoding
any language can produce, and nothing is ever unpickled. orjson does the work
(several times faster than ``json``); both directions enforce the documented
size and nesting bounds. The size is checked here, before sending, so an
oversized argument is the caller's ``too_large`` error and never reaches gRPC's
own limit (which reports it as RESOURCE_EXHAUSTED, a code that reads like load).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from grainery.client.errors import InvalidArgumentsError, TooLargeError

DEFAULT_MAX_NESTING = 64


def encode_args(args: Sequence[Any], max_bytes: int | None = None) -> str:
    try:
        encoded = orjson.dumps(list(args))
    except TypeError as exc:
        raise InvalidArgumentsError(f"arguments are not JSON-serialisable: {exc}") from None
    check_size("arguments", len(encoded), max_bytes)
    return encoded.decode()


def encode_kwargs(kwargs: Mapping[str, Any], max_bytes: int | None = None) -> str:
    """Keyword arguments as a JSON object; empty (no field on the wire) when there are none."""
    if not kwargs:
        return ""
    if not all(isinstance(name, str) for name in kwargs):
        raise InvalidArgumentsError("keyword argument names must be strings")
    try:
        encoded = orjson.dumps(dict(kwargs))
    except TypeError as exc:
        raise InvalidArgumentsError(
            f"keyword arguments are not JSON-serialisable: {exc}"
        ) from None
    check_size("keyword arguments", len(encoded), max_bytes)
    return encoded.decode()


def check_size(what: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise TooLargeError(f"{what}: {size} bytes of JSON, over the limit of {max_bytes}")


def decode_args(args_json: str, max_nesting: int = DEFAULT_MAX_NESTING) -> list[Any]:
    """Parse ARGS_JSON into a list, rejecting anything but a JSON array."""
    if not args_json:
        return []
    value: list[Any] = _decode(args_json, "args_json", list, "a JSON array of positional "
                               "arguments", max_nesting)
    return value


def decode_kwargs(kwargs_json: str, max_nesting: int = DEFAULT_MAX_NESTING) -> dict[str, Any]:
    """Parse KWARGS_JSON into a dict, rejecting anything but a JSON object."""
    if not kwargs_json:
        return {}
    value: dict[str, Any] = _decode(kwargs_json, "kwargs_json", dict, "a JSON object of "
                                    "keyword arguments", max_nesting)
    return value


def _decode(text: str, field: str, shape: type, described: str, max_nesting: int) -> Any:
    """One JSON argument field: valid JSON, of the expected shape, nested within bounds."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentsError(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(value, shape):
        raise InvalidArgumentsError(f"{field} must be {described}")
    # Depth can never exceed the number of brackets: skip the walk for ordinary arguments.
    brackets = text.count("[") + text.count("{")
    if brackets > max_nesting and nesting_depth(value) > max_nesting:
        raise InvalidArgumentsError(f"{field} nests deeper than {max_nesting} levels")
    return value


def encode_result(value: Any) -> str:
    return orjson.dumps(value).decode()


def decode_result(result_json: str) -> Any:
    return orjson.loads(result_json) if result_json else None


def nesting_depth(value: Any) -> int:
    """Depth of nested lists/dicts, computed iteratively (no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
    return deepest
