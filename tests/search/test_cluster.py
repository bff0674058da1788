"""A two-node, token-authenticated Ray cluster on this machine, driven through the CLI.

``ray start --head`` and a second ``ray start --address`` node (one CPU each, their own
``--temp-dir``, ``HOME`` and token, every port given on 127.0.0.1), then: a wrong or missing
token is one line and exit 2; a sweep through ``--address`` places trials on both nodes; a
``--workers-per-trial 2`` trial spans both nodes and matches a one-worker run of the same
effective batch; a ``--submit`` sweep runs as a Ray job and resumes as one. Every process the
fixture started (and their children) is stopped at the end; ``ray stop`` is never used, as it
would stop every Ray on the machine.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ray_cluster import CLI_TIMEOUT_S, Cluster

from camotune.sweepdir.events import read_events

pytestmark = pytest.mark.slow


# Two epochs (one per stage), 64 px, from scratch: the smallest sweep that runs both stages.
TINY = {"img_size": 64, "backbone": "edgenext_xx_small", "pretrained": False, "epochs": 2,
        "stage1_epochs": 1, "num_workers": 0, "accumulation_steps": 1}
SPACE = {"description": "two trials of two epochs",
         "params": {"lr": {"type": "loguniform", "low": 1e-3, "high": 5e-3}},
         "fixed": {**TINY, "batch_size": 8, "full_metrics_every": 2},
         "sweep": {"scheduler": "fifo", "num_samples": 2}}
# One trial, batch 4 on each of two workers. The MoE load-balancing loss is a statistic of
# the micro-batch (4 images per rank vs 8), so it is off for the comparison.
DDP_SPACE = {"description": "one data-parallel trial",
             "params": {"lr": {"type": "choice", "values": [0.002]}},
             "fixed": {**TINY, "batch_size": 4, "aux_weight": 0.0, "full_metrics_every": 1},
             "sweep": {"scheduler": "fifo", "num_samples": 1}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def spaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("spaces")
    out = {}
    for name, space in (("tiny", SPACE), ("ddp", DDP_SPACE)):
        out[name] = folder / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(space))
    return out


def _ends(sweep: Path) -> list[dict]:
    return [e for e in read_events(sweep / "trials.jsonl") if e["event"] == "end"]


def _nodes(trial_dir: Path) -> list[dict]:
    return json.loads((trial_dir / "node.json").read_text())["workers"]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("camotune ")]


def test_missing_or_wrong_token_is_one_line(cluster: Cluster, synth_dataset: Path,
                                            spaces: dict[str, Path]) -> None:
    runs = cluster.root / "auth-runs"
    sweep = ["sweep", "--space", str(spaces["tiny"]), "--dataset-path", str(synth_dataset),
             "--storage-path", str(runs)]
    cases = {  # they run at once: each is mostly Python start-up
        "gcs, no token": ([*sweep, "--address", cluster.gcs, "--name", "a"], None),
        "gcs, wrong token": ([*sweep, "--address", cluster.gcs, "--name", "b"], "0" * 64),
        "submit, wrong token": (["resume", str(runs / "x"), "--submit", "--address",
                                 cluster.dashboard], "0" * 64),
    }
    if not cluster.job_api():
        cases = {k: v for k, v in cases.items() if "submit" not in k}
    procs = {k: cluster.cli(*args, token=token, wait=False) for k, (args, token) in cases.items()}
    for case, proc in procs.items():
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
        assert proc.returncode == 2, (case, stderr)
        assert "Traceback" not in stderr, (case, stderr)
        [line] = _error_lines(stderr)
        assert "RAY_AUTH_TOKEN" in line, (case, line)
        assert ("rejected the token" in line) == ("wrong" in case), (case, line)
    assert not runs.exists()  # refused before anything was written


def test_sweep_through_address_places_trials_on_both_nodes(
        cluster: Cluster, synth_dataset: Path, spaces: dict[str, Path]) -> None:
    runs = cluster.root / "runs"
    done = cluster.cli("sweep", "--address", cluster.gcs, "--space", str(spaces["tiny"]),
                       "--dataset-path", str(synth_dataset), "--storage-path", str(runs),
                       "--name", "two-nodes", "--cpus-per-trial", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = runs / "two-nodes"
    ends = _ends(sweep)
    assert [e["stop_reason"] for e in ends] == ["completed", "completed"]
    nodes = {w["node_id"] for e in ends for w in _nodes(sweep / "trials" / e["trial_id"])}
    assert len(nodes) == 2  # one CPU per node, two trials at once: one trial on each node


def test_two_workers_match_one_worker_of_the_same_effective_batch(
        cluster: Cluster, synth_dataset: Path, spaces: dict[str, Path], tmp_path: Path) -> None:
    """batch 4 x 2 workers against batch 8 x 1 worker, same seed. Each optimizer step sees the
    same 8 images: the ranks take every other index of one seeded permutation, augmentation
    depends only on (seed, epoch, index), DDP averages the two 4-image mean gradients into
    the 8-image mean, the model has no BatchNorm and the batch-dependent MoE balancing loss
    is off. Validation is sharded and summed. What differs is floating-point summation order:
    continuous metrics agree to 1e-4 (relative); IoU, Dice and the foreground share to 2e-3,
    about one flipped pixel of a 64 px validation image."""
    from camotune.trainer.config import load_yaml
    from camotune.trainer.loop import fit

    runs = cluster.root / "runs"
    done = cluster.cli("sweep", "--address", cluster.gcs, "--space", str(spaces["ddp"]),
                       "--dataset-path", str(synth_dataset), "--storage-path", str(runs),
                       "--name", "ddp", "--workers-per-trial", "2", "--cpus-per-trial", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = runs / "ddp"
    [end] = _ends(sweep)
    assert end["stop_reason"] == "completed"
    trial = sweep / "trials" / end["trial_id"]
    # Two one-CPU nodes: the workers can only run if the coordinating trial holds no CPU.
    workers = _nodes(trial)
    assert [w["rank"] for w in workers] == [0, 1]
    assert len({w["node_id"] for w in workers}) == 2
    with (trial / "history.csv").open() as fh:
        ddp = list(csv.DictReader(fh))
    # Rank 0's reports reached Tune and the driver: one epoch event per epoch, same values.
    epochs = [e for e in read_events(sweep / "trials.jsonl") if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert [e["metrics"]["val_loss"] for e in epochs] == [float(r["val_loss"]) for r in ddp]

    cfg = dataclasses.replace(load_yaml(str(trial / "config.yaml")), batch_size=8,
                              workers_per_trial=1, checkpoint_dir=str(tmp_path / "one"))
    assert cfg.effective_batch(1) == 8 and cfg.effective_batch(2) == 8
    one = fit(cfg).history
    assert len(one) == len(ddp) == 2
    for single, double in zip(one, ddp, strict=True):
        for key in ("train_loss", "val_loss", "val_mae", "val_sm", "val_em", "val_wfm",
                    "grad_norm", "lr", "gt_fg_ratio"):
            assert float(double[key]) == pytest.approx(float(single[key]), rel=1e-4), key
        for key in ("val_iou", "val_dice", "val_fg_ratio"):
            assert float(double[key]) == pytest.approx(float(single[key]), abs=2e-3), key


REAPER_CHECK = """
import logging, sys, time
import ray
from ray.util.queue import Queue
from camotune.search.distributed import _start_reaper
ray.init(address=sys.argv[1], logging_level=logging.ERROR)
pg = ray.util.placement_group([{"CPU": 1}])
ray.get(pg.ready(), timeout=120)
sentinel = Queue(actor_options={"num_cpus": 0})  # stands for the trial's process
reaper = _start_reaper(sentinel.actor)
ray.get(reaper.watch.remote(pg), timeout=120)
ray.kill(sentinel.actor)
deadline = time.monotonic() + 120
while ray.util.placement_group_table(pg)["state"] != "REMOVED":
    assert time.monotonic() < deadline, "placement group still there"
    time.sleep(0.5)
print("removed")
"""


def test_reaper_removes_the_workers_placement_group_of_a_dead_trial(cluster: Cluster) -> None:
    """Ray Train's workers' placement group belongs to the sweep's job, not to the trial: when
    Tune ends a trial's process, the reaper must free it for the next trial."""
    done = subprocess.run([sys.executable, "-c", REAPER_CHECK, cluster.gcs], env=cluster.env(),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0 and done.stdout.split() == ["removed"], done.stderr[-3000:]


JOB_WAIT = """
import sys, time
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
while not client.get_job_status(sys.argv[2]).is_terminal():
    time.sleep(1)
print(client.get_job_status(sys.argv[2]).value)
"""


def test_submitted_sweep_runs_as_a_job_and_resumes_as_one(
        cluster: Cluster, synth_dataset: Path, spaces: dict[str, Path]) -> None:
    """Submit, stop following with Ctrl-C (the job goes on), wait for the job, then resume the
    finished sweep as a second job and follow it to its end."""
    if not cluster.job_api():
        pytest.skip("the head serves no job API: it needs `pip install 'ray[default]'`")
    runs = cluster.root / "runs"
    follower = cluster.cli("sweep", "--submit", "--address", cluster.dashboard, "--space",
                           str(spaces["tiny"]), "--dataset-path", str(synth_dataset),
                           "--storage-path", str(runs), "--name", "submitted", wait=False)
    job_id = follower.stdout.readline().strip()  # stdout holds the job id alone
    assert job_id.startswith("raysubmit_"), follower.communicate(timeout=60)
    time.sleep(2)
    follower.send_signal(signal.SIGINT)
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 130 and not out, err
    assert f"job {job_id} keeps running" in err and "Traceback" not in err
    status = subprocess.run([sys.executable, "-c", JOB_WAIT, cluster.dashboard, job_id],
                            env=cluster.env(), capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S)
    assert status.stdout.split() == ["SUCCEEDED"], status.stderr[-3000:]
    sweep = runs / "submitted"
    assert len(_ends(sweep)) == 2
    assert (sweep / "sweep.yaml").is_file() and (sweep / "leaderboard.csv").is_file()

    again = cluster.cli("resume", str(sweep), "--submit", "--address", cluster.dashboard)
    assert again.returncode == 0, again.stderr[-3000:]
    [resume_id] = again.stdout.split()
    assert resume_id.startswith("raysubmit_") and resume_id != job_id
    assert "sweep submitted finished" in again.stderr  # the job's log was followed to its end
    assert len(_ends(sweep)) == 2  # finished trials are not run again
