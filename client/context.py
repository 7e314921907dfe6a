"""Request context: string key/values that travel with every call, and the call chain.

``with request_context(tenant="acme"): await ref.method()`` puts ``tenant=acme`` on every
call made inside the block (in this task and the tasks it starts), the way Orleans'
RequestContext does; a grain reads it as ``self.call_context.values`` and passes it on to
every grain it calls. Blocks nest: an inner block adds to (or overrides) the outer one's
values and the outer values come back when it ends.

Why a context variable: a value set around ``await ref.method()`` must reach the call
without every layer in between passing it along, and two concurrent tasks must not see
each other's values.

On the wire (one format for every language): unary ``Gateway/Invoke`` carries each entry as
gRPC metadata ``grainery-ctx-<name>: <value>`` and the call chain as ``grainery-chain`` (a
JSON array of ``"Type/key"`` strings, ASCII); the call stream carries the same on
``StreamCall.context`` and ``StreamCall.chain``. Because gRPC metadata names are lowercase
ASCII, the rules below hold on every transport, so a call is accepted or refused the same
way whichever path it takes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType

from grainery.client.errors import InvalidContextError

CONTEXT_METADATA_PREFIX = "grainery-ctx-"
CHAIN_METADATA_KEY = "grainery-chain"

# Bounds, checked by the client before sending and by every silo on receipt.
MAX_CONTEXT_ENTRIES = 32
MAX_CONTEXT_NAME_BYTES = 64
MAX_CONTEXT_VALUE_BYTES = 4096
MAX_CONTEXT_BYTES = 8192  # names plus values, all entries
MAX_CHAIN_LENGTH = 32  # grain activations a call may pass through (nested grain calls)
MAX_CHAIN_ENTRY_BYTES = 2048  # "Type/key": a type name (256) and a key (1024) fit easily

# gRPC metadata names are lowercase; '-', '_' and '.' are allowed too.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")

EMPTY: Mapping[str, str] = MappingProxyType({})
_CURRENT: ContextVar[Mapping[str, str]] = ContextVar("grainery_request_context", default=EMPTY)


# Names already found valid: the same few names ("tenant") come with every call, so the
# pattern is matched once per name, not once per call (bounded, so no caller can grow it).
_GOOD_NAMES: set[str] = set()
_MAX_GOOD_NAMES = 4096


def _good_name(name: str) -> bool:
    if len(name) > MAX_CONTEXT_NAME_BYTES or not _NAME.match(name):
        return False
    if len(_GOOD_NAMES) < _MAX_GOOD_NAMES:
        _GOOD_NAMES.add(name)
    return True


def check_context(values: Mapping[str, str]) -> None:
    """Raise InvalidContextError naming the first rule ``values`` breaks."""
    if len(values) > MAX_CONTEXT_ENTRIES:
        raise InvalidContextError(
            f"request context has {len(values)} entries (limit {MAX_CONTEXT_ENTRIES})"
        )
    total = 0
    for name, value in values.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidContextError(
                f"request context entries are str -> str, got {type(name).__name__} -> "
                f"{type(value).__name__} for {str(name)[:MAX_CONTEXT_NAME_BYTES]!r}"
            )
        if name not in _GOOD_NAMES and not _good_name(name):
            raise InvalidContextError(
                f"request context name {name[:MAX_CONTEXT_NAME_BYTES]!r} is not allowed: "
                f"names are 1-{MAX_CONTEXT_NAME_BYTES} characters of a-z, 0-9, '-', '_', '.', "
                "starting with a letter or digit (gRPC metadata names are lowercase)"
            )
        if len(value) > MAX_CONTEXT_VALUE_BYTES:
            raise InvalidContextError(
                f"request context value of {name!r} is {len(value)} bytes "
                f"(limit {MAX_CONTEXT_VALUE_BYTES})"
            )
        if not (value.isascii() and value.isprintable()):  # as gRPC metadata values are
            raise InvalidContextError(
                f"request context value of {name!r} is not printable ASCII (gRPC metadata "
                "values are); encode other text, e.g. percent-encoding or base64"
            )
        total += len(name) + len(value)
    if total > MAX_CONTEXT_BYTES:
        raise InvalidContextError(
            f"request context is {total} bytes (names plus values; limit {MAX_CONTEXT_BYTES})"
        )


def check_chain(chain: Iterable[str]) -> tuple[str, ...]:
    """The chain as a tuple; raise InvalidContextError if it is past the bounds."""
    entries = tuple(chain)
    if len(entries) > MAX_CHAIN_LENGTH:
        raise InvalidContextError(
            f"call chain of {len(entries)} grain calls exceeds the limit of {MAX_CHAIN_LENGTH} "
            f"(outermost: {entries[0][:100]!r}); nested grain calls go too deep"
        )
    for entry in entries:
        if not isinstance(entry, str) or len(entry) > MAX_CHAIN_ENTRY_BYTES:
            raise InvalidContextError(
                f"call chain entries are 'Type/key' strings of at most {MAX_CHAIN_ENTRY_BYTES} "
                "bytes"
            )
    return entries


class request_context:  # noqa: N801 - used like a function: `with request_context(...)`
    """Add string key/values to every grain call made inside the block (see the module
    docstring). Names that are not Python identifiers (``"x-request-id"``) go in the mapping.
    Bad names or values, or a context past the bounds, raise InvalidContextError here, not
    at the first call. ``as`` gives the merged context (read-only). A class rather than a
    generator: it wraps every call of code that sets a context per request."""

    __slots__ = ("_more", "_token", "_values")

    def __init__(self, values: Mapping[str, str] | None = None, /, **more: str) -> None:
        self._values, self._more = values, more
        self._token: Token[Mapping[str, str]] | None = None

    def __enter__(self) -> Mapping[str, str]:
        merged = {**_CURRENT.get(), **(self._values or {}), **self._more}
        check_context(merged)
        frozen = MappingProxyType(merged)
        self._token = _CURRENT.set(frozen)
        return frozen

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


def current_request_context() -> Mapping[str, str]:
    """The values ``request_context`` blocks have set around the running code (read-only)."""
    return _CURRENT.get()


@contextmanager
def cleared_request_context() -> Iterator[None]:
    """Run a block as if no ``request_context`` were set: a silo uses it around code that may
    start long-lived tasks (a grain's mailbox), which would otherwise inherit the values of
    whichever call happened to start them."""
    token = _CURRENT.set(EMPTY)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def call_metadata(
    context: Mapping[str, str], chain: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata that carries ``context`` and ``chain`` on a unary call."""
    pairs = [(CONTEXT_METADATA_PREFIX + name, value) for name, value in context.items()]
    if chain:
        pairs.append((CHAIN_METADATA_KEY, json.dumps(list(chain), ensure_ascii=True)))
    return tuple(pairs)


def parse_call_metadata(
    metadata: Iterable[tuple[str, str | bytes]],
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Context and chain from a unary call's metadata (others are ignored); raises
    InvalidContextError for a malformed entry. The bounds are checked by the dispatcher."""
    context: dict[str, str] = {}
    chain: tuple[str, ...] = ()
    for key, value in metadata:
        if not key.startswith("grainery-"):
            continue
        if key.startswith(CONTEXT_METADATA_PREFIX):
            name = key[len(CONTEXT_METADATA_PREFIX):]
            if not isinstance(value, str):
                raise InvalidContextError(f"request context entry {key!r} must be text")
            if name in context:
                raise InvalidContextError(f"request context entry {key!r} given twice")
            context[name] = value
            if len(context) > MAX_CONTEXT_ENTRIES:  # stop reading a flood early
                check_context(context)
        elif key == CHAIN_METADATA_KEY:
            chain = _parse_chain(value)
    return context, chain


def _parse_chain(value: str | bytes) -> tuple[str, ...]:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(entry, str) for entry in parsed):
        raise InvalidContextError(
            f"{CHAIN_METADATA_KEY} must be a JSON array of 'Type/key' strings"
        )
    return check_chain(parsed)
