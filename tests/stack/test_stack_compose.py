"""docker/compose.yaml's own commands, run as local processes on 127.0.0.1, and a sweep
submitted to them.

No Docker engine is needed: the test reads compose.yaml, interpolates it with
docker/.env.example (secrets filled in), and starts the ``mlflow``, ``ray-head`` and
``ray-worker`` services' commands with their environments. What a container gives them is
substituted, and only that (docker/README.md lists the same):

- service names and container ports -> 127.0.0.1 and free ports (``postgres:5432`` -> the
  test's PostgreSQL, ``mlflow:5000``, ``ray-head:6379``, ``--port=6379``, ``8265``), and
  ``0.0.0.0`` -> ``127.0.0.1``: loopback only;
- ``MLFLOW_ARTIFACTS_DESTINATION`` ``s3://...`` -> a local folder: there is no MinIO (nor
  boto3) here, so the S3 settings are dropped; the server still serves the artifacts;
- ``camotune-ray-worker`` -> ``bash docker/ray-worker.sh`` (the image installs the script
  under that name); volume paths (/data/runs, /data/datasets, /cache) -> test folders;
- ``ray`` (in compose's command and in ray-worker.sh) -> this interpreter's Ray, through a
  ``ray`` script first on PATH (a venv layered on another has no ``ray`` in its own bin);
- flags appended to ``ray start`` so the nodes can run beside any other Ray on this machine:
  ``--temp-dir``, the agents' and the Ray client server's ports.

Readiness is compose's own healthchecks (their ``CMD`` commands, ports substituted).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cluster_files import DOCKER, REPO, interpolate, load_compose, read_env_file
from ray_cluster import CLI_TIMEOUT_S, Cluster
from servers import MlflowServer, PostgreSQL, clean_env, free_ports, wait_until

pytestmark = pytest.mark.slow

EXPERIMENT = "compose"
# The smoke space cut to two epochs (one per stage), two trials side by side: the sweep is
# what is checked here, not the search.
SPACE = {"description": "two trials of two epochs",
         "params": {"lr": {"type": "loguniform", "low": 1e-3, "high": 5e-3}},
         "fixed": {"img_size": 64, "backbone": "edgenext_xx_small", "pretrained": False,
                   "epochs": 2, "stage1_epochs": 1, "num_workers": 0, "batch_size": 8,
                   "full_metrics_every": 2},
         "sweep": {"scheduler": "fifo", "num_samples": 2}}


def substitute(value: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        value = value.replace(old, new)
    return value


def ray_on_path(folder: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with a ``ray`` command of this interpreter first on PATH."""
    folder.mkdir(exist_ok=True)
    script = folder / "ray"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ray.scripts.scripts "$@"\n')
    script.chmod(0o755)
    return {**env, "PATH": f"{folder}:{env['PATH']}"}


def healthcheck(service: dict, mapping: dict[str, str], env: dict[str, str]) -> bool:
    """Whether compose's healthcheck of ``service`` (a ``CMD`` list) passes here."""
    kind, *command = service["healthcheck"]["test"]
    assert kind == "CMD", kind
    command = [substitute(c, mapping) for c in command]
    if command[0] == "python":
        command[0] = sys.executable
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: PostgreSQL):
    """(cluster, mlflow, runs folder): compose's mlflow, ray-head and ray-worker, running."""
    root = tmp_path_factory.mktemp("compose")
    cluster = Cluster(root)
    env = read_env_file(DOCKER / ".env.example")
    env.update(POSTGRES_PASSWORD="p" * 32, MINIO_ROOT_PASSWORD="m" * 32,
               RAY_AUTH_TOKEN=cluster.token, HF_HUB_OFFLINE="1",
               MLFLOW_WORKERS="1")  # 4 uvicorn workers would not start in time on 2 cores
    services = interpolate(load_compose("compose.yaml")["services"], env)
    mlflow_port, gcs, dash, client, *agents = free_ports(12)
    mapping = {"postgres:5432": f"127.0.0.1:{postgres.port}",
               "mlflow:5000": f"127.0.0.1:{mlflow_port}",
               "localhost:5000": f"127.0.0.1:{mlflow_port}",
               "ray-head:6379": f"127.0.0.1:{gcs}", "--port=6379": f"--port={gcs}",
               "localhost:8265": f"127.0.0.1:{dash}", "--dashboard-port=8265":
               f"--dashboard-port={dash}", "0.0.0.0": "127.0.0.1",
               "/cache/camotune": str(root / "cache")}
    postgres.create_database(env["POSTGRES_DB"], env["POSTGRES_USER"],
                             env["POSTGRES_PASSWORD"])

    spec = services["mlflow"]
    mlflow_env = {k: substitute(str(v), mapping) for k, v in spec["environment"].items()}
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"] = str(root / "artifacts")  # no MinIO here
    for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del mlflow_env[key]
    command = [substitute(c, mapping) for c in spec["command"]]
    assert command[:2] == ["mlflow", "server"] and str(mlflow_port) not in command
    command[command.index("--port") + 1] = str(mlflow_port)
    server = MlflowServer([sys.executable, "-m", *command], mlflow_port, root,
                          env=clean_env(**mlflow_env))

    def node_env(spec: dict) -> dict[str, str]:
        return ray_on_path(root / "bin", {**cluster.env(), **{
            k: substitute(str(v), mapping) for k, v in spec["environment"].items()}})

    head, worker = services["ray-head"], services["ray-worker"]
    # Loopback and ports of its own, beside any other Ray here; the client server (started
    # when ray[client] is installed) off its default 10001.
    local = ["--temp-dir", str(cluster.temp), "--ray-client-server-port", str(client)]
    try:
        server.start(api_call=False)  # ready when compose's healthcheck says so
        wait_until(lambda: healthcheck(spec, mapping, clean_env()), server.proc, server.log,
                   "compose's mlflow healthcheck")
        cluster.gcs, cluster.dashboard = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}"
        cluster.spawn("head", [*(substitute(c, mapping) for c in head["command"]), *local,
                               *cluster.agent_ports(agents[:4])], node_env(head))
        cluster.wait(lambda: healthcheck(head, mapping, clean_env()), "the Ray head")
        assert worker["command"] == ["camotune-ray-worker"]
        cluster.spawn("worker", ["bash", str(DOCKER / "ray-worker.sh"),
                                 *cluster.agent_ports(agents[4:8])], node_env(worker))
        cluster.wait_for_nodes(2)
        yield cluster, server, root / "runs"
    finally:
        cluster.stop()
        server.stop()


def test_sweep_submitted_to_the_compose_stack_is_tracked_in_its_mlflow(
        stack, synth_dataset: Path) -> None:
    cluster, server, runs = stack
    space = runs.parent / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    # No --tracking-uri: the job's driver runs on the head, with compose's MLFLOW_TRACKING_URI.
    done = subprocess.run(
        [sys.executable, "-m", "camotune", "sweep", "--submit", "--address", cluster.dashboard,
         "--space", str(space), "--dataset-path", str(synth_dataset), "--storage-path",
         str(runs), "--name", "compose", "--experiment", EXPERIMENT],
        cwd=REPO, env=cluster.env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, cluster.logs() + done.stderr[-3000:]
    assert "sweep compose finished" in done.stderr

    client = server.client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:/")
    found = client.search_runs([exp.experiment_id])
    [parent] = [r for r in found if r.data.tags.get("camotune.kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "compose"
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    for run in children:
        assert run.info.status in ("FINISHED", "KILLED")  # completed, or stopped as collapsed
        assert run.data.tags["camotune.stop_reason"] in ("completed", "collapsed")
        assert "history.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # the artifacts are in the server's destination folder, the sweep on the runs volume
    assert len(list((server.folder / "artifacts").rglob("history.csv"))) == 2
    assert (runs / "compose" / "trials.jsonl").is_file()
