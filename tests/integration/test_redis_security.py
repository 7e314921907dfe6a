"""Redis over TLS (rediss://) with an ACL user and password; secrets never reach the logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from grainery.silo.testing import SiloProcess, TestStore
from tests.integration.pki import Pki, make_pki
from tests.integration.tls_proxy import TlsProxy

PASSWORD = "redis-pw-" + uuid.uuid4().hex[:8]
TOKEN = "grpc-token-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("redis-pki"))


@pytest.fixture
async def acl_user(store: TestStore) -> Iterator[str]:
    name = f"grainery-{uuid.uuid4().hex[:6]}"
    admin = aioredis.from_url(store.url)
    await admin.execute_command("ACL", "SETUSER", name, "on", f">{PASSWORD}", "~*", "&*",
                                "+@all")
    yield name
    await admin.execute_command("ACL", "DELUSER", name)
    await admin.aclose()


async def test_silo_over_rediss_with_acl_user(
    store: TestStore, pki: Pki, acl_user: str, tmp_path: Path
) -> None:
    proxy = TlsProxy(store.port, pki.server_cert, pki.server_key).start()
    url = f"rediss://{acl_user}:{PASSWORD}@127.0.0.1:{proxy.port}/0"
    silo = SiloProcess(
        "tls-redis", ["tests.grains.probes"], url, f"rtls-{uuid.uuid4().hex[:6]}",
        extra_args=["--redis-ca", pki.ca, "--token", TOKEN, "--log-format", "json"],
        log_dir=str(tmp_path),
    )
    try:
        silo.start()
        from grainery.client import ClientSecurity, GrainClient

        async with GrainClient(silo.address, security=ClientSecurity(token=TOKEN)) as client:
            assert await client.get_grain("Recorder", "tls").add(3) == 3
            assert await client.get_grain("Recorder", "tls").add(4) == 7
        # The state really went through the ACL user into the store.
        plain = aioredis.from_url(store.url)
        keys = await plain.keys(f"grainery:{silo.args[silo.args.index('--cluster') + 1]}:*")
        await plain.aclose()
        assert any(b"Recorder/tls" in key for key in keys), keys
    finally:
        silo.stop()
        proxy.stop()
    log = silo.log_path.read_text()
    assert PASSWORD not in log and TOKEN not in log, "a secret reached the silo's log"


async def test_wrong_redis_password_fails_clearly(store: TestStore, acl_user: str,
                                                   tmp_path: Path) -> None:
    url = f"redis://{acl_user}:wrong-{PASSWORD}@127.0.0.1:{store.port}/0"
    silo = SiloProcess("bad-pw", ["tests.grains.probes"], url, "badpw", log_dir=str(tmp_path))
    with pytest.raises(RuntimeError) as exited:
        silo.start(timeout=20)
    silo.stop()
    message = str(exited.value)
    assert "exited early" in message
    assert "wrong-" not in silo.log_path.read_text(), "the password reached the log"
