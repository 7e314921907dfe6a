"""Structural checks of deploy/: the files users run must agree with what the silo accepts.

Pure parsing, no network, no Docker: every GRAINERY_* variable must be a documented silo
setting, every metric the dashboard plots a documented family, and the container/pod settings
that make graceful drain and health checking work must be present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
FIXED_SILOS = ("silo1", "silo2", "silo3")
GRAINERY_VAR = re.compile(r"GRAINERY_[A-Z_]+")


def drain_timeout(deploy: Any, env: dict[str, str]) -> float:
    return float(env.get("GRAINERY_DRAIN_TIMEOUT", deploy.contract.default_of[
        "GRAINERY_DRAIN_TIMEOUT"]))


def seconds(value: Any) -> float:
    """Compose durations such as "45s", "1m30s" or a bare number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(value))
    assert parts, f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_is_multistage_slim_non_root(deploy: Any) -> None:
    assert len(deploy.stages) >= 2, "build wheels in one stage, install them in another"
    assert deploy.stages[-1][0][1].startswith("python:3.11-slim")
    users = deploy.image_instructions("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_entrypoint_signals_and_healthcheck(deploy: Any) -> None:
    # Exec form (a JSON list) keeps /bin/sh out, so SIGTERM reaches the silo itself.
    assert deploy.image_entrypoint == ["grainery", "silo"]
    assert deploy.image_instructions("STOPSIGNAL") == ["SIGTERM"]
    check = deploy.image_instructions("HEALTHCHECK")[-1]
    assert json.loads(check[check.index("CMD") + 3:].strip())[:2] == ["grainery", "health"]


def test_dockerfile_env_defaults(deploy: Any) -> None:
    env = deploy.image_env
    assert env["GRAINERY_HOST"] == "0.0.0.0" and env["GRAINERY_METRICS_HOST"] == "0.0.0.0"
    assert env["GRAINERY_PORT"] == "7070" and env["GRAINERY_METRICS_PORT"] == "9100"
    assert set(GRAINERY_VAR.findall(" ".join(env))) <= deploy.contract.env_vars
    # examples/ is copied in and importable, for GRAINERY_GRAINS=examples.agents.
    assert any("examples" in c for c in deploy.image_instructions("COPY"))
    assert env.get("PYTHONPATH")


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_has_the_expected_services(deploy: Any) -> None:
    assert {"redis", *FIXED_SILOS, "prometheus", "grafana"} <= set(deploy.services)
    assert set(FIXED_SILOS) <= set(deploy.silo_services(include_profiles=False))


def test_redis_persists_and_reports_health(deploy: Any) -> None:
    redis = deploy.services["redis"]
    assert redis["image"].startswith("redis:7")
    argv = deploy.argv(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] in ("everysec", "always")
    assert "ping" in deploy.argv(redis["healthcheck"]["test"])
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


@pytest.mark.parametrize("name", [*FIXED_SILOS, "silo"])
def test_silo_service_shape(deploy: Any, name: str) -> None:
    svc = deploy.services[name]
    build = svc["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert svc["image"]
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert deploy.argv(svc["healthcheck"]["test"])[1:3] == ["grainery", "health"]
    env = deploy.service_env(name)
    assert env["GRAINERY_REDIS_URL"].startswith("redis://redis:6379")
    assert env["GRAINERY_GRAINS"] == "examples.agents"
    assert env.get("GRAINERY_LOG_FORMAT", "human") in ("human", "json")
    # Docker must wait longer than the drain before it falls back to SIGKILL.
    assert seconds(svc["stop_grace_period"]) > drain_timeout(deploy, env)


def test_silo_env_and_flags_are_documented(deploy: Any) -> None:
    allowed = deploy.contract.env_vars
    flags = set(deploy.contract.flag_of.values())
    for name in deploy.silo_services():
        svc = deploy.services[name]
        unknown = set(deploy.env_dict(svc.get("environment"))) - allowed
        assert not unknown, f"{name}: env vars the silo does not read: {unknown}"
        argv = deploy.argv(svc.get("command"))
        used = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        assert used <= flags, f"{name}: unknown flags {used - flags}"


def test_fixed_silos_have_distinct_ids_addresses_and_ports(deploy: Any) -> None:
    envs = {n: deploy.service_env(n) for n in FIXED_SILOS}
    assert len({e["GRAINERY_SILO_ID"] for e in envs.values()}) == len(FIXED_SILOS)
    host_ports = set()
    for name, env in envs.items():
        # The advertised address must be reachable on the compose network: own name, own port.
        assert env["GRAINERY_ADVERTISE"] == f"{name}:{env['GRAINERY_PORT']}"
        mappings = [str(m).rsplit(":", 1) for m in deploy.services[name]["ports"]]
        (host,) = [h for h, container in mappings if container == env["GRAINERY_PORT"]]
        host_ports.add(host)
        # The web dashboard is published too (the image's GRAINERY_DASHBOARD_PORT).
        assert [c for _, c in mappings if c != env["GRAINERY_PORT"]] == \
            [env["GRAINERY_DASHBOARD_PORT"]]
    assert len(host_ports) == len(FIXED_SILOS)


def test_scalable_silo_derives_identity_per_container(deploy: Any) -> None:
    svc = deploy.services["silo"]
    assert svc["profiles"], "keep the scalable variant out of a plain `up`"
    env = deploy.env_dict(svc.get("environment"))
    assert "GRAINERY_SILO_ID" not in env and "GRAINERY_ADVERTISE" not in env
    # A fixed host port would clash between replicas; only the container port is given.
    assert all(":" not in str(p) for p in svc.get("ports", []))
    assert deploy.service_env("silo")["GRAINERY_HOST"] == "0.0.0.0"


def test_grains_module_exists(deploy: Any) -> None:
    modules = {deploy.service_env(n)["GRAINERY_GRAINS"] for n in deploy.silo_services()}
    for module in modules:
        path = REPO / (module.replace(".", "/") + ".py")
        if not path.exists():
            pytest.skip(f"{path.relative_to(REPO)} is not written yet")


def test_mounted_config_files_exist(deploy: Any) -> None:
    for name in ("prometheus", "grafana"):
        for volume in deploy.services[name]["volumes"]:
            source = str(volume).split(":", 1)[0]
            assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


# --- Prometheus and Grafana -----------------------------------------------------------------


def test_prometheus_scrapes_every_silo(deploy: Any) -> None:
    jobs = deploy.prometheus["scrape_configs"]
    targets = {t for job in jobs for sc in job.get("static_configs", []) for t in sc["targets"]}
    dns_names = {n for job in jobs for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    for job in jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    for name in deploy.silo_services():
        port = deploy.service_env(name)["GRAINERY_METRICS_PORT"]
        assert f"{name}:{port}" in targets or name in dns_names, f"{name} is not scraped"


def test_grafana_provisioning_points_at_dashboard_and_prometheus(deploy: Any) -> None:
    import yaml

    prov = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((prov / "dashboards" / "grainery.yml").read_text())["providers"]
    mounts = dict(str(v).split(":")[:2] for v in deploy.services["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    uids = {t["datasource"]["uid"] for t in _targets(deploy.dashboard)}
    assert uids == {source["uid"]}


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


def family(series: str) -> str:
    return re.sub(r"_(bucket|count|sum)$", "", series)


def test_dashboard_queries_only_documented_metrics(deploy: Any) -> None:
    used = {family(m) for m in deploy.dashboard_series}
    assert used, "no PromQL in the dashboard?"
    assert used <= deploy.contract.metric_families, used - deploy.contract.metric_families


def test_dashboard_tells_the_story(deploy: Any) -> None:
    used = {family(m) for m in deploy.dashboard_series}
    for needed in ("grainery_cluster_members", "grainery_activations", "grainery_calls_total",
                   "grainery_call_duration_seconds", "grainery_activations_created_total",
                   "grainery_deactivations_total", "grainery_storage_duration_seconds",
                   "grainery_gateway_calls_total"):
        assert needed in used, needed
    exprs = " ".join(t["expr"] for t in _targets(deploy.dashboard))
    for grouping in ("by (grain_type)", "by (grain_type, method)", 'route="forwarded"',
                     'outcome!="ok"'):
        assert grouping in exprs, grouping
    quantiles = re.findall(r"histogram_quantile\(.*?(grainery_\w+_bucket)", exprs)
    assert "grainery_call_duration_seconds_bucket" in quantiles
    titles = [p["title"] for p in deploy.dashboard["panels"]]
    assert len(titles) == len(set(titles))


# --- Kubernetes -----------------------------------------------------------------------------


def _container(deploy: Any) -> dict[str, Any]:
    (deployment,) = deploy.k8s("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _pod_env(deploy: Any) -> dict[str, str]:
    """The container's env as the pod sees it: image ENV, then envFrom ConfigMaps, then env."""
    env = dict(deploy.image_env)
    maps = {c["metadata"]["name"]: c["data"] for c in deploy.k8s("ConfigMap")}
    container = _container(deploy)
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e.get("value", "<from>") for e in container["env"]})
    return env


def test_k8s_has_all_objects_and_no_namespace(deploy: Any) -> None:
    kinds = {d["kind"] for d in deploy.k8s_docs}
    assert {"ConfigMap", "Secret", "Deployment", "PodDisruptionBudget", "Service",
            "StatefulSet"} <= kinds
    assert all("namespace" not in d.get("metadata", {}) for d in deploy.k8s_docs)
    assert (DEPLOY / "k8s" / "README.md").exists()


def test_kustomization_applies_every_manifest() -> None:
    import yaml

    k8s = DEPLOY / "k8s"
    resources = set(yaml.safe_load((k8s / "kustomization.yaml").read_text())["resources"])
    manifests = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == manifests


def test_k8s_env_names_are_silo_settings(deploy: Any) -> None:
    allowed = deploy.contract.env_vars
    container = _container(deploy)
    names = {e["name"] for e in container["env"]}
    names |= {k for c in deploy.k8s("ConfigMap") for k in c["data"]}
    assert {n for n in names if n.startswith("GRAINERY_")} <= allowed
    secrets = {s["metadata"]["name"]: s for s in deploy.k8s("Secret")}
    for e in container["env"]:
        if ref := e.get("valueFrom", {}).get("secretKeyRef"):
            assert ref["key"] in secrets[ref["name"]]["stringData"]


def test_k8s_identity_from_downward_api(deploy: Any) -> None:
    env = _container(deploy)["env"]
    names = [e["name"] for e in env]
    by_name = {e["name"]: e for e in env}
    assert by_name["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert by_name["GRAINERY_SILO_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert by_name["GRAINERY_ADVERTISE"]["value"] == "$(POD_IP):7070"
    # $(VAR) only expands variables defined earlier in the list.
    assert names.index("POD_IP") < names.index("GRAINERY_ADVERTISE")
    assert _pod_env(deploy)["GRAINERY_HOST"] == "0.0.0.0"


def test_k8s_probes_ports_and_grace_period(deploy: Any) -> None:
    (deployment,) = deploy.k8s("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deploy)
    assert deployment["spec"]["replicas"] == 3
    assert 7070 in {p["containerPort"] for p in container["ports"]}
    assert _pod_env(deploy)["GRAINERY_PORT"] == "7070"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 7070, probe
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
    pre_stop_s = float(pre_stop["command"][-1]) if pre_stop.get("command") else 0.0
    drain = drain_timeout(deploy, _pod_env(deploy))
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain


def test_k8s_security_and_resources(deploy: Any) -> None:
    (deployment,) = deploy.k8s("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deploy)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    assert Path(_pod_env(deploy)["GRAINERY_DATA_DIR"]).is_relative_to("/tmp")
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_k8s_pdb_service_and_secret(deploy: Any) -> None:
    (deployment,) = deploy.k8s("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (pdb,) = deploy.k8s("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service,) = [s for s in deploy.k8s("Service") if s["metadata"]["name"] == "grainery"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert 7070 in {p["port"] for p in service["spec"]["ports"]}
    metrics_port = _pod_env(deploy)["GRAINERY_METRICS_PORT"]
    assert service["metadata"]["annotations"]["prometheus.io/port"] == metrics_port
    (secret,) = deploy.k8s("Secret")
    assert all("CHANGE-ME" in v for v in secret["stringData"].values()), "placeholders only"


def _redis(deploy: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    (statefulset,) = deploy.k8s("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return statefulset, container


def _flag(argv: list[str], name: str) -> str:
    assert name in argv, f"redis-server {name} missing from {argv}"
    return str(argv[argv.index(name) + 1])


def test_k8s_redis_persists_every_acknowledged_write(deploy: Any) -> None:
    """The in-cluster store: AOF fsynced before each reply, on a volume that outlives the pod,
    never evicting grain state."""
    statefulset, container = _redis(deploy)
    assert statefulset["spec"]["replicas"] == 1
    assert container["image"].startswith("redis:7")
    argv = [str(a) for a in container.get("command", []) + container["args"]]
    assert _flag(argv, "--appendonly") == "yes"
    assert _flag(argv, "--appendfsync") == "always"
    assert _flag(argv, "--maxmemory-policy") == "noeviction"
    data_dir = _flag(argv, "--dir")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == data_dir, "the AOF must be on the claim"
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]


def test_k8s_silos_reach_the_redis_with_its_password(deploy: Any) -> None:
    statefulset, redis = _redis(deploy)
    secrets = {s["metadata"]["name"]: s for s in deploy.k8s("Secret")}

    def secret_ref(env: list[dict[str, Any]], name: str) -> tuple[str, str]:
        (entry,) = [e for e in env if e["name"] == name]
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"]
        return ref["name"], ref["key"]

    argv = [str(a) for a in redis["args"]]
    password_var = _flag(argv, "--requirepass")
    assert re.fullmatch(r"\$\(\w+\)", password_var), "requirepass comes from the Secret"
    redis_secret = secret_ref(redis["env"], password_var[2:-1])

    silo_env = _container(deploy)["env"]
    names = [e["name"] for e in silo_env]
    url = {e["name"]: e.get("value", "") for e in silo_env}["GRAINERY_REDIS_URL"]
    parsed = re.fullmatch(r"redis://:\$\((\w+)\)@([\w.-]+):(\d+)/\d+", url)
    assert parsed, url
    password, host, port = parsed.groups()
    assert secret_ref(silo_env, password) == redis_secret, "same password as the Redis"
    assert names.index(password) < names.index("GRAINERY_REDIS_URL")  # $(VAR) order

    (service,) = [s for s in deploy.k8s("Service") if s["metadata"]["name"] == host]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    container_ports = {p["name"]: p["containerPort"] for p in redis["ports"]}
    assert service_port["targetPort"] in (*container_ports, *container_ports.values())
    (silos,) = [s for s in deploy.k8s("Service") if s["metadata"]["name"] == "grainery"]
    assert not silos["spec"]["selector"].items() <= pod_labels.items(), \
        "the silos' Service must not select the Redis pod"


# --- user-facing text -----------------------------------------------------------------------

USER_FACING = [DEPLOY / "README.md", DEPLOY / "Dockerfile", DEPLOY / "docker-compose.yml",
               *sorted((DEPLOY / "k8s").glob("*"))]


@pytest.mark.parametrize("path", USER_FACING, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_notes_to_developers(path: Path) -> None:
    """What users read talks to users: no test files, TODOs or notes about the code base."""
    text = path.read_text().lower()
    for phrase in ("tests/", "todo", "fixme", "contract", "not written yet", "confirmed"):
        assert phrase not in text, f"{path.name}: {phrase!r}"


def test_dockerfile_example_matches_the_tour() -> None:
    readme = (REPO / "README.md").read_text()
    assert "# mygrains.py" in readme and "--grains mygrains" in readme
    for path in (DEPLOY / "Dockerfile", DEPLOY / "README.md"):
        text = path.read_text()
        assert "COPY mygrains.py /app/" in text, path.name
        assert "GRAINERY_GRAINS=mygrains" in text, path.name


def test_compose_walkthrough_says_how_to_get_the_cli() -> None:
    text = (DEPLOY / "README.md").read_text()
    walkthrough = text[text.index("## docker compose walkthrough"):]
    assert "pip install" in walkthrough
    assert "compose -f deploy/docker-compose.yml exec silo1 grainery" in " ".join(
        walkthrough.split())
