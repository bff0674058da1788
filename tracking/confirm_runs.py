"""MLflow side of ``camotune confirm``: child runs under the sweep's parent run, confirm.csv on
the parent, and the winner registered as ``camotune-<sweep>`` with the alias ``champion``."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from camotune.tracking.runs import ensure_experiment
from camotune.tracking.sweep_runs import read_run_map
from camotune.tracking.writer import resolve_tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"


def model_name(sweep_name: str) -> str:
    return f"camotune-{sweep_name}"


def log_confirm(settings, rows: list[dict[str, Any]], summary, csv_path: Path, *,
                register: bool) -> str | None:
    """Log the reruns and the summary; register the winner. Returns the registered model's
    version, or None. Tracking problems are logged, never fatal: the reruns are on disk."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(settings.tracking_uri, settings.storage_path)
    client = mlflow.MlflowClient(uri)
    runs_map = read_run_map(settings.sweep_dir, uri) or {}
    parent = runs_map.get("parent_run_id")
    experiment_id = runs_map.get("experiment_id") or ensure_experiment(
        client, settings.experiment, uri)
    winner = str(summary.iloc[0]["trial_id"])
    version = None
    try:
        runs: dict[tuple[str, int], str] = {}
        for row in rows:
            tags = {"camotune.confirm": "true", "camotune.trial_id": row["trial_id"]}
            if parent:
                tags["mlflow.parentRunId"] = parent
            run = client.create_run(experiment_id, tags=tags,
                                    run_name=f"confirm-{row['trial_id']}-seed{row['seed']}")
            stamp = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[
                Metric(k.replace("/", "."), float(v), stamp, 0) for k, v in row.items()
                if isinstance(v, float) and k != "seed"], params=[Param("seed", str(row["seed"]))])
            client.set_terminated(run.info.run_id, "FINISHED")
            runs[(row["trial_id"], row["seed"])] = run.info.run_id
        if parent:
            client.log_artifact(parent, str(csv_path))
            top = summary.iloc[0]
            client.log_metric(parent, "confirm.val_iou_mean", float(top["val_iou_mean"]))
            client.log_metric(parent, "confirm.val_iou_std", float(top["val_iou_std"]))
            client.set_tag(parent, "camotune.champion_trial", winner)
        if register:
            best = best_rerun(rows, winner)
            version = _register(uri, runs[(winner, best["seed"])], Path(best["checkpoint"]),
                                model_name(settings.name))
            log.info("registered %s version %s as %r (trial %s, seed %d)",
                     model_name(settings.name), version, CHAMPION, winner, best["seed"])
    except (MlflowException, OSError) as exc:
        log.warning("mlflow: confirm results not fully logged (%s); they are in %s",
                    str(exc).splitlines()[0], csv_path)
    return version


def _register(uri: str, run_id: str, checkpoint: Path, name: str) -> str:
    """Log the checkpoint's weights as an MLflow PyTorch model in ``run_id`` and register it."""
    import mlflow
    import torch

    from camotune.trainer.evaluate import load_model

    model, _, _ = load_model(checkpoint, torch.device("cpu"))
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    import inspect

    options: dict[str, Any] = {"pip_requirements": [
        f"torch=={torch.__version__.split('+')[0]}", "timm", "camotune"]}
    if "serialization_format" in inspect.signature(mlflow.pytorch.log_model).parameters:
        # MLflow 3's default (pt2, an exported graph) needs an input example and a traceable
        # forward; the pickled module loads back as the same CamoXpert.
        options["serialization_format"] = "pickle"
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(model, name="model", **options)
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
    version = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return str(version.version)


def best_rerun(rows: list[dict[str, Any]], trial_id: str) -> dict[str, Any]:
    """The winning config's rerun with the highest best val_iou (its weights are registered)."""
    mine = [r for r in rows if r["trial_id"] == trial_id]
    return max(mine, key=lambda r: r["best_val_iou"] if math.isfinite(r["best_val_iou"]) else -1)
