"""JSON codec for arguments and results.

Arguments travel as a JSON array of positional arguments, results as a JSON
value: the only encoding any language can produce, and nothing is ever
unpickled. orjson does the work (several times faster than ``json``); both
directions enforce the documented size and nesting bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from grainery.client.errors import InvalidArgumentsError

DEFAULT_MAX_NESTING = 64


def encode_args(args: Sequence[Any]) -> str:
    try:
        return orjson.dumps(list(args)).decode()
    except TypeError as exc:
        raise InvalidArgumentsError(f"arguments are not JSON-serialisable: {exc}") from None


def decode_args(args_json: str, max_nesting: int = DEFAULT_MAX_NESTING) -> list[Any]:
    """Parse ARGS_JSON into a list, rejecting anything but a JSON array."""
    if not args_json:
        return []
    try:
        value = orjson.loads(args_json)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentsError(f"args_json is not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise InvalidArgumentsError("args_json must be a JSON array of positional arguments")
    # Depth can never exceed the number of brackets: skip the walk for ordinary arguments.
    brackets = args_json.count("[") + args_json.count("{")
    if brackets > max_nesting and nesting_depth(value) > max_nesting:
        raise InvalidArgumentsError(f"args_json nests deeper than {max_nesting} levels")
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
