"""The JSON codec: arguments are a JSON array, bounded in nesting; results are JSON values."""

from __future__ import annotations

import pytest

from grainery.client.codec import (
    DEFAULT_MAX_NESTING,
    decode_args,
    decode_kwargs,
    decode_result,
    encode_args,
    encode_kwargs,
    encode_result,
    nesting_depth,
)
from grainery.client.errors import InvalidArgumentsError, TooLargeError


def nested_lists(depth: int) -> str:
    """A JSON array nested ``depth`` levels deep, counting the outer argument array."""
    return "[" * depth + "]" * depth


def test_arguments_round_trip() -> None:
    args = (1, "two", 3.5, None, True, [1, [2]], {"k": {"v": [1, 2]}}, "é✓")
    assert decode_args(encode_args(args)) == list(args)
    assert decode_args(encode_args([])) == []


def test_empty_args_json_means_no_arguments() -> None:
    assert decode_args("") == []


@pytest.mark.parametrize(
    "args_json",
    ["[1,", "not json", "[1, 2]]", "[NaN]", "[1e400]", "\x00", "[\"unterminated]"],
)
def test_invalid_json_is_rejected(args_json: str) -> None:
    with pytest.raises(InvalidArgumentsError, match="not valid JSON"):
        decode_args(args_json)


@pytest.mark.parametrize("args_json", ['{"a": 1}', '"text"', "42", "null", "true", "1.5"])
def test_anything_but_an_array_is_rejected(args_json: str) -> None:
    with pytest.raises(InvalidArgumentsError, match="JSON array"):
        decode_args(args_json)


def test_nesting_at_the_limit_is_accepted() -> None:
    value = decode_args(nested_lists(DEFAULT_MAX_NESTING))
    assert nesting_depth(value) == DEFAULT_MAX_NESTING


def test_nesting_one_past_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgumentsError, match=f"deeper than {DEFAULT_MAX_NESTING}"):
        decode_args(nested_lists(DEFAULT_MAX_NESTING + 1))


def test_objects_count_towards_nesting() -> None:
    # [ {"a": [ {"b": 1} ]} ] is four levels: array, object, array, object.
    args_json = '[{"a": [{"b": 1}]}]'
    assert decode_args(args_json, max_nesting=4) == [{"a": [{"b": 1}]}]
    with pytest.raises(InvalidArgumentsError):
        decode_args(args_json, max_nesting=3)


def test_custom_nesting_limit() -> None:
    assert decode_args(nested_lists(3), max_nesting=3) == [[[]]]
    with pytest.raises(InvalidArgumentsError):
        decode_args(nested_lists(4), max_nesting=3)


def test_pathologically_deep_input_is_an_argument_error_not_a_crash() -> None:
    with pytest.raises(InvalidArgumentsError):
        decode_args(nested_lists(100_000))


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0),
        ("s", 0),
        (None, 0),
        ([], 1),
        ({}, 1),
        ([1, 2, 3], 1),
        ([[]], 2),
        ([{"a": [1]}], 3),
        ([[], [[[]]], []], 4),
        ({"a": 1, "b": {"c": {"d": []}}}, 4),
    ],
)
def test_nesting_depth(value: object, depth: int) -> None:
    assert nesting_depth(value) == depth


def test_nesting_depth_is_iterative() -> None:
    deep: list[object] = []
    for _ in range(50_000):  # far beyond Python's recursion limit
        deep = [deep]
    assert nesting_depth(deep) == 50_001


@pytest.mark.parametrize("bad", [{1, 2}, object(), 2**70, b"bytes"])
def test_unserialisable_arguments_are_an_argument_error(bad: object) -> None:
    with pytest.raises(InvalidArgumentsError, match="not JSON-serialisable"):
        encode_args([bad])


def test_results_round_trip() -> None:
    for value in (None, 0, -1, 1.25, "x", [1, "a"], {"k": [None, {"n": 1}]}):
        assert decode_result(encode_result(value)) == value


def test_empty_result_json_is_none() -> None:
    assert decode_result("") is None


def test_unserialisable_result_raises_type_error() -> None:
    # The dispatcher relies on TypeError to report an unserialisable result to the caller.
    with pytest.raises(TypeError):
        encode_result({1, 2, 3})


def test_keyword_arguments_round_trip_as_a_json_object() -> None:
    kwargs = {"by": 2, "label": "é", "nested": {"a": [1]}}
    assert decode_kwargs(encode_kwargs(kwargs)) == kwargs
    assert encode_kwargs({}) == ""
    assert decode_kwargs("") == {}


@pytest.mark.parametrize("text", ["[1]", "3", '"x"', "null"])
def test_kwargs_json_must_be_an_object(text: str) -> None:
    with pytest.raises(InvalidArgumentsError, match="JSON object"):
        decode_kwargs(text)


def test_kwargs_json_is_bounded_like_args() -> None:
    with pytest.raises(InvalidArgumentsError, match="not valid JSON"):
        decode_kwargs("{")
    deep = '{"a": ' + "[" * DEFAULT_MAX_NESTING + "]" * DEFAULT_MAX_NESTING + "}"
    with pytest.raises(InvalidArgumentsError, match="deeper than"):
        decode_kwargs(deep)
    with pytest.raises(InvalidArgumentsError, match="not JSON-serialisable"):
        encode_kwargs({"when": object()})


def test_oversized_arguments_are_too_large_before_sending() -> None:
    assert encode_args(["x" * 10], max_bytes=100) == '["xxxxxxxxxx"]'
    with pytest.raises(TooLargeError, match="over the limit of 100") as caught:
        encode_args(["x" * 200], max_bytes=100)
    assert caught.value.kind == "too_large"
    with pytest.raises(TooLargeError):
        encode_kwargs({"blob": "é" * 60}, max_bytes=100)  # counted in bytes, not characters
