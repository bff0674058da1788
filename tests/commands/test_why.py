"""`camotune why`: the dry run, bad inputs, the design-sweep scheduler rule, the fold-over
design, and one real run end to end (slow)."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import pytest

from camotune.cli import main
from camotune.commands.why import foldover_pair
from camotune.spaces.pair_design import design_pair
from camotune.trainer.config import from_argv

CPU = "--backbone edgenext_xx_small --no-pretrained --num-workers 0"
# The report's pair (SEED-REPORT.md), image sizes scaled 384 -> 96 and 320 -> 64.
GOOD = ("camotune train --dataset-path D --checkpoint-dir C --backbone edgenext_base "
        "--num-experts 7 --batch-size 2 --stage2-batch-size 1 --accumulation-steps 4 "
        "--img-size 96 --epochs 120 --stage1-epochs 30 --lr 0.00025 --num-workers 4 "
        "--progressive-unfreeze --no-use-ema --no-deep-supervision")
BAD = ("--dataset-path D --checkpoint-dir C2 --backbone edgenext_base --num-experts 7 "
       "--batch-size 16 --stage2-batch-size 1 --accumulation-steps 8 --img-size 64 "
       "--epochs 120 --stage1-epochs 30 --lr 0.0001 --num-workers 4 --progressive-unfreeze "
       "--use-ema --deep-supervision")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from camotune.trainer.synth import synth

    return synth(tmp_path_factory.mktemp("why-data") / "d", n_train=10, n_test=0, size=32,
                 seed=3)


def test_dry_run_prints_the_design_and_an_estimate_and_writes_nothing(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["why", "--good", GOOD, "--bad", BAD, "--dataset-path", str(data),
                 "--common", CPU + " --stage2-batch-size 0", "--epochs", "4",
                 "--group", "batch_size,accumulation_steps", "--max-runs", "20",
                 "--storage-path", str(tmp_path / "runs"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "5 factor(s)" in out and "17 runs (the good corner added" in out
    assert "= 34 trials" in out and "resolution: 5; generators E = ABCD" in out
    assert "lr:use_ema = " in out  # the alias pairs
    assert "estimate: about" in out and "min (34 trials" in out
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(("good", "bad", "message"), [
    ("--lr 0.001", "camotune train --lr 0.001", "differ in no training setting"),
    ("--lr 0.001 --no-such-flag 3", "--lr 0.01", "--good:"),
    ("missing/command.txt", "--lr 0.01", "--good: file not found: missing/command.txt"),
    ("--lr 0.001", "nope.yaml", "--bad: file not found"),
])
def test_bad_inputs_exit_2_with_one_line(good: str, bad: str, message: str, data: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["why", "--good", good, "--bad", bad, "--dataset-path", str(data),
                 "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err


def test_runs_are_read_from_command_txt_and_config_yaml(tmp_path: Path) -> None:
    from camotune.commands.why_inputs import read_run
    from camotune.trainer.config import dump_yaml

    cfg = from_argv(["--lr", "0.003", "--img-size", "64"])
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    (tmp_path / "command.txt").write_text("camotune train --lr 0.003 --img-size 64\n")
    assert read_run(str(tmp_path / "config.yaml"), "good") == cfg
    assert read_run(str(tmp_path / "command.txt"), "good") == cfg
    assert read_run("--lr 0.003 --img-size 64", "good") == cfg


def test_a_design_space_with_asha_or_the_stopper_exits_2(data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    space = tmp_path / "design.yaml"
    space.write_text("design:\n  type: factorial\n  levels:\n    lr: [1.0e-3, 1.0e-4]\n"
                     "fixed:\n  epochs: 2\n  stage1_epochs: 1\n")
    base = ["sweep", "--space", str(space), "--dataset-path", str(data),
            "--storage-path", str(tmp_path / "runs")]
    for extra, named in (([], "the ASHA trial scheduler and the collapse stopper"),
                         (["--trial-scheduler", "fifo"], "the collapse stopper"),
                         (["--no-collapse-stopper"], "the ASHA trial scheduler")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert named in err and "--trial-scheduler fifo --no-collapse-stopper" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("preset", ["seed-collapse", "seed-collapse-small"])
def test_the_seed_collapse_presets_pass_the_design_rule(preset: str, data: Path) -> None:
    from camotune.commands.sweep import settings_from_args, sweep_parser

    # --no-pretrained: the sweep's preflight would otherwise look for hub weights offline.
    args = sweep_parser().parse_args(["--space", preset, "--dataset-path", str(data),
                                      "--storage-path", "/nonexistent-why-test",
                                      "--no-pretrained"])
    settings = settings_from_args(args)
    assert settings.scheduler == "fifo" and not settings.collapse.enabled


def test_the_fold_over_is_the_complementary_half() -> None:
    good = from_argv(["--lr", "0.001", "--img-size", "64", "--batch-size", "4",
                      "--no-use-ema", "--no-deep-supervision"])
    bad = from_argv(["--lr", "0.0001", "--img-size", "96", "--batch-size", "8",
                     "--use-ema", "--deep-supervision"])
    pair = design_pair(good, bad, seeds=(0, 1), max_runs=20)
    assert pair.design.fraction == 2 and pair.extra_good_corner
    fold = foldover_pair(pair)
    first = {tuple(r.coded.values()) for r in pair.runs[:-1]}
    second = {tuple(r.coded.values()) for r in fold.runs}
    assert not first & second
    assert first | second == set(product((-1, 1), repeat=5))
    assert len(fold.runs) == 16 and not fold.extra_good_corner


@pytest.fixture(scope="module")
def why_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """A real `camotune why --json`: lr x use_ema, 2 seeds, 2 epochs -> 8 trials."""
    import ray

    root = tmp_path_factory.mktemp("why-run")
    good = f"--lr 0.0001 --no-use-ema --img-size 32 --batch-size 4 --epochs 2 " \
           f"--stage1-epochs 1 --dataset-path {data}"
    bad = good.replace("--lr 0.0001 --no-use-ema", "--lr 0.001 --use-ema")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["why", "--good", good, "--bad", bad, "--dataset-path", str(data),
                         "--common", CPU, "--seeds", "2", "--at-epoch", "1", "--name", "w",
                         "--storage-path", str(root / "runs"), "--max-concurrent", "2",
                         "--json"])
    finally:
        ray.shutdown()
    assert code == 0
    return root / "runs" / "w", json.loads(out.getvalue()), out.getvalue()


# 8 trials take about 4 min on 2 quiet cores; the margin is for a busy shared machine.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_real_why_run_reports_every_key(why_run: tuple[Path, dict, str]) -> None:
    folder, report, _ = why_run
    assert [f["name"] for f in report["factors"]] == ["lr", "use_ema"]
    assert report["design"]["runs"] == 4 and report["design"]["seeds"] == [0, 1]
    assert {"resolution", "aliases"} <= set(report["design"])
    assert set(report["responses"]) == {"final_iou", "iou_epoch1", "collapsed"}
    for r in report["responses"].values():
        if "error" in r:
            continue
        assert {"gap", "shapley", "undo", "apply", "terms", "lack_of_fit", "verdict"} <= set(r)
        assert {"observed", "fitted", "ci"} <= set(r["gap"]) or {"observed", "fitted"} <= set(
            r["gap"])
        for e in r["undo"] + r["apply"]:
            assert {"value", "ci", "observed"} <= set(e)
        for t in r["terms"]:
            if not t.get("dropped") and t["p"] is not None:
                assert t["p_adjusted"] >= t["p"] - 1e-12
        shares = sum(s["value"] for s in r["shapley"].values())
        assert shares == pytest.approx(r["gap"]["fitted"], abs=1e-9)
        assert set(r["lack_of_fit"]) >= {"F", "p", "dof"}
    for name in ("why.json", "why.txt", "why.yaml", "sweep.yaml"):
        assert (folder / name).is_file()
    assert json.loads((folder / "why.json").read_text()) == report


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_real_why_run_holds_both_corners_and_results_repeats_it(
        why_run: tuple[Path, dict, str], capsys: pytest.CaptureFixture[str]) -> None:
    from camotune.results.why.sweep_data import read_why, trial_table

    folder, report, _ = why_run
    pair, _ = read_why(folder)
    table = trial_table([folder], pair.factors, pair.good.epochs, 1)
    assert len(table) == 8 and table["final_iou"].notna().all()
    cells = {tuple(row) for row in table[["lr", "use_ema"]].itertuples(index=False)}
    assert (-1, -1) in cells and (1, 1) in cells
    assert main(["results", str(folder), "--why", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["responses"] == report["responses"]
    assert main(["results", str(folder)]) == 0
    assert "== why: good (first level) against bad (second level) ==" in capsys.readouterr().out


def test_fold_over_dry_run_reads_why_yaml(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from camotune.results.why.sweep_data import write_why

    good = from_argv(["--lr", "0.001", "--img-size", "64", "--batch-size", "4",
                      "--no-use-ema", "--no-deep-supervision"])
    bad = from_argv(["--lr", "0.0001", "--img-size", "96", "--batch-size", "8",
                     "--use-ema", "--deep-supervision"])
    pair = design_pair(good, bad, seeds=(0, 1), max_runs=20)
    write_why(tmp_path, pair, max_runs=20, group=[], at_epoch=None)
    assert main(["why", "--fold-over", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "16 runs x 2 seed(s) [0, 1] = 32 trials" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["why.yaml"]
