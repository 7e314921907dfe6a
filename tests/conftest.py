"""Shared fixtures: a real Redis-protocol server for the whole session, and a connection to
it for tests that check what grains recorded there."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

import grainery
from grainery.silo.testing import TestStore


def _import_every_grainery_module() -> None:
    """Import all of grainery now, while pytest runs on one thread with nothing else going on.

    grainery is a pytest plugin package, so pytest rewrites the asserts of each of its
    modules, parsing the module's source with ``ast`` on first import. CPython 3.11 keeps the
    AST constructor's recursion depth in interpreter-wide state: a second parse that starts
    while one is under way (a finalizer run by the garbage collector in the middle of the
    first, or another thread) makes the first fail with ``SystemError: AST constructor
    recursion depth mismatch`` (python/cpython#106905). One CI run lost a test to it: a test
    whose lazy ``import grainery.silo.runtime`` was the first. Imported here, no grainery
    module is parsed once tests run.
    """
    for module in pkgutil.walk_packages(grainery.__path__, "grainery."):
        if not module.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(module.name)


_import_every_grainery_module()


@pytest.fixture(scope="session")
def store() -> Iterator[TestStore]:
    server = TestStore().start()
    yield server
    server.stop()


@pytest.fixture
async def redis(store: TestStore) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(store.url)
    yield connection
    await connection.aclose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: the churn soak test (about 2 minutes); select with -m soak"
    )
