"""The real command line against a real MLflow server: a smoke sweep killed mid-way and resumed,
an unreachable server, ``camotune train --tracking-uri``. Secrets in the environment and in the
URI must not reach any param or tag."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from camotune.sweepdir.events import read_events
from camotune.tracking import RUNS_FILE
from camotune.tracking.content import STATUS
from camotune.trainer.config import FIELDS
from camotune.trainer.history import read_history

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "camotune"]
SECRETS = ("sekrit", "hunter2pw")


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", RAY_AUTH_TOKEN="sekrit",
               RAY_DEDUP_LOGS="0")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_no_secrets(runs) -> None:
    for run in runs:
        texts = [*run.data.params.values(), *run.data.tags.values(), run.info.run_name or ""]
        leaked = [t for t in texts if any(s in t for s in SECRETS)]
        assert not leaked, f"run {run.info.run_id} logged a secret: {leaked}"


def experiment_runs(client, name: str) -> list:
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def history_steps(client, run_id: str, key: str = "val_iou") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_history(client, run_id: str, key: str, rows: list[dict]) -> None:
    """The run's ``key`` history is history.csv's column: one value per epoch, step = epoch."""
    logged = history_steps(client, run_id, key)
    assert [step for step, _ in logged] == [r["epoch"] for r in rows]
    assert [value for _, value in logged] == pytest.approx([r[key] for r in rows])


def wait_for_saved_end(sweep_dir: Path, proc: subprocess.Popen, deadline_s: float) -> bool:
    """True once a trial has ended and Ray saved its experiment state after that (so the
    resumed sweep does not restore the ended trial); False when the sweep exited first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        ends = [e["time"] for e in read_events(sweep_dir / "trials.jsonl") if e["event"] == "end"]
        states = list(sweep_dir.glob("experiment_state-*.json"))
        if ends and states and max(p.stat().st_mtime for p in states) > min(ends) + 0.5:
            return True
        time.sleep(0.3)
    pytest.fail("no trial ended in time")


def test_smoke_sweep_killed_and_resumed(tmp_path, synth_dataset, mlflow_server):
    """The driver SIGKILLed (with its local Ray) after a trial ended, then `camotune resume`:
    the full trial count, no finished trial trained again, no epoch recorded twice, an
    interrupted trial restored or orphaned; one MLflow run per trial, each closed as it ended."""
    experiment = f"sweep-{uuid.uuid4().hex[:8]}"
    sweep_dir = tmp_path / "runs" / "s"
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "sweep", "--space", "smoke", "--dataset-path", str(synth_dataset),
             "--storage-path", "runs", "--num-samples", "4", "--name", "s",
             "--tracking-uri", mlflow_server.uri, "--experiment", experiment],
            cwd=tmp_path, env=cli_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        killed = wait_for_saved_end(sweep_dir, proc, 400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    assert killed, f"the sweep ended before it could be killed:\n{log.read_text()[-3000:]}"
    before = yaml.safe_load((sweep_dir / RUNS_FILE).read_text())["trials"]
    events_before = read_events(sweep_dir / "trials.jsonl")

    resumed = subprocess.run([*CLI, "resume", "runs/s"], cwd=tmp_path, env=cli_env(),
                             capture_output=True, text=True, timeout=500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "browse it: open " + mlflow_server.uri in resumed.stderr

    client = mlflow_server.client()
    runs = experiment_runs(client, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "s"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    by_trial = {r.data.tags["camotune.trial_id"]: r for r in children}
    events = read_events(sweep_dir / "trials.jsonl")
    started = {e["trial_id"] for e in events if e["event"] == "start"}
    assert len(by_trial) == len(children) and set(by_trial) == started  # one run per trial
    assert all(by_trial[t].info.run_id == run_id for t, run_id in before.items())
    run_map = yaml.safe_load((sweep_dir / RUNS_FILE).read_text())
    assert run_map["trials"] == {t: r.info.run_id for t, r in by_trial.items()}
    assert run_map["parent_run_id"] == parent.info.run_id

    ends = {e["trial_id"]: e for e in events if e["event"] == "end"}
    orphans = {e["trial_id"] for e in events if e["event"] == "orphaned"}
    assert set(ends) | orphans == started
    # the sweep itself: the full trial count, nothing trained or recorded twice
    end_counts = collections.Counter(e["trial_id"] for e in events if e["event"] == "end")
    assert all(n == 1 for n in end_counts.values()), end_counts
    assert len(set(end_counts) - orphans) == 4
    ended_before = {e["trial_id"] for e in events_before if e["event"] == "end"}
    rerun = {e["trial_id"] for e in events[len(events_before):] if e["event"] == "epoch"}
    assert not rerun & ended_before, f"finished trials trained again: {rerun & ended_before}"
    epoch_counts = collections.Counter((e["trial_id"], e["epoch"]) for e in events
                                       if e["event"] == "epoch")
    assert max(epoch_counts.values()) == 1  # no epoch of any trial recorded twice
    busy = {e["trial_id"] for e in events_before if e["event"] == "start"} - ended_before
    restored = {e["trial_id"] for e in events if e["event"] == "start" and e.get("restored")}
    assert busy <= restored | orphans, "an interrupted trial was neither restored nor orphaned"
    for tid, end in ends.items():
        run = by_trial[tid]
        assert run.info.status == STATUS[end["stop_reason"]]
        assert run.data.tags["camotune.stop_reason"] == end["stop_reason"]
        assert run.data.tags.get("camotune.rung") == (
            None if end["rung"] is None else str(end["rung"]))
        rows = read_history(sweep_dir / "trials" / tid / "history.csv")
        assert len(rows) == end["epochs"]
        assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
        assert_history(client, run.info.run_id, "val_iou", rows)
        assert {"config.yaml", "command.txt", "history.csv"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)}
        # the trial wrote where it ran: its own host and GPU, not the driver's
        assert "camotune.environment_of" not in run.data.tags
        assert run.data.tags["camotune.host"] == socket.gethostname()
    for tid in orphans:
        assert by_trial[tid].info.status == "KILLED"
        assert by_trial[tid].data.tags["camotune.orphaned"] == "true"

    best = max(ends.values(), key=lambda e: e["best_val_iou"] or -1.0)
    assert parent.data.metrics["best_val_iou"] == pytest.approx(best["best_val_iou"])
    assert parent.data.metrics["compute_seconds"] == pytest.approx(
        sum(e["gpu_seconds"] for e in ends.values()))
    uploaded = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "sweep.yaml" in uploaded
    for name in ("leaderboard.csv", "best_config.yaml", "best_command.txt", "plots"):
        assert (name in uploaded) == (sweep_dir / name).exists()
    assert_no_secrets(runs)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "runs" / "mlflow.db").exists()


def test_unreachable_server_fails_the_sweep_at_once(tmp_path, synth_dataset):
    """Exit 2 with one line and no sweep folder, in at most 15 s more than a sweep that fails
    a check made just before the tracking check (same imports): on a loaded 2-core machine the
    imports alone can take longer than the check's budget."""
    def sweep(*extra: str) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        result = subprocess.run(
            [*CLI, "sweep", "--space", "smoke", "--dataset-path", str(synth_dataset),
             "--storage-path", "runs", "--name", "u", "--num-samples", "1", *extra],
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=180)
        return result, time.monotonic() - started

    baseline, startup = sweep("--workers-per-trial", "2", "--gpus-per-trial", "0.5")
    assert baseline.returncode == 2 and "--gpus-per-trial" in baseline.stderr
    result, elapsed = sweep("--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "not reachable" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed - startup < 15, f"took {elapsed:.1f} s (startup {startup:.1f} s)"
    assert not (tmp_path / "runs" / "u").exists()


def test_train_with_tracking_uri_logs_one_run(tmp_path, synth_dataset, mlflow_server):
    experiment = f"train-{uuid.uuid4().hex[:8]}"
    uri = mlflow_server.uri.replace("http://", "http://alice:hunter2pw@")
    checkpoints = tmp_path / "ck"
    result = subprocess.run(
        [*CLI, "train", "--dataset-path", str(synth_dataset), "--checkpoint-dir", str(checkpoints),
         "--backbone", "edgenext_xx_small", "--no-pretrained", "--img-size", "64",
         "--epochs", "3", "--stage1-epochs", "2", "--batch-size", "4", "--accumulation-steps", "1",
         "--num-workers", "0", "--threads", "1", "--full-metrics-every", "3",
         "--tracking-uri", uri, "--experiment", experiment],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""  # no "View run" links from MLflow
    assert "hunter2pw" not in result.stderr

    client = mlflow_server.client()
    runs = experiment_runs(client, experiment)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["camotune.stop_reason"] == "completed"
    assert run.data.tags["camotune.kind"] == "train"
    rows = read_history(checkpoints / "history.csv")
    for key in ("val_iou", "train_loss", "lr"):
        assert_history(client, run.info.run_id, key, rows)
    assert [s for s, _ in history_steps(client, run.info.run_id, "val_sm")] == [3]  # empty skipped
    assert set(run.data.params) == set(FIELDS) | {"lr_stage1", "lr_stage2"}
    for tag in ("camotune.version", "camotune.python", "camotune.torch", "camotune.cuda",
                "camotune.gpu", "camotune.gpu_driver", "camotune.host", "camotune.dataset_hash"):
        assert run.data.tags[tag]
    uploaded = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "command.txt", "history.csv", "repro"} <= uploaded
    assert "repro/pip-freeze.txt" in {a.path for a in client.list_artifacts(run.info.run_id,
                                                                            "repro")}
    assert_no_secrets(runs)
