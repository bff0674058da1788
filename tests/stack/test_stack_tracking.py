"""camotune against the tracking stack of a multi-host team: MLflow on PostgreSQL with served
artifacts (see conftest.py), driven through the command line only.

One smoke sweep serves every test here: started, its driver's process group SIGKILLed once a
trial has ended, resumed, and while the resumed sweep trains the tracking server is stopped
and started again (same port, same store). One trial at a time, so that enough of the sweep
is left after the restart: at its end a sweep waits only ~15 s for a server that is down. Then: the run tree read back with MLflow's client
(one run per trial, every epoch logged), a trial's and the sweep's artifacts downloaded over
HTTP, and ``camotune confirm`` registering the champion.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from servers import MlflowServer, clean_env

from camotune.sweepdir.events import read_events
from camotune.trainer.history import read_history

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "camotune"]
NUM_SAMPLES = 6  # one at a time: ~30-50 s of sweep left when the server restarts
EXPERIMENT = "stack"
SWEEP_TIMEOUT_S = 600


@dataclass
class Sweep:
    dir: Path
    root: Path
    run_map_at_kill: dict[str, str]   # trial id -> run id when the driver was killed
    outage_epochs: int                # epoch events recorded while the server was down


def cli_env(root: Path) -> dict[str, str]:
    return clean_env(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", RAY_DEDUP_LOGS="0",
                     OMP_NUM_THREADS="1", CAMOTUNE_CACHE=str(root / "cache"))


def events(sweep_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_events(sweep_dir / "trials.jsonl") if e["event"] == kind]


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 400) -> None:
    """Poll ``condition`` while ``proc`` runs; fail when it exits first or time is up."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def ended_and_saved(sweep_dir: Path) -> bool:
    """A trial has ended and Ray saved its experiment state after that (so the resumed sweep
    does not restore the ended trial)."""
    ends = [e["time"] for e in events(sweep_dir, "end")]
    states = list(sweep_dir.glob("experiment_state-*.json"))
    return bool(ends and states) and max(p.stat().st_mtime for p in states) > min(ends) + 0.5


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, synth_dataset: Path,
          pg_mlflow: MlflowServer) -> Sweep:
    root = tmp_path_factory.mktemp("stack-sweep")
    sweep_dir = root / "runs" / "s"
    with (root / "sweep.log").open("w") as out:
        driver = subprocess.Popen(
            [*CLI, "sweep", "--space", "smoke", "--dataset-path", str(synth_dataset),
             "--storage-path", "runs", "--num-samples", str(NUM_SAMPLES), "--name", "s",
             "--max-concurrent", "1",
             "--tracking-uri", pg_mlflow.uri, "--experiment", EXPERIMENT],
            cwd=root, env=cli_env(root), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(lambda: ended_and_saved(sweep_dir), driver, "a trial ended")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
    run_map = yaml.safe_load((sweep_dir / "mlflow_runs.yaml").read_text())["trials"]

    starts_at_kill = len(events(sweep_dir, "start"))
    with (root / "resume.log").open("w") as out:
        resumed = subprocess.Popen([*CLI, "resume", "runs/s"], cwd=root, env=cli_env(root),
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for(lambda: len(events(sweep_dir, "start")) > starts_at_kill, resumed,
                 "the resumed sweep started a trial")
        # Down while the server restarts (~10-30 s: MLflow's start-up): the trials go on.
        pg_mlflow.stop()
        down_at = len(events(sweep_dir, "epoch"))
        pg_mlflow.start()
        outage = len(events(sweep_dir, "epoch")) - down_at
        resumed.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        if resumed.poll() is None:
            os.killpg(resumed.pid, signal.SIGKILL)
            resumed.wait()
    log = (root / "resume.log").read_text()
    assert resumed.returncode == 0, log[-3000:]
    return Sweep(sweep_dir, root, run_map, outage)


def runs_of(client) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_run_tree_is_complete_after_kill_resume_and_server_restart(
        sweep: Sweep, pg_mlflow: MlflowServer) -> None:
    client = pg_mlflow.client()
    runs = runs_of(client)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags
                and r.data.tags.get("camotune.kind") == "sweep"]
    assert parent.info.run_name == "s" and parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")  # served, not a path
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                and r.data.tags.get("camotune.kind") == "trial"]
    per_trial = collections.Counter(r.data.tags["camotune.trial_id"] for r in children)
    assert all(n == 1 for n in per_trial.values()), per_trial  # no duplicate after the kill
    started = {e["trial_id"] for e in events(sweep.dir, "start")}
    assert set(per_trial) == started
    by_trial = {r.data.tags["camotune.trial_id"]: r for r in children}
    assert all(by_trial[t].info.run_id == r for t, r in sweep.run_map_at_kill.items())

    ends = {e["trial_id"]: e for e in events(sweep.dir, "end")}
    orphans = {e["trial_id"] for e in events(sweep.dir, "orphaned")}
    assert set(ends) | orphans == started
    assert len(set(ends) - orphans) == NUM_SAMPLES
    for tid, end in ends.items():
        run = by_trial[tid]
        assert run.data.tags["camotune.stop_reason"] == end["stop_reason"]
        assert run.info.status in ("FINISHED", "KILLED", "FAILED") and run.info.end_time
        rows = read_history(sweep.dir / "trials" / tid / "history.csv")
        logged = sorted((m.step, m.value) for m in
                        client.get_metric_history(run.info.run_id, "val_iou"))
        # every epoch, the ones trained while the server was down included, reached MLflow
        assert [s for s, _ in logged] == [r["epoch"] for r in rows], tid
        assert [v for _, v in logged] == pytest.approx([r["val_iou"] for r in rows])
    for tid in orphans:
        assert by_trial[tid].info.status == "KILLED"
    # the outage was noticed (calls failed and were replayed) and nothing was lost
    assert sweep.outage_epochs >= 1
    assert int(parent.data.tags.get("camotune.tracking_errors", "0")) >= 1
    assert "unsent=0" in (sweep.root / "resume.log").read_text()


def test_artifacts_download_over_http(sweep: Sweep, pg_mlflow: MlflowServer,
                                      tmp_path: Path) -> None:
    import mlflow.artifacts

    client = pg_mlflow.client()
    runs = runs_of(client)
    [end, *_] = [e for e in events(sweep.dir, "end") if e["stop_reason"] == "completed"] or \
        events(sweep.dir, "end")
    [child] = [r for r in runs if r.data.tags.get("camotune.trial_id") == end["trial_id"]
               and r.data.tags.get("camotune.kind") == "trial"]
    [parent] = [r for r in runs if r.info.run_id == child.data.tags["mlflow.parentRunId"]]
    trial_dir = sweep.dir / "trials" / end["trial_id"]

    def fetch(run, path: str) -> Path:
        return Path(mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=path, dst_path=str(tmp_path / run.info.run_id),
            tracking_uri=pg_mlflow.uri))

    # the trial's history, preview and repro record (config and command line)
    for name in ("history.csv", "preview.png", "config.yaml", "command.txt"):
        assert fetch(child, name).read_bytes() == (trial_dir / name).read_bytes(), name
    assert child.data.tags["camotune.host"] and child.data.tags["camotune.torch"]
    # the sweep's plots and reproducibility record, on the parent run
    plots = fetch(parent, "plots")
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        p.name for p in (sweep.dir / "plots").iterdir())
    assert "torch==" in fetch(parent, "repro/pip-freeze.txt").read_text()
    assert (fetch(parent, "sweep.yaml").read_text() ==
            (sweep.dir / "sweep.yaml").read_text())
    # nothing went to a client-side artifact folder: the server holds them
    assert not (sweep.root / "mlruns").exists() and not (sweep.root / "mlartifacts").exists()
    assert any((pg_mlflow.folder / "artifacts").rglob("history.csv"))


def test_confirm_registers_the_champion(sweep: Sweep, pg_mlflow: MlflowServer) -> None:
    done = subprocess.run([*CLI, "confirm", "runs/s", "--top-k", "1", "--seeds", "1"],
                          cwd=sweep.root, env=cli_env(sweep.root), capture_output=True,
                          text=True, timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not fully logged" not in done.stderr, done.stderr[-3000:]
    client = pg_mlflow.client()
    version = client.get_model_version_by_alias("camotune-s", "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags["camotune.confirm"] == "true"
    winner = run.data.tags["camotune.trial_id"]
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "s"
    assert parent.data.tags["camotune.champion_trial"] == winner
    assert "confirm.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "checkpoint" in {a.path for a in client.list_artifacts(run.info.run_id)}
