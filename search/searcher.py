"""Optuna as the searcher, told the truth about how each trial ended.

Ray's ``OptunaSearch`` tells Optuna COMPLETE with the last reported value for any trial that
reported, so a trial ASHA stopped at epoch 2 would count as finished with its epoch-2 IoU.
`CamotuneOptunaSearch` instead reports intermediate values at step = epoch, ends trials that
stopped before the last epoch as PRUNED, failed trials as FAIL, and completed trials as
COMPLETE with their best ``val_iou``.

The study itself is in memory, so it is saved and restored with Ray's searcher state and stays
consistent with Ray's view after a resume; a copy is written to ``optuna.db`` (sqlite) in the
sweep folder at most every ``EXPORT_EVERY_S`` seconds (when a trial finishes) and at the end of
the sweep (`export_final`), for optuna-dashboard or `optuna.load_study`: copying a study of 64
trials takes about 2 s, which would otherwise block the Tune loop after every trial.

The study's objective is named after the metric (``val_iou``), and each Optuna trial carries
user attributes ``camotune_trial_id`` and, once its MLflow run exists, ``mlflow_run_id`` (read
from the sweep folder's run map while the trial runs).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from camotune.search import compat

log = logging.getLogger(__name__)

SEARCHERS = ("tpe", "qmc", "random")
EXPORT_EVERY_S = 60.0
TRIAL_ID_ATTR = "camotune_trial_id"
RUN_ID_ATTR = "mlflow_run_id"


def make_sampler(kind: str, seed: int):
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)
    if kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown searcher {kind!r}")


class CamotuneOptunaSearch(OptunaSearch):
    """OptunaSearch with honest trial states (see the module docstring)."""

    def __init__(self, *, max_epochs: int, export_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_epochs = max_epochs
        self.export_path = export_path
        self._exported_at = 0.0
        self._linked: set[str] = set()
        self._map_mtime: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_exported_at"], state["_map_mtime"] = 0.0, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_exported_at", 0.0)
        state.setdefault("_linked", set())
        state.setdefault("_map_mtime", None)
        self.__dict__.update(state)

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        study, trials = compat.optuna_study(self), compat.optuna_trials(self)
        if study is not None and not study.metric_names and self.metric:
            import warnings

            with warnings.catch_warnings():  # experimental since Optuna 3.2; stable in use
                warnings.simplefilter("ignore")
                study.set_metric_names([self.metric])
        if trial_id in trials:
            trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
        return config

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore of the saved state, keeping this object's ``export_path``: the
        state was saved in the folder it was created in, which a copied sweep is not."""
        export_path = self.export_path
        super().restore(checkpoint_path)
        self.export_path = export_path

    def export(self, *, force: bool = True) -> bool:
        """Write the study to ``export_path`` (sqlite), replacing the previous copy; without
        ``force`` only when the last copy is ``EXPORT_EVERY_S`` old. True when written."""
        study = compat.optuna_study(self)
        if not self.export_path or study is None:
            return False
        if not force and time.monotonic() - self._exported_at < EXPORT_EVERY_S:
            return False
        import optuna

        final = Path(self.export_path)
        tmp = final.with_name(final.name + ".tmp")
        tmp.unlink(missing_ok=True)
        optuna.copy_study(from_study_name=study.study_name,
                          from_storage=compat.study_storage(study), to_storage=f"sqlite:///{tmp}")
        os.replace(tmp, final)
        self._exported_at = time.monotonic()
        return True

    def link_runs(self) -> None:
        """Give each live Optuna trial the MLflow run id of its camotune trial (user attribute
        ``mlflow_run_id``), read from the sweep folder's run map when it changed."""
        if not self.export_path:
            return
        from camotune.tracking.replay import RUNS_FILE

        path = Path(self.export_path).parent / RUNS_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        trials = compat.optuna_trials(self)
        if mtime == self._map_mtime or not set(trials) - self._linked:
            return
        import yaml

        try:
            runs = (yaml.safe_load(path.read_text()) or {}).get("trials") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            return
        self._map_mtime = mtime
        completed = compat.completed_trials(self)
        for trial_id, ot_trial in trials.items():
            if trial_id in runs and trial_id not in self._linked and trial_id not in completed:
                ot_trial.set_user_attr(RUN_ID_ATTR, str(runs[trial_id]))
                self._linked.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.link_runs()
        value, epoch = result.get(self.metric), result.get("epoch")
        trials = compat.optuna_trials(self)
        if value is None or epoch is None or trial_id not in trials:
            return
        ot_trial = trials[trial_id]
        if int(epoch) not in compat.reported_steps(ot_trial):
            ot_trial.report(float(value), int(epoch))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        from optuna.trial import TrialState

        trials, completed = compat.optuna_trials(self), compat.completed_trials(self)
        if trial_id in completed or trial_id not in trials:
            return
        ot_trial = trials[trial_id]
        study = compat.optuna_study(self)
        # Tune does not pass the result that stopped a trial to on_trial_result: report it here,
        # so a pruned trial's last (rung) value reaches the study.
        if result:
            self.on_trial_result(trial_id, result)
        else:
            self.link_runs()
        epoch = (result or {}).get("epoch")
        value = (result or {}).get("best_val_iou")
        if error:
            state, value = TrialState.FAIL, None
        elif epoch is None or epoch < self.max_epochs or value is None:
            state, value = TrialState.PRUNED, None
        else:
            state = TrialState.COMPLETE
        try:
            study.tell(ot_trial, value, state=state)
        except (ValueError, RuntimeError) as exc:  # e.g. a NaN value: record it as failed
            log.warning("optuna refused trial %s as %s (%s); telling FAIL", trial_id, state, exc)
            study.tell(ot_trial, None, state=TrialState.FAIL)
        completed.add(trial_id)
        self.export(force=False)

    def warm_start(self, trials: list[dict[str, Any]]) -> int:
        """Add finished trials of an earlier sweep (dicts with ``params``, ``state``
        "complete"|"pruned"|"fail", ``value``, ``intermediate`` {epoch: iou}); returns how many
        were usable (params inside this space)."""
        import optuna

        space, study = compat.optuna_space(self), compat.optuna_study(self)
        used = 0
        for t in trials:
            params = {k: t["params"][k] for k in space if k in t["params"]}
            if len(params) != len(space):
                continue
            if not all(compat.distribution_contains(dist, params[name])
                       for name, dist in space.items()):
                continue
            state = {"complete": optuna.trial.TrialState.COMPLETE,
                     "pruned": optuna.trial.TrialState.PRUNED,
                     "fail": optuna.trial.TrialState.FAIL}[t["state"]]
            value = t.get("value") if state == optuna.trial.TrialState.COMPLETE else None
            study.add_trial(optuna.trial.create_trial(
                state=state, value=value, params=params, distributions=space,
                intermediate_values={int(k): float(v) for k, v in t.get("intermediate", {}).items()}))
            used += 1
        return used



def export_final(sweep_dir: str | os.PathLike, export_path: str | os.PathLike,
                 max_epochs: int) -> bool:
    """Write ``export_path`` from the searcher state Ray saved in ``sweep_dir`` at the end of
    the sweep (the live searcher exports at most every minute). False when there is none."""
    searcher = CamotuneOptunaSearch(max_epochs=max_epochs, export_path=str(export_path))
    try:
        searcher.restore_from_dir(str(sweep_dir))
    except (FileNotFoundError, RuntimeError) as exc:
        log.warning("optuna: no searcher state in %s to export (%s)", sweep_dir, exc)
        return False
    return searcher.export()
