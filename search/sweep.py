"""Building and running the Ray Tune experiment of a sweep, fresh or restored.

One sweep = one Ray Tune experiment in ``<storage-path>/<name>/`` (so ``Tuner.restore`` works),
next to camotune's own files: ``sweep.yaml`` (written first), ``trials.jsonl``, the Optuna
study ``optuna.db``, and ``trials/<trial_id>/`` with each trial's checkpoints and history.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from camotune.search import compat
from camotune.search.asha import RecordingASHA
from camotune.search.collapse_stopper import CollapseStopper
from camotune.search.settings import SweepSettings
from camotune.search.stop_registry import StopRegistry
from camotune.search.sweep_callback import SweepCallback
from camotune.tracking.tracker import Tracker

log = logging.getLogger(__name__)

OPTUNA_FILE = "optuna.db"
# Save Ray's experiment state (tuner.pkl, experiment_state-*.json, the searcher's state) at
# most this often, in seconds. A crash loses little: trials.jsonl, the trials' ended.json and
# last.pt say what happened after the last save (see docs/sweeps.md, Resume).
EXPERIMENT_CHECKPOINT_S = "30"


def trainable(settings: SweepSettings):
    """`run_trial` with the sweep's settings and each trial's resources: ``--cpus-per-trial``
    and ``--gpus-per-trial`` for a single-worker trial; for ``--workers-per-trial N`` a token
    bundle for the coordinating trial, Ray Train reserving N such workers (distributed.py)."""
    from ray import tune

    from camotune.search.distributed import TrialResources
    from camotune.search.trainable import run_trial

    fn = tune.with_parameters(run_trial, settings=settings)
    return tune.with_resources(fn, TrialResources(settings))


def workers_per_trial(settings: SweepSettings) -> int:
    """Data-parallel workers of the sweep's trials (base config + the space's fixed values)."""
    return settings.space.apply(settings.base, {}).workers_per_trial


def default_concurrency(settings: SweepSettings) -> int:
    """Trials that fit in the cluster at once (at least 1), counting every worker of a trial."""
    import ray

    total = ray.cluster_resources()
    workers = workers_per_trial(settings)
    fits = [int(total.get("CPU", 1) // max(settings.cpus_per_trial * workers, 1e-9))]
    if settings.gpus_per_trial > 0:
        fits.append(int(total.get("GPU", 0) // (settings.gpus_per_trial * workers)))
    return max(1, min(fits))


def reuse_actors(settings: SweepSettings) -> bool:
    """Whether trials reuse their Ray actor: yes for single-worker trials."""
    return workers_per_trial(settings) == 1


def _searcher(settings: SweepSettings, concurrency: int):
    from ray.tune.search import ConcurrencyLimiter

    from camotune.search.searcher import CamotuneOptunaSearch, make_sampler

    searcher = CamotuneOptunaSearch(
        space=settings.space.optuna_distributions(), metric="val_iou", mode="max",
        sampler=make_sampler(settings.searcher, settings.seed), study_name=settings.name,
        max_epochs=settings.max_epochs, export_path=str(settings.sweep_dir / OPTUNA_FILE))
    for point in settings.points:
        compat.optuna_study(searcher).enqueue_trial(point, skip_if_exists=False)
    if settings.warm_start:
        from camotune.search.warmstart import finished_trials

        used = searcher.warm_start(finished_trials(Path(settings.warm_start)))
        log.info("warm start: %d finished trials of %s given to the searcher", used,
                 settings.warm_start)
    return ConcurrencyLimiter(searcher, max_concurrent=concurrency)


def build_tuner(settings: SweepSettings, tracker: Tracker | None = None):
    """A fresh Tuner for ``settings`` (Ray must be initialised)."""
    from ray import tune

    registry = StopRegistry(str(settings.sweep_dir))
    history = settings.sweep_dir / "trials.jsonl"
    concurrency = settings.max_concurrent or default_concurrency(settings)
    scheduler = None
    if settings.scheduler == "asha":
        scheduler = RecordingASHA(registry, max_t=settings.max_epochs,
                                  grace_period=settings.grace_period,
                                  reduction_factor=settings.reduction_factor,
                                  milestones=settings.rung_epochs, brackets=settings.brackets,
                                  rung_metric=settings.rung_metric, history=history)
    stopper = None
    if settings.collapse.enabled:
        c = settings.collapse
        stopper = CollapseStopper(registry, fg_ratio=c.fg_ratio, min_steps=c.min_steps,
                                  patience_steps=c.patience_steps, min_best=c.min_best,
                                  drop=c.drop, drop_evals=c.drop_evals, patience=c.patience,
                                  min_epoch=c.min_epoch, history=history)
    if settings.is_design:
        param_space: dict[str, Any] = {"params": tune.grid_search(settings.trial_params())}
        search_alg, num_samples = None, 1
    else:
        param_space = {}
        search_alg, num_samples = _searcher(settings, concurrency), settings.num_samples
    tune_config = tune.TuneConfig(
        scheduler=scheduler, search_alg=search_alg, num_samples=num_samples,
        time_budget_s=settings.time_budget_s,
        # One process runs trial after trial on a slot (no new actor, no re-import); a
        # multi-worker trial's Ray Train run gets fresh workers.
        reuse_actors=reuse_actors(settings),
        max_concurrent_trials=concurrency if search_alg is None else None,
        trial_name_creator=_trial_name, trial_dirname_creator=_ray_dirname)
    run_config = tune.RunConfig(
        name=settings.name, storage_path=settings.storage_path,
        callbacks=[SweepCallback(settings, registry, tracker)], stop=stopper,
        failure_config=tune.FailureConfig(max_failures=0),
        verbose=0)
    return tune.Tuner(trainable(settings), param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


def restore_tuner(settings: SweepSettings):
    from ray import tune

    from camotune.search.pickle_names import install_old_names

    install_old_names()  # a tuner.pkl written by an earlier camotune

    from camotune.search.reroot import reroot

    # a copied folder writes to itself: the searcher's next trials, then the pickled objects
    compat.rehome_search_state(settings.sweep_dir)
    tuner = tune.Tuner.restore(str(settings.sweep_dir), trainable=trainable(settings),
                               resume_unfinished=True, resume_errored=False,
                               restart_errored=False)
    reroot(compat.restored_configs(tuner), settings)
    return tuner


def _trial_name(trial) -> str:
    return trial.trial_id


def _ray_dirname(trial) -> str:
    return f"ray_{trial.trial_id}"  # Ray's own per-trial files; camotune's are in trials/


def run(settings: SweepSettings, *, resume: bool, tracker: Tracker | None = None) -> None:
    """Run (or continue) the sweep to its end. Ray must already be initialised."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_CHECKPOINT_S)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's per-trial result.json, progress.csv and TensorBoard files: camotune never reads
    # them (trials.jsonl and each trial's history.csv are its record).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # ... so the ResultGrid tuner.fit() builds finds no per-trial metrics and would warn.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner = restore_tuner(settings) if resume else build_tuner(settings, tracker)
    tuner.fit()
    from camotune.search.searcher import export_final

    export_final(settings.sweep_dir, settings.sweep_dir / OPTUNA_FILE, settings.max_epochs)


def prepare(settings: SweepSettings, *, resume: bool) -> None:
    """Join (or start) Ray, then (unless resuming) create the sweep folder and write its
    ``sweep.yaml``. Ray comes first: a wrong address or token leaves no folder. A folder that
    exists already raises ``FileExistsError``."""
    from camotune.search.distributed import check_resources
    from camotune.search.runtime import init_ray
    from camotune.search.schedule_check import warn_schedule
    from camotune.search.settings import write_settings

    settings.check_rungs()
    warn_schedule(settings)
    workers = workers_per_trial(settings)
    check_resources(cpus=settings.cpus_per_trial, gpus=settings.gpus_per_trial, workers=workers)
    init_ray(settings.address)
    local = not (settings.address or os.environ.get("RAY_ADDRESS"))
    _check_capacity(settings, workers, strict=local and not settings.wait_for_resources)
    if not resume:
        settings.sweep_dir.mkdir(parents=True, exist_ok=False)
        write_settings(settings)


def run_sweep(settings: SweepSettings, *, resume: bool = False,
              tracker: Tracker | None = None) -> None:
    """Run a sweep from Python: `prepare` it, then `run` it to its end. ``tracker`` (e.g.
    ``camotune.tracking.SweepTracker.for_settings(settings)``) receives its events; read the
    outcome with ``camotune.results.load_sweep(settings.sweep_dir)``."""
    prepare(settings, resume=resume)
    run(settings, resume=resume, tracker=tracker)


def _check_capacity(settings: SweepSettings, workers: int, *, strict: bool = False) -> None:
    """Warn when one trial needs more than the whole cluster has: it would wait for nodes.
    ``strict`` (a local Ray, which no node will join): BadInput instead of waiting forever."""
    import ray

    from camotune.errors import BadInput

    total = ray.cluster_resources()
    need = {"CPU": settings.cpus_per_trial * workers, "GPU": settings.gpus_per_trial * workers}
    for key, amount in need.items():
        if amount > total.get(key, 0.0) + 1e-9 and strict:
            flag = "--gpus-per-trial" if key == "GPU" else "--cpus-per-trial"
            raise BadInput(f"{flag}: one trial needs {amount:g} {key} ({workers} worker(s)) but "
                           f"this machine has {total.get(key, 0.0):g}: lower it, join a "
                           "cluster with --address, or pass --wait-for-resources")
        if amount > total.get(key, 0.0) + 1e-9:
            log.warning("one trial needs %s %s (%d worker(s) x --%s-per-trial) but the cluster "
                        "has %s: trials wait until nodes join", amount, key, workers,
                        key.lower().replace("cpu", "cpus").replace("gpu", "gpus"),
                        total.get(key, 0.0))
