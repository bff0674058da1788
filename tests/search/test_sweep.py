"""A real smoke sweep on a local Ray: stop reasons, ASHA rungs, Optuna states, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from camotune.cli import main
from camotune.sweepdir.events import read_events

VIT = "vit_tiny_patch16_224"  # a real timm model without four feature scales: the trial raises

SPACE = {
    "description": "smoke space with three planted trials",
    "params": {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 3.0},
        "batch_size": {"type": "choice", "values": [4, 8]},
        "use_ema": {"type": "choice", "values": [True, False]},
        "backbone": {"type": "choice", "values": ["edgenext_xx_small", VIT]},
    },
    "fixed": {"img_size": 64, "pretrained": False, "epochs": 6, "stage1_epochs": 1,
              "num_workers": 0, "full_metrics_every": 6},
    "points": [
        {"lr": 3e-3, "batch_size": 4, "use_ema": False, "backbone": "edgenext_xx_small"},
        {"lr": 2e-3, "batch_size": 8, "use_ema": True, "backbone": VIT},
    ],
    "sweep": {"scheduler": "asha", "grace_period": 2, "reduction_factor": 3, "num_samples": 6},
}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def learnable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough synthetic scenes (100) for a 64 px model to find objects in its first epoch."""
    from camotune.trainer.synth import synth

    return synth(tmp_path_factory.mktemp("data") / "cod", n_train=100, n_test=4, size=64, seed=1)


@pytest.fixture(scope="module")
def sweep(ray_local, learnable: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    space = root / "planted.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    code = main(["sweep", "--space", str(space), "--dataset-path", str(learnable),
                 "--storage-path", str(root / "runs"), "--name", "planted", "--seed", "3",
                 "--max-concurrent", "2", "--keep-checkpoints", "all"])
    assert code == 0
    return root / "runs" / "planted"


def ends(sweep_dir: Path) -> dict[str, dict]:
    return {e["trial_id"]: e for e in read_events(sweep_dir / "trials.jsonl")
            if e["event"] == "end"}


def starts(sweep_dir: Path) -> dict[str, dict]:
    return {e["trial_id"]: e for e in read_events(sweep_dir / "trials.jsonl")
            if e["event"] == "start"}


@pytest.mark.slow
def test_every_trial_ends_with_one_stop_reason(sweep: Path) -> None:
    end, start = ends(sweep), starts(sweep)
    assert len(end) == len(start) == 6
    reasons = {e["stop_reason"] for e in end.values()}
    assert reasons <= {"completed", "asha_stopped", "collapsed", "diverged", "oom", "error"}
    for tid, e in end.items():
        if start[tid]["params"]["backbone"] == VIT:
            assert e["stop_reason"] == "error" and "stride" in e["message"].lower()
    assert "completed" in reasons
    completed = [e for e in end.values() if e["stop_reason"] == "completed"]
    assert all(e["epochs"] == 6 for e in completed)
    assert max(e["best_val_iou"] for e in completed) > 0.1


@pytest.mark.slow
def test_asha_stops_at_the_first_rung(sweep: Path) -> None:
    stopped = [e for e in ends(sweep).values() if e["stop_reason"] == "asha_stopped"]
    assert stopped, "no trial was stopped by ASHA"
    for e in stopped:
        assert e["rung"] == e["epochs"] == 2
        assert e["evidence"]["val_iou"] < e["evidence"]["rung_cutoff"]


@pytest.mark.slow
def test_files_of_each_trial(sweep: Path) -> None:
    settings = yaml.safe_load((sweep / "sweep.yaml").read_text())
    assert settings["max_epochs"] == 6 and settings["searcher"] == "tpe"
    for tid, e in ends(sweep).items():
        folder = sweep / "trials" / tid
        if e["stop_reason"] == "error":
            assert json.loads((folder / "outcome.json").read_text())["stop_reason"] == "error"
            continue
        rows = (folder / "history.csv").read_text().splitlines()
        assert len(rows) == 1 + e["epochs"]
        assert (folder / "last.pt").is_file()


@pytest.mark.slow
def test_optuna_states_match_stop_reasons(sweep: Path) -> None:
    import optuna

    study = optuna.load_study(study_name="planted", storage=f"sqlite:///{sweep / 'optuna.db'}")
    expected = {"completed": "COMPLETE", "asha_stopped": "PRUNED", "collapsed": "PRUNED",
                "diverged": ("PRUNED", "FAIL"), "oom": "FAIL", "error": "FAIL"}
    end, start = ends(sweep), starts(sweep)
    by_params = {json.dumps(start[t]["params"], sort_keys=True): e for t, e in end.items()}
    assert len(study.trials) == len(end)
    for trial in study.trials:
        e = by_params[json.dumps(trial.params, sort_keys=True)]
        want = expected[e["stop_reason"]]
        assert trial.state.name in (want if isinstance(want, tuple) else (want,)), e
        if e["stop_reason"] == "completed":
            assert trial.value == pytest.approx(e["best_val_iou"])
        if e["stop_reason"] == "asha_stopped":
            assert set(trial.intermediate_values) == {1, 2}  # step = epoch, rung value included


@pytest.mark.slow
def test_engineered_collapse_is_stopped_while_the_sweep_goes_on(
        ray_local, learnable: Path, tmp_path: Path) -> None:
    """LR 3.0 without gradient clipping, next to a sane trial; FIFO so only the collapse
    stopper (or the trainer's divergence check) can end it early."""
    space = dict(SPACE, points=[
        {"lr": 3.0, "batch_size": 8, "use_ema": False, "backbone": "edgenext_xx_small"},
        {"lr": 3e-3, "batch_size": 8, "use_ema": False, "backbone": "edgenext_xx_small"}],
        sweep={"scheduler": "fifo", "num_samples": 2})
    path = tmp_path / "collapse.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["sweep", "--space", str(path), "--dataset-path", str(learnable),
                 "--storage-path", str(tmp_path / "runs"), "--name", "c", "--grad-clip", "0",
                 "--max-concurrent", "2",
                 # 3 optimizer steps an epoch (batch 8 x 4 on 90 images): empty predictions
                 # count from epoch 3 (step 9) on, for one epoch (3 steps)
                 "--collapse-min-steps", "9", "--collapse-patience-steps", "3"]) == 0
    sweep_dir = tmp_path / "runs" / "c"
    end, start = ends(sweep_dir), starts(sweep_dir)
    outcome = {start[t]["params"]["lr"]: e for t, e in end.items()}
    assert outcome[3.0]["stop_reason"] in ("collapsed", "diverged"), outcome[3.0]
    assert outcome[3.0]["evidence"] or outcome[3.0]["message"]
    assert outcome[3e-3]["stop_reason"] == "completed" and outcome[3e-3]["epochs"] == 6


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_SPACES = {
    "unparsable": "params: {lr: [1, 2\n",
    "unknown_key": "description: x\nparams: {lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}\n"
                   "extra: 1\n",
    "low_ge_high": "params: {lr: {type: loguniform, low: 1.0e-2, high: 1.0e-4}}\n",
    "unknown_field": "params: {learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}\n",
    "empty_choice": "params: {batch_size: {type: choice, values: []}}\n",
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_files_exit_2_with_one_line(case: str, synth_dataset: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    space = _write(tmp_path / f"{case}.yaml", BAD_SPACES[case])
    code = main(["sweep", "--space", str(space), "--dataset-path", str(learnable),
                 "--storage-path", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and f"{case}.yaml" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written before the input is valid


def test_bad_paths_exit_2(synth_dataset: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "--space", "smoke", "--dataset-path", str(tmp_path / "none"),
                 "--storage-path", str(tmp_path)]) == 2
    assert "none" in capsys.readouterr().err
    assert main(["sweep", "--space", "no-such-space", "--dataset-path", str(synth_dataset),
                 "--storage-path", str(tmp_path)]) == 2
    assert "no-such-space" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["sweep", "--space", "smoke", "--dataset-path", str(synth_dataset),
                 "--storage-path", str(tmp_path), "--name", "taken"]) == 2
    assert "camotune resume" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "taken")]) == 2
    assert "not a camotune sweep" in capsys.readouterr().err
