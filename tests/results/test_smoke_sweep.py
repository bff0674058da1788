"""A real smoke sweep (4 trials, local Ray): what it leaves behind, `camotune results`,
`camotune export` and the export -> train round trip, exact on the CPU."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml

from camotune.cli import main
from camotune.results.export import exported_config
from camotune.results.read import load_sweep
from camotune.trainer.config import from_dict, load_yaml
from camotune.trainer.history import read_history

PLOTS = ("learning_curves", "params_vs_iou", "rung_bias", "compute")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`camotune sweep --space smoke --num-samples 4` on 20 synthetic 64-px images."""
    import ray

    from camotune.trainer.synth import synth

    root = tmp_path_factory.mktemp("results-smoke")
    data = synth(root / "data", n_train=20, n_test=2, size=64, seed=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code = main(["sweep", "--space", "smoke", "--dataset-path", str(data),
                     "--storage-path", str(root / "runs"), "--name", "smoke", "--seed", "5",
                     "--num-samples", "4", "--max-concurrent", "2",
                     "--keep-checkpoints", "none"])
    finally:
        ray.shutdown()
    assert code == 0
    return root / "runs" / "smoke"


@pytest.mark.slow
def test_sweep_end_writes_the_results_files(smoke: Path) -> None:
    for name in ("leaderboard.csv", "best_config.yaml", "best_command.txt"):
        assert (smoke / name).is_file(), name
    board = pd.read_csv(smoke / "leaderboard.csv")
    assert len(board) == 4
    best = board["best_val_iou"].dropna()
    assert list(best) == sorted(best, reverse=True)
    cfg = load_yaml(str(smoke / "best_config.yaml"))
    assert cfg.epochs == 6 and cfg.img_size == 64
    text = (smoke / "best_command.txt").read_text()
    assert text.endswith("\n") and text.count("\n") == 1  # one line, newline-terminated
    line = text.strip()
    assert line.startswith("camotune train ") and f"--threads {cfg.threads}" in line
    for name in ("learning_curves", "params_vs_iou", "compute"):
        assert (smoke / "plots" / f"{name}.png").stat().st_size > 5_000


@pytest.mark.slow
def test_results_json_and_plots(smoke: Path, tmp_path: Path, capsys) -> None:
    assert main(["results", str(smoke), "--format", "json", "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)  # stdout holds the JSON alone
    assert len(rows) == 4
    ids = {p.name for p in (smoke / "trials").iterdir()}
    for row in rows:
        assert row["trial_id"] in ids
        assert row["stop_reason"] in ("completed", "asha_stopped", "collapsed", "diverged")
        assert row["epochs"] == len(row["val_iou_history"]) >= 1
        history = read_history(smoke / "trials" / row["trial_id"] / "history.csv")
        assert row["val_iou_history"] == [r["val_iou"] for r in history][:row["epochs"]]
        assert row["best_val_iou"] == max(v for v in row["val_iou_history"] if v is not None)
        assert from_dict(row["config"]).epochs == 6
        assert row["compute_seconds"] > 0 and row["lr_stage1"] > 0
        assert row["compute_unit"] == "cpu" and row["gpu_seconds"] == row["compute_seconds"]
        if row["stop_reason"] == "asha_stopped":
            assert row["rung"] == 2 and row["epochs"] == 2
    for name in PLOTS:
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000, name
    assert "importance: skipped" in out.err  # 4 trials: too few for fANOVA


@pytest.mark.slow
def test_export_yaml_json_load_back(smoke: Path, capsys) -> None:
    expected, _ = exported_config(load_sweep(smoke), 2)
    for fmt, parse in (("yaml", yaml.safe_load), ("json", json.loads)):
        assert main(["export", str(smoke), "--format", fmt, "--rank", "2"]) == 0
        assert from_dict(parse(capsys.readouterr().out)) == expected
    assert main(["export", str(smoke), "--rank", "9"]) == 2


@pytest.mark.slow
def test_exported_line_reproduces_the_trial(smoke: Path, capsys, monkeypatch) -> None:
    """Run the exported line as printed: the epochs the trial ran come out bit for bit. The
    trial taken is one stopped early (by ASHA or the collapse stopper: with this seed two
    trials collapse at epoch 4): its export runs all 6 epochs, of which the first must match."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = load_sweep(smoke)
    board = sweep.trials.sort_values("best_val_iou", ascending=False).reset_index(drop=True)
    early = board.index[board["best_val_iou"].notna() & (board["epochs"] < 6)]
    assert len(early), "no trial stopped early: the test would not test the prefix"
    rank = int(early[0]) + 1  # the best of them: the most non-zero values to compare
    assert main(["export", str(smoke), "--rank", str(rank)]) == 0
    line = capsys.readouterr().out.strip()
    argv = shlex.split(line)
    assert argv[:2] == ["camotune", "train"]
    assert main(argv[1:]) == 0
    out = Path(argv[argv.index("--checkpoint-dir") + 1])
    assert out.parent == smoke.resolve() / "exports"
    rerun = read_history(out / "history.csv")
    trial = board.iloc[rank - 1]
    ran = int(trial["epochs"])
    assert len(rerun) == 6 and ran < 6
    assert [r["val_iou"] for r in rerun[:ran]] == trial["val_iou_history"]
    original = read_history(smoke / "trials" / trial["trial_id"] / "history.csv")[:ran]
    for key in ("train_loss", "val_loss", "val_fg_ratio"):
        assert [r[key] for r in rerun[:ran]] == [r[key] for r in original], key
