"""Silo configuration: flags, GRAINERY_* variables, defaults, and validation."""

from __future__ import annotations

import dataclasses

import pytest

from grainery.silo.cli import build_parser, silo_config
from grainery.silo.cluster.membership import MembershipTiming
from grainery.silo.config import ENV_VARS, SILO_OPTIONS, SiloConfig, env_defaults


def field_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def test_option_table_is_consistent() -> None:
    fields = {f.name: f for f in dataclasses.fields(SiloConfig)}
    flags = [o.flag for o in SILO_OPTIONS]
    envs = [o.env for o in SILO_OPTIONS]
    assert len(flags) == len(set(flags))
    assert len(envs) == len(set(envs)) == len(ENV_VARS)
    for option in SILO_OPTIONS:
        assert option.env.startswith("GRAINERY_"), option.env
        assert option.flag.startswith("--"), option.flag
        name = field_name(option.flag)
        assert name in fields, f"{option.flag} has no SiloConfig field"
        if option.default is not None:
            assert fields[name].default == option.default, option.flag


def test_no_environment_means_no_values() -> None:
    assert env_defaults({}) == {}


def test_env_values_are_converted() -> None:
    values = env_defaults({
        "GRAINERY_PORT": "8080",
        "GRAINERY_IDLE_TIMEOUT": "2.5",
        "GRAINERY_GRAINS": " app.a, app.b,,app.c ",
        "GRAINERY_CLUSTER": "prod",
        "GRAINERY_METRICS_PORT": "",  # empty: unset
        "UNRELATED": "x",
    })
    assert values == {
        "port": 8080, "idle_timeout": 2.5, "grains": ("app.a", "app.b", "app.c"), "cluster": "prod",
    }
    config = SiloConfig(**values)
    assert config.port == 8080 and config.idle_timeout == 2.5


@pytest.mark.parametrize(("env", "value"), [("GRAINERY_PORT", "80.5"),
                                            ("GRAINERY_IDLE_TIMEOUT", "soon"),
                                            ("GRAINERY_MAX_IN_FLIGHT", "many")])
def test_bad_env_values_name_the_variable(env: str, value: str) -> None:
    with pytest.raises(ValueError, match=env):
        env_defaults({env: value})


def test_flag_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAINERY_PORT", "9000")
    monkeypatch.setenv("GRAINERY_CLUSTER", "from-env")
    monkeypatch.setenv("GRAINERY_GRAINS", "env.module")
    options = build_parser().parse_args(
        ["silo", "--port", "9100", "--grains", "a,b", "--grains", "c"]
    )
    config = silo_config(options)
    assert config.port == 9100
    assert config.cluster == "from-env"
    assert config.grains == ("a", "b", "c")
    assert config.idle_timeout == 900.0  # the default: 15 minutes, as Orleans


def test_defaults_without_flags_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ENV_VARS:
        monkeypatch.delenv(env, raising=False)
    config = silo_config(build_parser().parse_args(["silo", "--grains", "m"]))
    assert (config.host, config.port, config.redis, config.cluster) == (
        "127.0.0.1", 7070, None, "default")
    assert config.metrics_port is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grains": ()}, "no grain modules"),
        ({"tls_cert": "c.pem"}, "go together"),
        ({"tls_key": "k.pem"}, "go together"),
        ({"tls_client_ca": "ca.pem"}, "needs --tls-cert"),
        ({"idle_timeout": 0}, "idle-timeout"),
        ({"idle_timeout": -1}, "idle-timeout"),
        ({"log_format": "xml"}, "human or json"),
        ({"heartbeat_interval": 2.0, "lease_duration": 3.0}, "two heartbeat"),
    ],
)
def test_invalid_configurations_are_refused(overrides: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"grains": ("m",), **overrides}
    with pytest.raises(ValueError, match=message):
        SiloConfig(**values)  # type: ignore[arg-type]


def test_valid_tls_and_timing() -> None:
    config = SiloConfig(grains=("m",), tls_cert="c", tls_key="k", tls_client_ca="ca",
                        heartbeat_interval=0.5, lease_duration=1.0)
    assert config.timing() == MembershipTiming(0.5, 1.0)


def test_a_lease_too_short_to_ever_be_trusted_is_refused() -> None:
    with pytest.raises(ValueError):
        SiloConfig(grains=("m",), heartbeat_interval=0.1, lease_duration=0.2)


def test_silo_id_and_advertised_address() -> None:
    config = SiloConfig(grains=("m",), host="127.0.0.1")
    assert config.resolved_silo_id(7071).endswith("-7071")
    assert config.resolved_advertise(7071) == "127.0.0.1:7071"
    named = SiloConfig(grains=("m",), silo_id="s1", advertise="silo1.svc:7070", host="0.0.0.0")
    assert named.resolved_silo_id(1) == "s1"
    assert named.resolved_advertise(1) == "silo1.svc:7070"
    wildcard = SiloConfig(grains=("m",), host="0.0.0.0")
    host, port = wildcard.resolved_advertise(7072).rsplit(":", 1)
    assert port == "7072" and host not in ("0.0.0.0", "")
