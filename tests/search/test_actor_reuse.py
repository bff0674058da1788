"""Actor reuse: single-worker trials of a 1-slot sweep run one after another in one worker
process, and train exactly as they do in fresh actors. The same sweep checks the declared
objective: EMA 0.9999 without warmup and the default objective (raw) record val_iou =
val_iou_raw every epoch, and the leaderboard ranks on the raw weights."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from camotune.cli import main
from camotune.sweepdir.events import read_events
from camotune.trainer.history import read_history

TIMING = {"epoch_time_s", "imgs_per_s"}

SPACE = {
    "description": "three planted trials, EMA 0.9999 without warmup, objective default",
    "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
               "batch_size": {"type": "choice", "values": [4, 8]}},
    "fixed": {"img_size": 64, "backbone": "edgenext_xx_small", "pretrained": False,
              "epochs": 3, "stage1_epochs": 1, "num_workers": 0, "full_metrics_every": 3,
              "use_ema": True, "ema_decay": 0.9999, "ema_warmup": False},
    "points": [{"lr": 3e-3, "batch_size": 4}, {"lr": 1e-3, "batch_size": 8},
               {"lr": 5e-3, "batch_size": 8}],
    "sweep": {"trial_scheduler": "fifo", "collapse_stopper": False, "num_samples": 3,
              "max_concurrent": 1},
}


@pytest.fixture(scope="module")
def ray_one_slot():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _sweep(root: Path, data: Path, name: str) -> Path:
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    assert main(["sweep", "--space", str(space), "--dataset-path", str(data),
                 "--storage-path", str(root / "runs"), "--name", name, "--seed", "1"]) == 0
    return root / "runs" / name


@pytest.fixture(scope="module")
def sweeps(ray_one_slot, synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    import camotune.search.sweep as sweep_module

    reused = _sweep(tmp_path_factory.mktemp("reuse"), synth_dataset, "reused")
    mp = pytest.MonkeyPatch()
    mp.setattr(sweep_module, "reuse_actors", lambda settings: False)
    try:
        fresh = _sweep(tmp_path_factory.mktemp("fresh"), synth_dataset, "fresh")
    finally:
        mp.undo()
    return reused, fresh


def _by_params(sweep_dir: Path) -> dict[str, dict]:
    """params (as JSON) -> {"trial_id", "epochs": {epoch: metrics}, "config"}."""
    events = read_events(sweep_dir / "trials.jsonl")
    starts = {e["trial_id"]: e for e in events if e["event"] == "start"}
    out = {}
    for tid, start in starts.items():
        epochs = {e["epoch"]: e["metrics"] for e in events
                  if e["event"] == "epoch" and e["trial_id"] == tid}
        out[json.dumps(start["params"], sort_keys=True)] = {
            "trial_id": tid, "epochs": epochs, "config": start["config"]}
    return out


def _pids(sweep_dir: Path) -> list[int]:
    return [json.loads((d / "node.json").read_text())["workers"][0]["pid"]
            for d in sorted((sweep_dir / "trials").iterdir())]


def _close(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in set(a) - TIMING:
        x, y = a[key], b[key]
        if isinstance(x, float) or isinstance(y, float):
            assert x is not None and y is not None and math.isclose(x, y, abs_tol=1e-6), key
        else:
            assert x == y, key


@pytest.mark.slow
def test_trials_share_one_worker_process_with_reuse(sweeps) -> None:
    reused, fresh = sweeps
    assert len(set(_pids(reused))) == 1, _pids(reused)
    assert len(set(_pids(fresh))) == 3, _pids(fresh)


@pytest.mark.slow
def test_reused_actors_train_exactly_as_fresh_ones(sweeps) -> None:
    reused, fresh = map(_by_params, sweeps)
    assert set(reused) == set(fresh) and len(reused) == 3
    for key, r in reused.items():
        f = fresh[key]
        assert sorted(r["epochs"]) == sorted(f["epochs"]) == [1, 2, 3]
        for epoch in r["epochs"]:
            _close(r["epochs"][epoch], f["epochs"][epoch])
        hist_r = read_history(sweeps[0] / "trials" / r["trial_id"] / "history.csv")
        hist_f = read_history(sweeps[1] / "trials" / f["trial_id"] / "history.csv")
        assert len(hist_r) == len(hist_f) == 3
        for a, b in zip(hist_r, hist_f, strict=True):
            _close(a, b)


@pytest.mark.slow
def test_default_objective_is_raw_with_an_unwarmed_ema(sweeps) -> None:
    reused = sweeps[0]
    trials = _by_params(reused)
    for t in trials.values():
        assert t["config"]["objective"] == "raw"
        for metrics in t["epochs"].values():
            assert metrics["val_iou"] == metrics["val_iou_raw"]
            assert metrics["val_iou_ema"] is not None
    with (reused / "leaderboard.csv").open() as f:
        board = list(csv.DictReader(f))
    best_raw = {t["trial_id"]: max(m["val_iou_raw"] for m in t["epochs"].values())
                for t in trials.values()}
    assert [r["trial_id"] for r in board] == sorted(best_raw, key=best_raw.get, reverse=True)
    for r in board:
        assert float(r["best_val_iou"]) == pytest.approx(best_raw[r["trial_id"]], abs=1e-6)
