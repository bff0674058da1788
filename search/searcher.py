"""Optuna as the searcher, told the truth about how each trial ended.

Ray's ``OptunaSearch`` tells Optuna COMPLETE with the last reported value for any trial that
reported, so a trial ASHA stopped at epoch 2 would count as finished with its epoch-2 IoU.
`CamotuneOptunaSearch` instead reports intermediate values at step = epoch, ends trials that
stopped before the last epoch as PRUNED, failed trials as FAIL, and completed trials as
COMPLETE with their best ``val_iou``.

The study itself is in memory, so it is saved and restored with Ray's searcher state and stays
consistent with Ray's view after a resume; a copy is written to ``optuna.db`` (sqlite) in the
sweep folder after every finished trial, for optuna-dashboard or `optuna.load_study`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from camotune.search import compat

log = logging.getLogger(__name__)

SEARCHERS = ("tpe", "qmc", "random")


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

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore of the saved state, keeping this object's ``export_path``: the
        state was saved in the folder it was created in, which a copied sweep is not."""
        export_path = self.export_path
        super().restore(checkpoint_path)
        self.export_path = export_path

    def export(self) -> None:
        """Write the study to ``export_path`` (sqlite), replacing the previous copy."""
        study = compat.optuna_study(self)
        if not self.export_path or study is None:
            return
        import optuna

        final = Path(self.export_path)
        tmp = final.with_name(final.name + ".tmp")
        tmp.unlink(missing_ok=True)
        optuna.copy_study(from_study_name=study.study_name,
                          from_storage=compat.study_storage(study), to_storage=f"sqlite:///{tmp}")
        os.replace(tmp, final)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
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
        self.export()

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

