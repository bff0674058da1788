"""`camotune why`'s report in MLflow: the verdict and its tables on the sweep's parent run.

The sweep's parent run (the one `SweepTracker` opened, found through the folder's run map)
gets the tags ``camotune.why.verdict.<response>`` and the metrics ``why.<response>.gap``, and
``why.json`` / ``why.txt`` plus one CSV table per response and section (``why/<response>/
undo.csv``, ``apply.csv``, ``shapley.csv``, ``terms.csv``) as artifacts. Without a parent run
(tracking was off or unreachable when the sweep ran) a run named ``why-<sweep>`` is created.
Tracking problems are logged, never fatal: the report is on disk.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from camotune.tracking.content import tag_value, upload_text
from camotune.tracking.runs import ensure_experiment
from camotune.tracking.sweep_runs import read_run_map
from camotune.tracking.writer import resolve_tracking_uri

log = logging.getLogger(__name__)

__all__ = ["log_why", "report_tables"]


def _csv(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else v
                         for k, v in r.items()})
    return out.getvalue()


def report_tables(report: Mapping[str, Any]) -> dict[str, str]:
    """``artifact path -> CSV text`` of every response's undo, apply, Shapley and terms
    tables."""
    out = {}
    for name, r in report.get("responses", {}).items():
        if "error" in r:
            continue
        shapley = [{"factor": f, "value": s["value"], "ci_low": s["ci"][0],
                    "ci_high": s["ci"][1]} for f, s in r["shapley"].items()]
        for section, rows in (("undo", r["undo"]), ("apply", r["apply"]),
                              ("shapley", shapley), ("terms", r["terms"])):
            out[f"why/{name}/{section}.csv"] = _csv(
                [{k: v for k, v in row.items()} for row in rows])
    return out


def log_why(report: Mapping[str, Any], text: str, sweep_dir: str | os.PathLike, *,
            tracking_uri: str, storage_path: str, experiment: str) -> str | None:
    """Log ``report`` (and its ``text``) to the sweep's parent run; the run id, or None when
    tracking failed (logged as a warning)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    sweep_dir = Path(sweep_dir)
    uri = resolve_tracking_uri(tracking_uri, storage_path)
    try:
        client = mlflow.MlflowClient(uri)
        runs_map = read_run_map(sweep_dir, uri) or {}
        run_id = runs_map.get("parent_run_id")
        if not run_id:
            experiment_id = runs_map.get("experiment_id") or ensure_experiment(
                client, experiment, uri)
            run_id = client.create_run(experiment_id, run_name=f"why-{sweep_dir.name}",
                                       tags={"camotune.why": "true"}).info.run_id
            client.set_terminated(run_id, "FINISHED")
        for name, r in report.get("responses", {}).items():
            if "error" in r:
                continue
            client.set_tag(run_id, f"camotune.why.verdict.{name}", tag_value(r["verdict"]))
            for key in ("observed", "fitted"):
                value = r["gap"].get(key)
                if value is not None:
                    client.log_metric(run_id, f"why.{name}.gap_{key}", float(value))
        upload_text(client, run_id, "why.json", json.dumps(report, indent=2))
        upload_text(client, run_id, "why.txt", text)
        for path, body in report_tables(report).items():
            folder, file = path.rsplit("/", 1)
            upload_text(client, run_id, file, body, artifact_path=folder)
        return run_id
    except (MlflowException, OSError) as exc:
        log.warning("mlflow: the why report was not logged (%s); it is in %s",
                    str(exc).splitlines()[0], sweep_dir)
        return None
