"""camotune confirm: the leaders rerun with several seeds, evaluated, the winner registered."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from camotune.cli import main

SPACE = {
    "description": "three-epoch smoke space for confirm",
    "params": {"lr": {"type": "loguniform", "low": 1e-3, "high": 5e-3},
               "batch_size": {"type": "choice", "values": [4, 8]}},
    "fixed": {"img_size": 64, "backbone": "edgenext_xx_small", "pretrained": False,
              "epochs": 3, "stage1_epochs": 1, "num_workers": 0, "full_metrics_every": 3},
    "sweep": {"scheduler": "fifo", "num_samples": 3},
}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import ray

    from camotune.trainer.synth import synth

    root = tmp_path_factory.mktemp("confirm")
    data = synth(root / "data", n_train=60, n_test=6, size=64, seed=4)
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["sweep", "--space", str(space), "--dataset-path", str(data),
                     "--storage-path", str(root / "runs"), "--name", "c"]) == 0
        assert main(["confirm", str(root / "runs" / "c"), "--top-k", "2", "--seeds", "2"]) == 0
    finally:
        ray.shutdown()
    return root / "runs" / "c"


@pytest.mark.slow
def test_confirm_reruns_top_k_with_each_seed(finished_sweep: Path) -> None:
    table = pd.read_csv(finished_sweep / "confirm.csv")
    assert len(table) == 4 and table["trial_id"].nunique() == 2
    for _, group in table.groupby("trial_id"):
        assert sorted(group["seed"]) == [42, 43]
        assert group["val_iou_mean"].iloc[0] == pytest.approx(group["best_val_iou"].mean())
        assert group["val_iou_std"].iloc[0] == pytest.approx(group["best_val_iou"].std(ddof=1))
    assert {"COD10K/sm", "COD10K/iou", "COD10K/mae"} <= set(table.columns)
    assert table["COD10K/sm"].between(0, 1).all()
    for ckpt in table["checkpoint"]:
        assert Path(ckpt).is_file() and "confirm" in ckpt


@pytest.mark.slow
def test_winner_is_registered_as_champion(finished_sweep: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{finished_sweep.parent / 'mlflow.db'}")
    version = client.get_model_version_by_alias("camotune-c", "champion")
    table = pd.read_csv(finished_sweep / "confirm.csv")
    winner = table.sort_values("val_iou_mean", ascending=False)["trial_id"].iloc[0]
    run = client.get_run(version.run_id)
    assert run.data.tags["camotune.confirm"] == "true"
    assert run.data.tags["camotune.trial_id"] == winner
    parent = run.data.tags["mlflow.parentRunId"]
    names = [a.path for a in client.list_artifacts(parent)]
    assert "confirm.csv" in names
    assert client.get_run(parent).data.tags["camotune.champion_trial"] == winner
