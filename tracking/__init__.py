"""MLflow tracking, without Ray or Optuna: a parent run per sweep, a child run per trial, one
run per ``camotune train``, and the ``camotune confirm`` reruns.

Modules: ``tracker`` (the `Tracker` protocol a sweep's callback calls), ``sweep_tracker``
(`SweepTracker`, the MLflow `Tracker`), ``sweep_runs`` (the sweep's runs and run map),
``train_run`` (`TrainRunTracker`), ``runs`` (one run: create, re-attach, epochs, uploads),
``writer`` (URIs, the reachability check, buffering through outages), ``content`` (names,
params, summary), ``repro`` (versions, git, packages, dataset fingerprint), ``secrets``
(scrubbing), ``confirm_runs`` (confirm's runs and the model registry). MLflow itself is
imported inside the functions that talk to it.
"""

from camotune.tracking.sweep_runs import RUNS_FILE
from camotune.tracking.sweep_tracker import SweepTracker, mlflow_ui_command
from camotune.tracking.tracker import Tracker
from camotune.tracking.train_run import TrainRunTracker
from camotune.tracking.writer import check_reachable, resolve_tracking_uri

__all__ = [
           "RUNS_FILE",
           "SweepTracker",
           "Tracker",
           "TrainRunTracker",
           "check_reachable",
           "mlflow_ui_command",
           "resolve_tracking_uri",
]
