"""Contract tests: each Ray/Optuna internal that search/compat.py reads exists and behaves as
camotune uses it, on the installed versions (pyproject.toml bounds Ray and Optuna to these)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from ray.tune.schedulers import ASHAScheduler

from camotune.search import compat
from camotune.search.asha import RecordingASHA
from camotune.search.stop_registry import StopRegistry


class Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


@pytest.mark.parametrize(("max_t", "grace", "factor"),
                         [(6, 2, 3), (18, 2, 3), (27, 3, 3), (8, 1, 2), (10, 2, 2), (20, 4, 4)])
def test_asha_rungs_are_the_milestones_camotune_computes(max_t: int, grace: int,
                                                         factor: int) -> None:
    asha = RecordingASHA(StopRegistry("c"), max_t=max_t, grace_period=grace,
                         reduction_factor=factor)
    first = {m for bracket, m, _ in compat.asha_rungs(asha)
             if bracket is next(compat.asha_rungs(asha))[0]}
    assert sorted(first) == asha.rungs


def test_asha_rung_records_are_live_and_signed() -> None:
    asha = ASHAScheduler(time_attr="epoch", metric="val_iou", mode="min", max_t=6,
                         grace_period=2, reduction_factor=3)
    for tid, value in (("a", 0.5), ("b", 0.7)):
        asha.on_trial_add(None, Trial(tid))
        asha.on_trial_result(None, Trial(tid), {"epoch": 2, "val_iou": value})
    (_, _, recorded), = [r for r in compat.asha_rungs(asha) if r[1] == 2]
    assert recorded == {"a": -0.5, "b": -0.7}    # mode min: Ray stores -value
    recorded["c"] = -0.1                          # what replay does
    assert next(r for r in compat.asha_rungs(asha) if r[1] == 2)[2]["c"] == -0.1


def test_asha_cutoff_is_the_bracket_percentile() -> None:
    asha = ASHAScheduler(time_attr="epoch", metric="val_iou", mode="max", max_t=6,
                         grace_period=2, reduction_factor=3)
    bracket, _, recorded = next(r for r in compat.asha_rungs(asha) if r[1] == 2)
    assert compat.asha_cutoff(bracket, recorded) is None
    recorded.update({"a": 0.2, "b": 0.4, "c": 0.9})
    expected = np.nanpercentile([0.2, 0.4, 0.9], (1 - 1 / 3) * 100)
    assert compat.asha_cutoff(bracket, recorded) == pytest.approx(expected)


def test_train_v2_switch_and_context_logger() -> None:
    assert compat.train_v2_enabled() in (True, False)
    name = compat.train_v2_context_logger()
    assert name is not None and Path(name).is_file()


def test_train_storage_logger_is_a_ray_module() -> None:
    assert importlib.util.find_spec(compat.TRAIN_STORAGE_LOGGER) is not None
    compat.quiet(compat.TRAIN_STORAGE_LOGGER)
    assert logging.getLogger(compat.TRAIN_STORAGE_LOGGER).level == logging.WARNING


def test_auth_config_and_gcs_client_exist() -> None:
    from ray._raylet import AuthenticationMode, Config, GcsClient, get_authentication_mode

    assert hasattr(AuthenticationMode, "TOKEN") and callable(Config.initialize)
    assert callable(get_authentication_mode) and callable(GcsClient)
    compat.refresh_auth_config()  # a no-op or a re-read; must not raise


@pytest.fixture
def searcher(tmp_path: Path):
    import optuna

    from camotune.search.searcher import CamotuneOptunaSearch

    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    s = CamotuneOptunaSearch(space=space, metric="val_iou", mode="max", max_epochs=4,
                             sampler=optuna.samplers.RandomSampler(seed=0),
                             export_path=str(tmp_path / "optuna.db"))
    return s


def test_optuna_search_internals(searcher) -> None:
    import optuna

    study = compat.optuna_study(searcher)
    assert isinstance(study, optuna.Study)
    assert set(compat.optuna_space(searcher)) == {"lr"}
    config = searcher.suggest("t1")
    assert 1e-4 <= config["lr"] <= 1e-2
    trials = compat.optuna_trials(searcher)
    assert isinstance(trials["t1"], optuna.Trial)
    trials["t1"].report(0.3, 1)
    assert compat.reported_steps(trials["t1"]) == {1: 0.3}
    searcher.on_trial_complete("t1", {"epoch": 4, "best_val_iou": 0.5})
    assert "t1" in compat.completed_trials(searcher)
    assert study.trials[0].value == 0.5


def test_study_storage_copies(searcher, tmp_path: Path) -> None:
    import optuna

    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"epoch": 4, "best_val_iou": 0.5})
    study = compat.optuna_study(searcher)
    out = tmp_path / "copy.db"
    optuna.copy_study(from_study_name=study.study_name, from_storage=compat.study_storage(study),
                      to_storage=f"sqlite:///{out}")
    copy = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{out}")
    assert [t.value for t in copy.trials] == [0.5]


def test_distribution_contains() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert compat.distribution_contains(FloatDistribution(0.1, 1.0), 0.5)
    assert not compat.distribution_contains(FloatDistribution(0.1, 1.0), 2.0)
    assert compat.distribution_contains(IntDistribution(1, 4), 3)
    assert compat.distribution_contains(CategoricalDistribution(["a", "b"]), "b")
    assert not compat.distribution_contains(CategoricalDistribution(["a", "b"]), "c")


def test_asha_options_read_back_from_an_old_pickle() -> None:
    import pickle

    asha = RecordingASHA(StopRegistry("old"), max_t=18, grace_period=2, reduction_factor=3,
                         mode="min")
    state = dict(vars(asha))
    for name in ("max_t", "grace_period", "reduction_factor", "metric_name", "sign"):
        del state[name]
    old = RecordingASHA.__new__(RecordingASHA)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert (old.max_t, old.grace_period, old.reduction_factor, old.metric_name, old.sign) == \
        (18, 2, 3, "val_iou", -1.0)
    assert old.rungs == [2, 6, 18]


def test_objects_pickled_under_old_module_names_load() -> None:
    import pickle

    from camotune.search.collapse_stopper import CollapseStopper
    from camotune.search.pickle_names import install_old_names

    stopper = CollapseStopper(StopRegistry("/sweeps/old-names"), patience=5)
    data = pickle.dumps(stopper, protocol=0)
    for new in (b"camotune.search.collapse_stopper", b"camotune.search.stop_registry"):
        data = data.replace(new, b"camotune.search.stoppers")
    assert b"camotune.search.stoppers" in data
    install_old_names()
    back = pickle.loads(data)
    assert isinstance(back, CollapseStopper) and back.patience == 5
    assert back.registry is stopper.registry


def test_a_copied_search_state_creates_its_next_trials_in_the_copy(tmp_path: Path) -> None:
    import shutil

    from ray import tune
    from ray.tune.experiment import Experiment
    from ray.tune.search import SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    def objective(config):  # never run: only the trial's paths are looked at
        return {"x": 1.0}

    original = tmp_path / "runs" / "k"
    original.mkdir(parents=True)
    search = SearchGenerator(OptunaSearch({"lr": tune.uniform(0, 1)},
                                          metric="x", mode="max", seed=0))
    search.add_configurations([Experiment("k", run=objective, num_samples=4,
                                          storage_path=str(original.parent))])
    search.save_to_dir(str(original), session_str="2026-01-01_00-00-00")
    copy = tmp_path / "elsewhere" / "k-copy"
    shutil.copytree(original, copy)
    stale = SearchGenerator(OptunaSearch(metric="x", mode="max"))
    stale.restore_from_dir(str(copy))
    assert Path(stale.next_trial().storage.experiment_fs_path) == original  # Ray's own restore

    assert compat.rehome_search_state(copy) is True
    assert compat.rehome_search_state(copy) is False  # already at home
    assert compat.rehome_search_state(original) is False  # the original is left alone
    restored = SearchGenerator(OptunaSearch(metric="x", mode="max"))
    restored.restore_from_dir(str(copy))
    trial = restored.next_trial()
    assert Path(trial.storage.experiment_fs_path) == copy.resolve()


def test_reroot_reaches_the_callback_inside_rays_run_config(tmp_path: Path) -> None:
    import dataclasses

    from ray import tune

    from camotune.search.reroot import reroot
    from camotune.search.settings import SweepSettings
    from camotune.search.sweep_callback import SweepCallback
    from camotune.spaces import load_space
    from camotune.trainer.config import DEFAULTS

    old = SweepSettings(name="k", storage_path=str(tmp_path / "runs"), space=load_space("smoke"),
                        space_source="smoke", base=DEFAULTS)
    callback = SweepCallback(old, StopRegistry(str(old.sweep_dir)))
    configs = [tune.RunConfig(name="k", callbacks=[callback]), tune.TuneConfig()]
    new = dataclasses.replace(old, storage_path=str(tmp_path / "elsewhere"), name="k-copy")
    assert reroot(configs, new) > 0
    assert configs[0].callbacks[0].settings is new
    assert callback.path.parent == tmp_path / "elsewhere" / "k-copy"


def test_a_local_rays_workers_import_the_trial_modules_before_any_work() -> None:
    import ray

    from camotune.search.runtime import init_ray

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")

    @ray.remote(num_cpus=0)
    def loaded() -> dict[str, bool]:
        import sys

        return {name: name in sys.modules for name in compat.TRIAL_MODULES}

    init_ray(None)  # the sweep's own start of a local Ray
    try:
        assert ray.get(loaded.remote(), timeout=120) == dict.fromkeys(compat.TRIAL_MODULES, True)
    finally:
        ray.shutdown()
