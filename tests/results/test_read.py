"""Reading sweep folders written by hand (trials.jsonl + history.csv): statuses, torn lines,
running trials, the leaderboard formats, export picking, and the attribution table's glue."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from camotune.cli import main
from camotune.errors import BadInput
from camotune.results import leaderboard
from camotune.results.collapse import attribution_table, collapse_report, design_levels
from camotune.results.export import exported_config, pick, render
from camotune.results.read import load_sweep
from camotune.search.settings import SweepSettings
from camotune.spaces import Space, load_space
from camotune.trainer.config import TrainConfig, from_dict, to_dict
from camotune.trainer.history import HistoryWriter

SPACE = {"name": "fake", "description": "a sampled space",
         "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                    "batch_size": {"type": "choice", "values": [4, 8, 16]}},
         "fixed": {"epochs": 6, "stage1_epochs": 4}}


def write_sweep(root: Path, space: Space, *, scheduler: str = "asha") -> Path:
    """A sweep folder with sweep.yaml written as `camotune sweep` writes it."""
    base = TrainConfig(dataset_path="/data/cod", backbone="edgenext_xx_small", pretrained=False)
    settings = SweepSettings(name="fake", storage_path=str(root), space=space,
                             space_source="fake", base=base, scheduler=scheduler)
    folder = root / "fake"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    return folder


class Events:
    """Writes trials.jsonl lines and history.csv files the way the driver and trials do."""

    def __init__(self, folder: Path, space: Space) -> None:
        self.folder, self.space, self.t = folder, space, 1000.0
        self.base = TrainConfig(dataset_path="/data/cod", backbone="edgenext_xx_small",
                                pretrained=False)

    def _line(self, event: dict[str, Any], text: str | None = None) -> None:
        self.t += 1.0
        with (self.folder / "trials.jsonl").open("a") as fh:
            fh.write((text if text is not None else json.dumps({"time": self.t, **event})) + "\n")

    def start(self, tid: str, params: dict[str, Any], *, restored: bool = False) -> None:
        cfg = self.space.apply(self.base, params)
        cfg = from_dict({"checkpoint_dir": str(self.folder / "trials" / tid), "threads": 1}, cfg)
        (self.folder / "trials" / tid).mkdir(parents=True, exist_ok=True)
        self._line({"event": "start", "trial_id": tid, "params": params, "config": to_dict(cfg),
                    "trial_dir": f"trials/{tid}", "lr_stage1": cfg.resolved_lr(1),
                    "lr_stage2": cfg.resolved_lr(2), "restored": restored,
                    "resources": {"cpu": 2.0, "gpu": 0.0}})

    def epochs(self, tid: str, ious: list[float | None], *, history: bool = True,
               ema: list[float] | None = None, first: int = 1) -> None:
        path = self.folder / "trials" / tid / "history.csv"
        writer = HistoryWriter(path, keep_until=first - 1) if history else None
        for i, iou in enumerate(ious):
            n = first + i
            m = {"epoch": n, "stage": 1 if n <= 4 else 2, "val_iou": iou, "val_iou_raw": iou,
                 "val_iou_ema": None if ema is None else ema[i], "best_val_iou": iou,
                 "train_loss": 1.0 / n, "val_dice": None if iou is None else iou + 0.1}
            if writer is not None:
                writer.append(m)
            self._line({"event": "epoch", "trial_id": tid, "epoch": n, "metrics": m,
                        "seconds": 10.0 * n})

    def end(self, tid: str, reason: str, epochs: int, *, rung: int | None = None) -> None:
        self._line({"event": "end", "trial_id": tid, "stop_reason": reason, "rung": rung,
                    "epochs": epochs, "best_val_iou": None, "last_val_iou": None,
                    "gpu_seconds": 20.0 * epochs, "message": "", "evidence": {}})

    def raw(self, text: str) -> None:
        self._line({}, text)


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
    assert df.loc["t2", "gpu_seconds"] == 2.0 * 30.0  # CPUs x seconds so far
    assert df.loc["t1", "rung"] == 2 and df.loc["t1", "gpu_seconds"] == 40.0
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
                    "last_val_iou", "val_iou_history", "gpu_seconds", "config", "lr_stage1",
                    "lr_stage2"):
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


@pytest.mark.slow
def test_plots_importance_rung_bias_and_edge_warning(tmp_path: Path) -> None:
    """Ten trials, val_iou planted on the LR alone (best near the top of the range), half of
    them stopped at the first rung: every plot is written, fANOVA ranks the LR first, and the
    best trial's LR at the edge of its range is reported."""
    from camotune.results.plots import write_plots

    space = Space.from_dict(SPACE)
    folder = write_sweep(tmp_path, space)
    ev = Events(folder, space)
    for i in range(10):
        lr = 1e-4 * 10 ** (2 * i / 9)  # 1e-4 ... 1e-2, log-spaced
        tid = f"t{i}"
        ev.start(tid, {"lr": lr, "batch_size": (4, 8, 16)[i % 3]})
        top = 0.05 + 0.05 * i
        if i < 5:
            ev.epochs(tid, [top / 2, top])
            ev.end(tid, "asha_stopped", 2, rung=2)
        else:
            ev.epochs(tid, [top / 2, top, top, top, top, top])
            ev.end(tid, "completed", 6)
    sweep = load_sweep(folder)
    written, notes = write_plots(sweep, tmp_path / "plots")
    assert set(written) == {"learning_curves", "params_vs_iou", "importance", "rung_bias",
                            "compute"}
    for path in written.values():
        assert path.stat().st_size > 5_000
    from camotune.results.importance import param_importances, rung_groups

    imp = param_importances(sweep)
    assert max(imp, key=imp.get) == "lr" and sum(imp.values()) == pytest.approx(1.0)
    judged, passed = rung_groups(sweep)
    assert len(judged) == 10 and int(passed.sum()) == 5
    assert any("lr=0.01 sits at the high edge" in n for n in notes)
    assert not any("skipped" in n for n in notes)
