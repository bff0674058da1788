"""docker/k8s/*.yaml: plain KubeRay and Kubernetes manifests, read without a cluster."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

import pytest
from cluster_files import SWEEP_FLAGS, interpolate, load_compose, sweep_flags


def one(manifests: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    docs = [d for docs in manifests.values() for d in docs if d["kind"] == kind]
    assert len(docs) == 1, f"expected one {kind}, found {len(docs)}"
    return docs[0]


def ray_pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod spec of the head and of every worker group, by group name."""
    specs = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]}
    for group in cluster["spec"]["workerGroupSpecs"]:
        specs[group["groupName"]] = group["template"]["spec"]
    return specs


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["containers"][0]  # KubeRay runs Ray in the first container


def secret_env(c: dict[str, Any], name: str) -> tuple[str, str] | None:
    for var in c.get("env", []):
        if var["name"] == name and "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            return ref["name"], ref["key"]
    return None


def plain_env(c: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in c.get("env", []) if "value" in v}


def test_every_manifest_parses_with_kind_and_name(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert {"raycluster.yaml", "rayjob.yaml", "secret.example.yaml", "pvc.yaml", "mlflow.yaml"} <= set(manifests)
    for name, docs in manifests.items():
        assert docs, name
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name


def test_ray_resources_are_kuberay_v1(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert one(manifests, "RayCluster")["apiVersion"] == "ray.io/v1"
    assert one(manifests, "RayJob")["apiVersion"] == "ray.io/v1"


def test_cluster_runs_the_installed_ray(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert one(manifests, "RayCluster")["spec"]["rayVersion"] == importlib.metadata.version("ray")


def test_ray_start_params_are_strings(manifests: dict[str, list[dict[str, Any]]]) -> None:
    # KubeRay's rayStartParams is map[string]string: a bare number or boolean is rejected.
    cluster = one(manifests, "RayCluster")["spec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_worker_groups_have_gpu_limits_and_the_head_none(manifests: dict[str, list[dict[str, Any]]]) -> None:
    specs = ray_pod_specs(one(manifests, "RayCluster"))
    for group, pod in specs.items():
        limits = container(pod)["resources"].get("limits", {})
        if group == "head":
            assert "nvidia.com/gpu" not in limits
        else:
            assert int(limits["nvidia.com/gpu"]) >= 1, group


def test_every_ray_node_and_the_submitter_read_the_token_from_a_secret(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    secrets = {
        (s["metadata"]["name"], key)
        for s in manifests["secret.example.yaml"] if s["kind"] == "Secret"
        for key in s.get("stringData", {})
    }
    pods = dict(ray_pod_specs(one(manifests, "RayCluster")))
    pods["submitter"] = one(manifests, "RayJob")["spec"]["submitterPodTemplate"]["spec"]
    for group, pod in pods.items():
        c = container(pod)
        assert plain_env(c)["RAY_AUTH_MODE"] == "token", group
        ref = secret_env(c, "RAY_AUTH_TOKEN")
        assert ref in secrets, f"{group}: RAY_AUTH_TOKEN from {ref}"


def test_example_secrets_hold_placeholders_only(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for secret in manifests["secret.example.yaml"]:
        assert "data" not in secret, "base64 data would hide a real value"
        for key, value in secret["stringData"].items():
            assert "REPLACE" in value, key


def mounts(pod: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mount path -> (claim name or volume kind, read-only) for the Ray container."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in container(pod)["volumeMounts"]:
        vol = volumes[m["name"]]
        source = vol["persistentVolumeClaim"]["claimName"] if "persistentVolumeClaim" in vol else m["name"]
        out[m["mountPath"]] = (source, bool(m.get("readOnly")))
    return out


def test_every_node_mounts_the_shared_claims_at_the_same_paths(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    claims = {d["metadata"]["name"] for d in manifests["pvc.yaml"] if d["kind"] == "PersistentVolumeClaim"}
    per_node = [mounts(pod) for pod in ray_pod_specs(one(manifests, "RayCluster")).values()]
    assert len(per_node) >= 2
    for m in per_node:
        assert m["/data/runs"] == ("camotune-runs", False)
        assert m["/data/datasets"] == ("camotune-datasets", True)
        assert {m["/data/runs"][0], m["/data/datasets"][0]} <= claims
    for pvc in manifests["pvc.yaml"]:
        assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every node mounts it at once"


def test_rayjob_targets_the_raycluster(manifests: dict[str, list[dict[str, Any]]]) -> None:
    job = one(manifests, "RayJob")["spec"]
    assert job["clusterSelector"] == {"ray.io/cluster": one(manifests, "RayCluster")["metadata"]["name"]}
    assert job["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    assert not job.get("shutdownAfterJobFinishes"), "a selected cluster is not the job's to delete"


def entrypoint(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    return sweep_flags(shlex.split(one(manifests, "RayJob")["spec"]["entrypoint"]))


def test_rayjob_runs_a_sweep_with_flags_the_cli_accepts(manifests: dict[str, list[dict[str, Any]]]) -> None:
    flags = entrypoint(manifests)
    assert set(flags) <= SWEEP_FLAGS, set(flags) - SWEEP_FLAGS
    assert {"--space", "--dataset-path", "--storage-path", "--tracking-uri"} <= set(flags)


@pytest.mark.slow
def test_rayjob_flags_match_the_sweep_commands_own_help(manifests: dict[str, list[dict[str, Any]]]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "camotune", "sweep", "--help"], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"camotune sweep --help unavailable: {last[:200]}")
    for flag in entrypoint(manifests):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out.stdout), flag


def test_rayjob_paths_and_tracking_server_are_those_of_the_cluster(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    flags = entrypoint(manifests)
    head_mounts = mounts(ray_pod_specs(one(manifests, "RayCluster"))["head"])
    assert flags["--storage-path"] == "/data/runs" and "/data/runs" in head_mounts
    assert flags["--dataset-path"].startswith("/data/datasets/")
    uri = urlparse(flags["--tracking-uri"])
    service = next(d for d in manifests["mlflow.yaml"] if d["kind"] == "Service")
    assert uri.hostname == service["metadata"]["name"]
    assert uri.port in {p["port"] for p in service["spec"]["ports"]}
    for pod in ray_pod_specs(one(manifests, "RayCluster")).values():
        assert plain_env(container(pod))["MLFLOW_TRACKING_URI"] == flags["--tracking-uri"]


def test_no_service_is_exposed_outside_the_cluster(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for docs in manifests.values():
        for doc in docs:
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
            assert doc["kind"] != "Ingress"
    head = one(manifests, "RayCluster")["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"


def test_images_agree_with_compose(manifests: dict[str, list[dict[str, Any]]], env_example: dict[str, str]) -> None:
    services = load_compose("compose.yaml")["services"]
    env = {"POSTGRES_PASSWORD": "x", "MINIO_ROOT_PASSWORD": "x", "RAY_AUTH_TOKEN": "x"}
    camotune_image = interpolate(services["ray-head"]["image"], env)
    assert camotune_image == interpolate(services["ray-worker"]["image"], env) == env_example["CAMOTUNE_IMAGE"]
    pods = dict(ray_pod_specs(one(manifests, "RayCluster")))
    pods["submitter"] = one(manifests, "RayJob")["spec"]["submitterPodTemplate"]["spec"]
    for group, pod in pods.items():
        assert container(pod)["image"] == camotune_image, group
        assert container(pod)["imagePullPolicy"] == "IfNotPresent", group
    mlflow_image = interpolate(services["mlflow"]["image"], env)
    deployment = next(d for d in manifests["mlflow.yaml"] if d["kind"] == "Deployment")
    assert container(deployment["spec"]["template"]["spec"])["image"] == mlflow_image == env_example["MLFLOW_IMAGE"]


def test_tracking_server_runs_the_installed_mlflow(env_example: dict[str, str]) -> None:
    tag = env_example["MLFLOW_IMAGE"].rsplit(":", 1)[1]
    assert tag.removeprefix("v").removesuffix("-full") == importlib.metadata.version("mlflow")


@pytest.mark.slow  # the first mlflow import takes seconds
def test_mlflow_in_the_cluster_answers_its_service_names(manifests: dict[str, list[dict[str, Any]]]) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    deployment = next(d for d in manifests["mlflow.yaml"] if d["kind"] == "Deployment")
    c = container(deployment["spec"]["template"]["spec"])
    hosts = plain_env(c)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for host in ("mlflow:5000", "mlflow.camotune.svc.cluster.local:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(hosts, host), host
    assert not is_allowed_host_header(hosts, "attacker.example")
    assert "--serve-artifacts" in c["command"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
