"""Every use of a private attribute or ``_internal`` module of Ray or Optuna, in one place.

Nothing else in camotune touches a Ray or Optuna name that starts with ``_``: it calls the
functions here. tests/search/test_compat.py checks each one on the installed versions (the
bounds in pyproject.toml are the versions tested); when an upgrade breaks one, that test names
it. Each function says which internal it reads and why no public API does the job.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Ray Train's per-report log lines come from this logger (a module of ray.train._internal).
TRAIN_STORAGE_LOGGER = "ray.train._internal.storage"


# -- Ray Tune: ASHA ------------------------------------------------------------------------------
def asha_rungs(scheduler: Any) -> Iterator[tuple[Any, int, dict[str, float]]]:
    """(bracket, milestone epoch, {trial_id: signed value}) of every rung of an
    ``AsyncHyperBandScheduler``: ``scheduler._brackets[i]._rungs``. Ray keeps the recorded
    rung values only there and does not save them with the experiment, so a resumed sweep
    puts the values of ``trials.jsonl`` back into these dicts."""
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            yield bracket, int(milestone), recorded


def set_asha_milestones(scheduler: Any, per_bracket: list[list[int]]) -> None:
    """Give each bracket of an ``AsyncHyperBandScheduler`` its own rung epochs
    (``_Bracket._rungs``: (milestone, {}) pairs, highest first). Ray derives the rungs from
    grace period and reduction factor only; its rule (``_Bracket.on_result``, ``cutoff``)
    works on any descending list, so explicit milestones keep Ray's decision."""
    for bracket, milestones in zip(scheduler._brackets, per_bracket, strict=True):
        bracket._rungs = [(int(m), {}) for m in sorted(milestones, reverse=True)]


def asha_trial_bracket(scheduler: Any, trial_id: str) -> Any:
    """The bracket Ray assigned a live trial to (``_trial_info``), or None."""
    return scheduler._trial_info.get(trial_id)


def asha_cutoff(bracket: Any, recorded: dict[str, float]) -> float | None:
    """The value a trial must beat at a rung (in the scheduler's signed units), from the
    bracket's own rule (``_Bracket.cutoff``), or None while the rung is empty."""
    value = bracket.cutoff(recorded)
    return None if value is None else float(value)


# -- Ray Train V2 ----------------------------------------------------------------------------------
def train_v2_enabled() -> bool:
    """Whether Ray Train V2 is on (``ray.train.v2._internal.constants.is_v2_enabled``; Ray
    has no public switch to read)."""
    from ray.train.v2._internal.constants import is_v2_enabled

    return bool(is_v2_enabled())


def train_v2_context_logger() -> str | None:
    """The name of the logger Ray Train V2 writes its line per report with (it is named after
    the file of ``ray.train.v2._internal.execution.context``); None if that module is gone."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # pragma: no cover - every supported Ray has it
        return None
    return context.__file__


# -- Ray core: authentication and the GCS ------------------------------------------------------
def refresh_auth_config() -> None:
    """Make Ray read its settings (the authentication mode among them) again unless it is in
    token mode already, as Ray does when it turns token mode on itself
    (``ray._raylet.Config.initialize``; no public API re-reads them)."""
    try:
        from ray._raylet import AuthenticationMode, Config, get_authentication_mode
    except ImportError:  # pragma: no cover - every supported Ray has these
        return
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        Config.initialize("")


def connect_gcs(address: str) -> bool:
    """Open a GCS client to ``address`` (``ray._raylet.GcsClient``), which raises Ray's
    ``AuthenticationError`` when the cluster refuses our token; False when Ray has no such
    client (nothing was checked)."""
    try:
        from ray._raylet import GcsClient
    except ImportError:  # pragma: no cover
        return False
    GcsClient(address=address)
    return True


# -- Ray Tune's OptunaSearch and Optuna --------------------------------------------------------
def optuna_study(searcher: Any) -> Any:
    """The ``optuna.Study`` inside Ray's ``OptunaSearch`` (``_ot_study``), or None before
    the searcher is set up; OptunaSearch does not expose it."""
    return searcher._ot_study


def optuna_trials(searcher: Any) -> dict[str, Any]:
    """Ray trial id -> live ``optuna.Trial`` of an ``OptunaSearch`` (``_ot_trials``)."""
    return searcher._ot_trials


def completed_trials(searcher: Any) -> set[str]:
    """The Ray trial ids an ``OptunaSearch`` has told Optuna about (``_completed_trials``)."""
    return searcher._completed_trials


def optuna_space(searcher: Any) -> dict[str, Any]:
    """name -> Optuna distribution of an ``OptunaSearch`` (``_space``)."""
    return searcher._space


def study_storage(study: Any) -> Any:
    """The storage of an ``optuna.Study`` (``_storage``), which ``optuna.copy_study`` needs
    for an in-memory study (it has no URL)."""
    return study._storage


def reported_steps(trial: Any) -> dict[int, float]:
    """step -> value already reported for a live ``optuna.Trial`` (``trial._trial_id`` read
    back from its storage; ``Trial`` has no public getter), so a step is reported once."""
    return trial.storage.get_trial(trial._trial_id).intermediate_values


def distribution_contains(dist: Any, value: Any) -> bool:
    """Whether an Optuna distribution admits ``value`` (``BaseDistribution._contains`` on its
    internal representation); False for a value it cannot even represent."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def quiet(logger_name: str | None, level: int = logging.WARNING) -> None:
    """Raise one of Ray's loggers (a name from this module) to ``level``."""
    if logger_name is not None:
        logging.getLogger(logger_name).setLevel(level)


def asha_options(scheduler: Any) -> dict[str, Any]:
    """The constructor options of an ``AsyncHyperBandScheduler`` read back from its private
    state (``_max_t``, ``_reduction_factor``, ``_metric``, ``_metric_op`` and the first
    bracket's lowest rung): for a `RecordingASHA` unpickled from a ``tuner.pkl`` written
    before it kept them itself."""
    first = min(m for bracket, m, _ in asha_rungs(scheduler)
                if bracket is scheduler._brackets[0])
    return {"max_t": int(scheduler._max_t), "grace_period": int(first),
            "reduction_factor": scheduler._reduction_factor, "metric_name": scheduler._metric,
            "sign": float(scheduler._metric_op)}


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """While a local Ray starts: its node address is 127.0.0.1, so its GCS, raylet, workers
    and agents listen on the loopback interface only. ``ray.init(_node_ip_address=
    "127.0.0.1")`` does not do it (Ray turns a loopback address into the routable one);
    Ray's single-machine mode (``ray_constants.ENABLE_RAY_CLUSTER`` false, the default on
    macOS and Windows, read at call time and by the processes Ray starts from the
    environment) does. Both are restored afterwards."""

    from ray._private import ray_constants

    saved_env, saved = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved_env


# What a trial imports before its first batch: ~6 s of torch, timm and Ray Tune on a 2-core CPU.
TRIAL_MODULES = ("ray.tune", "camotune.search.trainable", "camotune.trainer.loop",
                 "camotune.trainer.loaders", "camotune.search.distributed",
                 "camotune.tracking.repro")

# Ray settings of a local sweep's Ray: no Prometheus metrics endpoint, no agent HTTP server;
# every worker imports TRIAL_MODULES before it accepts work (Ray's ``preload_python_modules``,
# read by default_worker.py): Ray prestarts one worker per CPU when the driver connects, so
# those imports run while the driver sets the sweep up, and the first trial on each slot
# starts as fast as the ones after it (which reuse the actor).
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False,
                       "preload_python_modules": list(TRIAL_MODULES)}


def restored_configs(tuner: Any) -> list[Any]:
    """The run and tune configs of a restored ``Tuner`` (callbacks, stopper, scheduler,
    searcher as unpickled from ``tuner.pkl``); [] under the Ray client."""
    inner = getattr(tuner, "_local_tuner", None)
    if inner is None:
        return []
    return [inner._run_config, inner._tune_config]


# -- Ray Tune: restoring a moved or copied experiment ---------------------------------------------
SEARCH_STATE_PATTERN = "search_gen_state-*.json"


def rehome_search_state(sweep_dir: str | Path) -> bool:
    """Point the saved search-generator state of ``sweep_dir`` at ``sweep_dir`` itself; True
    when it pointed elsewhere (the folder was copied or moved) and was rewritten.

    ``Tuner.restore`` moves the restored trials to the folder being restored, but the
    ``SearchGenerator`` state (``search_gen_state-*.json``, a cloudpickle despite its name)
    keeps the ``Experiment`` it was given, whose ``StorageContext`` names the original
    folder: every trial the searcher creates after the restore would write its checkpoints
    there. Ray offers no hook between loading that state and creating the next trial, so the
    newest file (the one Ray loads: ``_load_newest_checkpoint``) is corrected before the
    restore."""
    import ray.cloudpickle as cloudpickle

    sweep_dir = Path(sweep_dir).resolve()
    files = sorted(sweep_dir.glob(SEARCH_STATE_PATTERN))
    if not files:
        return False
    newest = max(files, key=lambda p: p.name)  # Ray's choice: the largest name
    with newest.open("rb") as f:
        state = cloudpickle.load(f)
    experiment = state.get("experiment") if isinstance(state, dict) else None
    storage = getattr(experiment, "storage", None)
    if storage is None:
        return False
    home = (str(sweep_dir.parent), sweep_dir.name)
    if (str(storage.storage_fs_path), storage.experiment_dir_name) == home:
        return False
    storage.storage_fs_path, storage.experiment_dir_name = home  # spec["storage"] is the same
    if isinstance(experiment.spec, dict) and experiment.spec.get("storage") is not storage:
        experiment.spec["storage"] = storage
    tmp = newest.with_name(newest.name + ".tmp")
    with tmp.open("wb") as f:
        cloudpickle.dump(state, f)
    os.replace(tmp, newest)
    return True
