"""What grain state may hold: JSON that decodes back to an equal value; anything else is refused
with the path of the offending value (README "State rules")."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any

import pytest

from grainery.silo.storage.state_codec import (
    StateEncodingError,
    StateValueError,
    decode_state,
    encode_state,
)


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("state", [
    {}, {"a": 1, "b": [1, 2.5, "x", None, True, {"c": []}]}, {"big": 2**63 - 1},
    {"neg": -(2**63)}, {"u64": 2**64 - 1}, {"s": "é\u2603"},
])
def test_plain_json_round_trips(state: dict[str, Any]) -> None:
    assert decode_state(encode_state(state)) == state


def test_empty_state_is_stored_as_nothing() -> None:
    assert encode_state({}) == b""
    assert decode_state(b"") == {} and decode_state(None) == {}


@pytest.mark.parametrize(("state", "path", "error", "words"), [
    ({"when": datetime.datetime(2026, 1, 1)}, "state['when']", StateEncodingError, "datetime"),
    ({"d": datetime.date(2026, 1, 1)}, "state['d']", StateEncodingError, "date"),
    ({"a": [1, (2, 3)]}, "state['a'][1]", StateEncodingError, "tuple"),
    ({"m": {1: "x"}}, "state['m']", StateEncodingError, "int key 1"),
    ({"s": {1, 2}}, "state['s']", StateEncodingError, "set"),
    ({"x": float("nan")}, "state['x']", StateValueError, "nan"),
    ({"x": [float("inf")]}, "state['x'][0]", StateValueError, "inf"),
    ({"u": uuid.UUID(int=1)}, "state['u']", StateEncodingError, "UUID"),
    ({"e": Colour.RED}, "state['e']", StateEncodingError, "Colour"),
    ({"b": b"raw"}, "state['b']", StateEncodingError, "bytes"),
    ({"n": 2**64}, "state['n']", StateValueError, "64-bit"),
])
def test_values_json_cannot_round_trip_are_refused_naming_their_path(
    state: dict[str, Any], path: str, error: type[Exception], words: str,
) -> None:
    with pytest.raises(error) as refused:
        encode_state(state)
    message = str(refused.value)
    assert path in message and words in message, message


def test_the_refusals_are_type_and_value_errors() -> None:
    assert issubclass(StateEncodingError, TypeError)
    assert issubclass(StateValueError, ValueError)
