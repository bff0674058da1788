"""What `camotune sweep` shows and when it stops early: help, preflight, the end of a sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from camotune.cli import main
from camotune.commands.sweep import _all_failed

TINY = {
    "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    "fixed": {"img_size": 32, "eval_size": 32, "backbone": "edgenext_xx_small",
              "pretrained": False, "epochs": 2, "stage1_epochs": 1, "num_workers": 0},
    "sweep": {"trial_scheduler": "asha", "grace_period": 1, "reduction_factor": 2,
              "num_samples": 2},
}


def _space(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in changes.items():
        spec[key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_help_offers_no_per_trial_flags_and_shows_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint-dir" not in text and "--resume-from" not in text
    assert "--dataset-path" in text and "--verbose" in text
    assert "trials to run (sampled spaces) (default 10)" in text
    assert "seeded by --seed (default tpe)" in text


def test_missing_hub_weights_offline_exit_2_before_any_folder(
        synth_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fixed = {k: v for k, v in TINY["fixed"].items() if k != "pretrained"}
    space = _space(tmp_path, fixed=fixed)
    storage = tmp_path / "runs"
    # CPU time, not wall time: the shared test machine may be busy with other work.
    started = time.process_time()
    code = main(["sweep", "--space", str(space), "--dataset-path", str(synth_dataset),
                 "--storage-path", str(storage), "--name", "offline", "--pretrained"])
    took = time.process_time() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and took < 10
    assert err[-1].startswith("camotune sweep: error: --pretrained: cannot get timm weights "
                              "for edgenext_xx_small")
    assert "--pretrained-path" in err[-1]
    assert not (storage / "offline").exists()


def test_a_searched_value_the_base_config_refuses_exit_2(
        synth_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = _space(tmp_path, params={"warmup_fraction": {"type": "choice",
                                                         "values": [0.1, 0.2]}})
    code = main(["sweep", "--space", str(space), "--dataset-path", str(synth_dataset),
                 "--storage-path", str(tmp_path / "runs"), "--warmup-steps", "10"])
    assert code == 2
    assert "--warmup-fraction 0.1 and --warmup-steps 10 both set" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _ends(folder: Path, *ends: tuple[str, str]) -> SimpleNamespace:
    lines = [{"event": "end", "trial_id": f"t{i}", "stop_reason": reason, "message": message}
             for i, (reason, message) in enumerate(ends)]
    (folder / "trials.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return SimpleNamespace(sweep_dir=folder)


def test_every_trial_failing_the_same_way_names_the_reason(tmp_path: Path) -> None:
    same = _ends(tmp_path, *[("error", "BadInput: --foo is wrong\n  File ...")] * 3)
    failure = _all_failed(same)
    assert failure.reason == "error"
    assert str(failure) == "every trial (3) ended with error: BadInput: --foo is wrong"


def test_mixed_failures_are_counted(tmp_path: Path) -> None:
    mixed = _ends(tmp_path, ("error", "boom"), ("oom", "CUDA out of memory"), ("oom", "x"))
    assert "(error 1, oom 2)" in str(_all_failed(mixed))


@pytest.mark.slow
def test_a_sweep_prints_nothing_on_stdout_and_its_leaders_on_stderr(
        synth_dataset: Path, tmp_path: Path) -> None:
    space = _space(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for key in ("RAY_AIR_NEW_OUTPUT", "RAY_COLOR_PREFIX", "TQDM_DISABLE", "RAY_ADDRESS"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "camotune", "sweep", "--space", str(space), "--dataset-path",
         str(synth_dataset), "--storage-path", str(tmp_path / "runs"), "--name", "quiet",
         "--max-concurrent", "1"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    err = done.stderr
    assert "rank  trial_id" in err and "as a command:\ncamotune train " in err
    assert "trial " in err and " started " in err and "progress: 2 of 2 done" in err
    lowered = err.lower()
    for chatter in ("configuration for experiment", "a new study created", "tensorboard",
                    "token authentication is enabled", "running upgrade"):
        assert chatter not in lowered, chatter
