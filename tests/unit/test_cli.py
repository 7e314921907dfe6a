"""The ``grainery`` command line: --version, defaults in every --help, the CLI's own env vars."""

from __future__ import annotations

import pytest

from grainery.silo.cli import build_parser, silo_config
from grainery.silo.config import SILO_OPTIONS, SiloConfig
from grainery.silo.storage.embedded import DEFAULT_STORE_PORT


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"grainery {version('grainery')}"


@pytest.mark.parametrize("option", [o for o in SILO_OPTIONS if o.default is not None],
                         ids=lambda o: o.flag)
def test_silo_help_shows_every_default(capsys: pytest.CaptureFixture[str], option: object) -> None:
    text = help_text(capsys, "silo").split("options:", 1)[1]
    flag, default = option.flag, option.default  # type: ignore[attr-defined]
    after = text[text.index(f"{flag} {flag.lstrip('-').replace('-', '_').upper()}"):]
    assert f"default: {default}" in after.split(" --")[0], after[:200]


@pytest.mark.parametrize("command", ["call", "status", "health"])
def test_client_help_shows_defaults(capsys: pytest.CaptureFixture[str], command: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAINERY_TARGET", raising=False)
    text = help_text(capsys, command)
    assert "(default: 127.0.0.1:7070)" in text
    assert "(default: 30.0)" in text
    assert "default: None" not in text


def test_cli_ca_has_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRAINERY_TLS_CA is the silo's CA for *other silos*; the CLI must not read it."""
    monkeypatch.setenv("GRAINERY_TLS_CA", "silo-peers-ca.pem")
    monkeypatch.delenv("GRAINERY_CLIENT_CA", raising=False)
    assert build_parser().parse_args(["status"]).tls_ca is None
    monkeypatch.setenv("GRAINERY_CLIENT_CA", "client-ca.pem")
    assert build_parser().parse_args(["status"]).tls_ca == "client-ca.pem"


def test_store_port_and_join(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAINERY_STORE_PORT", raising=False)
    monkeypatch.delenv("GRAINERY_REDIS_URL", raising=False)
    assert silo_config(build_parser().parse_args(["silo", "--grains", "m"])).store_port == 6390
    assert DEFAULT_STORE_PORT == 6390
    monkeypatch.setenv("GRAINERY_STORE_PORT", "0")
    monkeypatch.setenv("GRAINERY_JOIN", "/data")
    config = silo_config(build_parser().parse_args(["silo", "--grains", "m"]))
    assert (config.store_port, config.join) == (0, "/data")
    with pytest.raises(ValueError, match="--redis and --join"):
        SiloConfig(grains=("m",), redis="redis://x:6379/0", join="/data")
    with pytest.raises(ValueError, match="--store-port"):
        SiloConfig(grains=("m",), store_port=70000)


def test_help_never_prints_the_token(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAINERY_TOKEN", "s3cretTokenValue")
    assert build_parser().parse_args(["status"]).token == "s3cretTokenValue"
    assert "s3cretTokenValue" not in help_text(capsys, "status")
