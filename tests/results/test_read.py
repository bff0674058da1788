"""Reading sweep folders written by hand (trials.jsonl + history.csv): statuses, torn lines,
running trials, the leaderboard formats, export picking, and the attribution table's glue."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_files import SPACE, Events, write_sweep

from camotune.cli import main
from camotune.errors import BadInput
from camotune.results import leaderboard
from camotune.results.collapse import attribution_table, collapse_report, design_levels
from camotune.results.export import exported_config, pick, render
from camotune.results.read import load_sweep
from camotune.spaces import Space, load_space
from camotune.trainer.config import TrainConfig, from_dict, to_dict


@pytest.fixture
def sampled(tmp_path: Path) -> tuple[Path, Events]:
    space = Space.from_dict(SPACE)
    folder = write_sweep(tmp_path, space)
    ev = Events(folder, space)
    ev.start("t0", {"lr": 1e-3, "batch_size": 4})
    ev.start("t1", {"lr": 1e-2, "batch_size": 16})
    ev.epochs("t0", [0.1, 0.3, 0.35, 0.4, 0.45, 0.5])
    ev.epochs("t1", [0.2, 0.1])
    ev.end("t1", "asha_stopped", 2, rung=2)
    ev.end("t0", "completed", 6)
    ev.start("t2", {"lr": 2e-4, "batch_size": 8})
    ev.epochs("t2", [0.05, 0.6, 0.55], history=False)  # history.csv missing: jsonl fallback
    ev.start("t3", {"lr": 3e-3, "batch_size": 8})
    ev.epochs("t3", [None])
    ev.end("t3", "diverged", 1)
    ev.start("t4", {"lr": 5e-3, "batch_size": 4})  # running, no epoch yet
    ev.raw('{"time": 9999, "event": "epoch", "trial_id": "t2", "ep')  # torn last line
    return folder, ev


def test_statuses_histories_and_torn_line(sampled: tuple[Path, Events]) -> None:
    folder, _ = sampled
    sweep = load_sweep(folder)
    df = sweep.trials.set_index("trial_id")
    assert list(df.index) == ["t0", "t1", "t2", "t3", "t4"]
    assert df["stop_reason"].to_dict() == {"t0": "completed", "t1": "asha_stopped",
                                           "t2": "running", "t3": "diverged", "t4": "running"}
    assert df.loc["t0", "val_iou_history"] == [0.1, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert df.loc["t2", "val_iou_history"] == [0.05, 0.6, 0.55]  # from trials.jsonl
    assert df.loc["t2", "epochs"] == 3 and df.loc["t2", "best_val_iou"] == 0.6
    assert df.loc["t2", "best_epoch"] == 2 and df.loc["t2", "last_val_iou"] == 0.55
    assert df.loc["t2", "compute_seconds"] == 2.0 * 30.0  # CPUs x seconds so far
    assert df.loc["t1", "rung"] == 2 and df.loc["t1", "compute_seconds"] == 40.0
    assert set(df["compute_unit"]) == {"cpu"}  # resources {cpu: 2, gpu: 0}
    assert df["gpu_seconds"].equals(df["compute_seconds"])  # the deprecated alias
    assert math.isnan(df.loc["t3", "best_val_iou"]) and df.loc["t3", "epochs"] == 1
    assert df.loc["t4", "epochs"] == 0 and df.loc["t4", "val_iou_history"] == []
    assert df.loc["t0", "lr"] == 1e-3 and df.loc["t0", "batch_size"] == 4
    assert df.loc["t0", "val_dice_at_best"] == pytest.approx(0.6)
    assert df.loc["t0", "config"]["epochs"] == 6 and sweep.rungs() == [2, 6]


def test_restored_trial_uses_its_latest_start(tmp_path: Path) -> None:
    space = Space.from_dict(SPACE)
    folder = write_sweep(tmp_path, space)
    ev = Events(folder, space)
    ev.start("t0", {"lr": 1e-3, "batch_size": 4})
    ev.epochs("t0", [0.1, 0.2, 0.3])
    ev._line({"event": "interrupted", "trial_id": "t0", "epochs": 3, "seconds": 30.0})
    assert load_sweep(folder).trials.loc[0, "stop_reason"] == "interrupted"
    ev.start("t0", {"lr": 1e-3, "batch_size": 4}, restored=True)
    ev.epochs("t0", [0.25, 0.4], first=3)  # resumed from epoch 2's checkpoint
    row = load_sweep(folder).trials.iloc[0]
    assert row["stop_reason"] == "running" and bool(row["restored"])
    assert row["val_iou_history"] == [0.1, 0.2, 0.25, 0.4]
    ev._line({"event": "orphaned", "trial_id": "t0"})
    assert load_sweep(folder).trials.loc[0, "stop_reason"] == "orphaned"


def test_an_end_survives_a_later_restore(tmp_path: Path) -> None:
    # The driver recorded the end, then died before Ray saved its state: the resumed sweep
    # starts the trial again, which hands Ray its last result and trains nothing.
    space = Space.from_dict(SPACE)
    folder = write_sweep(tmp_path, space)
    ev = Events(folder, space)
    ev.start("t0", {"lr": 1e-3, "batch_size": 4})
    ev.epochs("t0", [0.1, 0.2])
    ev._line({"event": "end", "trial_id": "t0", "stop_reason": "asha_stopped", "rung": 2,
              "epochs": 2, "best_val_iou": 0.2, "last_val_iou": 0.2, "gpu_seconds": 1.0})
    ev.start("t0", {"lr": 1e-3, "batch_size": 4}, restored=True)
    row = load_sweep(folder).trials.iloc[0]
    assert row["stop_reason"] == "asha_stopped" and row["rung"] == 2


def test_leaderboard_order_json_csv(sampled: tuple[Path, Events]) -> None:
    folder, _ = sampled
    sweep = load_sweep(folder)
    recs = leaderboard.records(sweep)
    assert [r["trial_id"] for r in recs] == ["t2", "t0", "t1", "t3", "t4"]
    assert [r["rank"] for r in recs] == [1, 2, 3, None, None]
    for r in recs:
        for key in ("trial_id", "stop_reason", "rung", "epochs", "best_val_iou",
                    "last_val_iou", "val_iou_history", "compute_seconds", "compute_unit",
                    "gpu_seconds", "config", "lr_stage1", "lr_stage2"):
            assert key in r
        assert set(r["config"]) == set(to_dict(TrainConfig(backbone="edgenext_xx_small")))
    json.loads(leaderboard.to_json(sweep))  # strict JSON: no NaN
    csv = pd.read_csv(io.StringIO(leaderboard.to_csv(sweep)))
    assert list(csv["trial_id"]) == ["t2", "t0", "t1", "t3", "t4"]
    assert csv.loc[1, "val_iou_history"] == "0.1;0.3;0.35;0.4;0.45;0.5"
    s = leaderboard.summary(sweep)
    assert s["finished"] == 3 and s["trials"] == 5 and s["best_trial_id"] == "t2"
    assert s["counts"] == {"running": 2, "completed": 1, "asha_stopped": 1, "diverged": 1}
    # full cost: each trial's seconds per epoch x 6 epochs (t4 ran none: counts as it is)
    c = leaderboard.compute(sweep)
    assert c["used"] == pytest.approx(120 + 40 + 60 + 20 + 0)
    assert c["full"] == pytest.approx(120 + 120 + 120 + 120 + 0)
    assert c["unfinished"] == 2 and math.isnan(c["saved_fraction"])  # not saved: not run yet


def test_results_command_formats_and_bad_folder(sampled, tmp_path: Path, capsys) -> None:
    folder, _ = sampled
    assert main(["results", str(folder), "--format", "json"]) == 0
    assert [r["trial_id"] for r in json.loads(capsys.readouterr().out)][:2] == ["t2", "t0"]
    assert main(["results", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "running 2" in out and "t3" in out
    assert "cpu_seconds" in out.splitlines()[3] and "gpu_seconds" not in out
    assert "separates collapsed and diverged" in out  # t3 diverged
    assert main(["results", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "plain").mkdir()
    assert main(["results", str(tmp_path / "plain")]) == 2
    assert main(["export", str(tmp_path / "plain")]) == 2
    assert "not a camotune sweep" in capsys.readouterr().err


def test_export_picks_rank_and_a_fresh_folder(sampled) -> None:
    folder, _ = sampled
    sweep = load_sweep(folder)
    assert pick(sweep, 2)["trial_id"] == "t0"
    with pytest.raises(BadInput, match="only 3 trial"):
        pick(sweep, 4)
    cfg, row = exported_config(sweep, 2)
    assert row["trial_id"] == "t0" and cfg.lr == 1e-3 and cfg.threads == 1
    assert Path(cfg.checkpoint_dir) == (folder / "exports" / "t0-rank2").resolve()
    Path(cfg.checkpoint_dir).mkdir(parents=True)
    again, _ = exported_config(sweep, 2)
    assert Path(again.checkpoint_dir).name == "t0-rank2-2"
    assert from_dict(yaml.safe_load(render(cfg, "yaml"))) == cfg
    assert from_dict(json.loads(render(cfg, "json"))) == cfg
    line = render(cfg, "cli")
    for flag in ("--dataset-path /data/cod", "--epochs 6", "--seed 42", "--threads 1",
                 "--lr 0.001", "--checkpoint-dir"):
        assert flag in line


# -- attribution glue ------------------------------------------------------------------------

def test_attribution_table_from_a_design_sweep(tmp_path: Path) -> None:
    space = load_space("seed-collapse-small")
    folder = write_sweep(tmp_path, space, scheduler="fifo")
    ev = Events(folder, space)
    runs = space.design_trials(42)
    good = {"batch_size": 2}
    # Planted: batch 16 ends near 0 (collapses late); everything else ends at 0.5.
    for i, params in enumerate(runs[:8]):
        tid = f"d{i}"
        ev.start(tid, params)
        bad = params["batch_size"] != good["batch_size"]
        ious = [0.1, 0.2, 0.3, 0.3, 0.2, 0.1, 0.0, 0.0] if bad else [0.1, 0.2, 0.3, 0.4] * 2
        ema = [v - 0.05 for v in ious] if params["use_ema"] else None
        ev.epochs(tid, ious, ema=ema)
        ev.end(tid, "completed", 8)
    ev.start("d8", runs[8])
    ev.epochs("d8", [0.1, 0.2])  # running, before epoch 3: no response yet
    ev.start("d9", runs[9])
    ev.epochs("d9", [0.1])
    ev.end("d9", "collapsed", 1)  # collapsed at epoch 1: epoch-3 response = its last epoch
    sweep = load_sweep(folder)
    table = attribution_table(sweep)
    assert list(table.columns[:2]) == ["trial_id", "stop_reason"]
    assert set(space.searched) <= set(table.columns)
    t = table.set_index("trial_id")
    assert t.loc["d0", "iou_epoch3"] == 0.3 and t.loc["d0", "final_iou"] == 0.4
    assert t.loc["d1", "final_iou"] == 0.0 and t.loc["d1", "batch_size"] == 16
    assert t.loc["d9", "iou_epoch3"] == 0.1 and t.loc["d9", "final_iou"] == 0.1
    assert math.isnan(t.loc["d8", "iou_epoch3"]) and math.isnan(t.loc["d8", "final_iou"])
    ema_rows = t[t["use_ema"].astype(bool) & (t.index != "d8")]
    assert (ema_rows["val_iou_ema"] - ema_rows["val_iou_raw"]).round(9).eq(-0.05).all()
    assert design_levels(sweep)["batch_size"] == (2, 16)
    report = collapse_report(sweep)
    assert report is not None and "### final IoU (`final_iou`)" in report
    assert "Largest estimates, without CIs: batch_size -0.400" in report
