"""Plots and parameter importance from sweep folders written by hand: which trials fANOVA
compares, the rung-bias panels' common scale, the learning curves' legends, files written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_files import SPACE, Events, write_sweep

from camotune.results.importance import (
    Comparable,
    comparable_trials,
    param_importances,
    rung_bias_figure,
    rung_groups,
)
from camotune.results.plots import learning_curves_figure, pyplot, write_plots
from camotune.results.read import load_sweep
from camotune.spaces import Space


def _trap_sweep(root: Path, *, completed: int = 10, stopped: int = 6) -> Path:
    """Completed trials (batch 4 or 8) whose final IoU rises with the LR alone, and trials at
    batch 16 that ASHA stopped at epoch 2 with an early IoU of 0.05. Mixing those epoch-2
    values with final values makes batch size look decisive; at one common epoch it is the
    LR."""
    space = Space.from_dict(SPACE)
    folder = write_sweep(root, space)
    ev = Events(folder, space)
    for i in range(completed):
        lr = 1e-4 * 10 ** (2 * i / (completed - 1))
        top = 0.3 + 0.04 * i
        ev.start(f"c{i}", {"lr": lr, "batch_size": (4, 8)[i % 2]})
        ev.epochs(f"c{i}", [top / 3, top / 2, top, top, top, top])
        ev.end(f"c{i}", "completed", 6)
    for i in range(stopped):
        ev.start(f"s{i}", {"lr": 1e-4 * 10 ** (2 * (i + 0.5) / stopped), "batch_size": 16})
        ev.epochs(f"s{i}", [0.03, 0.05])
        ev.end(f"s{i}", "asha_stopped", 2, rung=2)
    return folder


def test_comparable_trials_rule(tmp_path: Path) -> None:
    sweep = load_sweep(_trap_sweep(tmp_path / "a"))
    basis = comparable_trials(sweep)
    # 10 of 16 reached the last epoch (>= 8): that epoch, and only those trials
    assert basis.epoch == 6 and basis.rule == "last epoch"
    assert sorted(basis.trials["trial_id"]) == sorted(f"c{i}" for i in range(10))
    assert "10 trial(s) that reached epoch 6" in basis.describe()
    # 5 reached the end (< 8): the latest epoch reached by the most trials, the first rung
    few = load_sweep(_trap_sweep(tmp_path / "b", completed=5, stopped=6))
    basis = comparable_trials(few)
    assert basis.epoch == 2 and basis.rule == "reached by the most trials"
    assert len(basis.trials) == 11
    values = basis.trials.set_index("trial_id")["value"]
    assert values["c4"] == pytest.approx((0.3 + 0.16) / 2)  # its best up to epoch 2, not 0.46
    assert values["s0"] == pytest.approx(0.05)


@pytest.mark.slow
def test_importance_uses_comparable_trials_only(tmp_path: Path) -> None:
    sweep = load_sweep(_trap_sweep(tmp_path))
    imp = param_importances(sweep)
    assert max(imp, key=imp.get) == "lr" and sum(imp.values()) == pytest.approx(1.0)
    # the trap is real: each trial's best value, whatever epoch it stopped at, ranks batch size
    df = sweep.trials
    mixed = Comparable(0, df.assign(value=df["best_val_iou"]), "mixed")
    wrong = param_importances(sweep, basis=mixed)
    assert max(wrong, key=wrong.get) == "batch_size"
    written, notes = write_plots(sweep, tmp_path / "plots")
    assert "importance" in written
    assert "importance: fANOVA on 10 trial(s) that reached epoch 6 (last epoch)" in notes


def _mixed_sweep(root: Path) -> Path:
    """12 trials: 6 completed, 3 stopped at the first rung, 3 collapsed flat at 0."""
    space = Space.from_dict(SPACE)
    folder = write_sweep(root, space)
    ev = Events(folder, space)
    for i in range(12):
        tid = f"t{i}"
        ev.start(tid, {"lr": 1e-4 * 10 ** (2 * i / 11), "batch_size": (4, 8, 16)[i % 3]})
        top = 0.2 + 0.03 * i
        if i % 4 == 3:
            ev.epochs(tid, [0.0, 0.0, 0.0])
            ev.end(tid, "collapsed", 3)
        elif i % 4 == 1:
            ev.epochs(tid, [top / 3, top / 2])
            ev.end(tid, "asha_stopped", 2, rung=2)
        else:
            ev.epochs(tid, [top / 3, top / 2, top, top, top, top])
            ev.end(tid, "completed", 6)
    return folder


def test_learning_curves_name_the_best_trials_and_count_collapsed(tmp_path: Path) -> None:
    sweep = load_sweep(_mixed_sweep(tmp_path))
    fig = learning_curves_figure(sweep)
    ax = fig.axes[0]
    legends = [a for a in ax.get_children() if isinstance(a, type(ax.get_legend()))]
    texts = {lg.get_title().get_text(): [t.get_text() for t in lg.get_texts()]
             for lg in legends}
    best = sweep.trials.sort_values("best_val_iou", ascending=False)["trial_id"][:3]
    assert texts["best trials (best IoU)"] == [
        f"#{k + 1} {tid}: {sweep.trials.set_index('trial_id').loc[tid, 'best_val_iou']:.3f}"
        for k, tid in enumerate(best)]
    assert "collapsed (3)" in texts["stop reason (trials)"]
    assert "completed (6)" in texts["stop reason (trials)"]
    assert "3 collapsed" in [t.get_text() for t in ax.texts]
    # the three flat curves are drawn apart
    flat = [line for line in ax.get_lines() if line.get_linestyle() == "--"
            and len(line.get_ydata()) == 3]
    assert len({float(line.get_ydata()[0]) for line in flat}) == 3
    pyplot().close(fig)


def test_rung_bias_panels_share_one_scale(tmp_path: Path) -> None:
    sweep = load_sweep(_mixed_sweep(tmp_path))
    judged, passed = rung_groups(sweep)
    assert len(judged) == 12 and int(passed.sum()) == 9
    fig, note = rung_bias_figure(sweep)
    assert note is None
    first, second = fig.axes[:2]
    assert first.get_shared_y_axes().joined(first, second)
    assert first.get_ylim() == second.get_ylim()
    labels = [t.get_text() for t in first.get_xticklabels()]
    assert len(labels) == 5 and all("-" in lb for lb in labels)  # 12 LRs in 5 value ranges
    assert [t.get_text() for t in second.get_xticklabels()] == ["4", "8", "16"]
    pyplot().close(fig)


@pytest.mark.slow
def test_plots_importance_rung_bias_and_edge_warning(tmp_path: Path) -> None:
    """Ten trials, val_iou planted on the LR alone (best near the top of the range), half of
    them stopped at the first rung: every plot is written, fANOVA ranks the LR first, and the
    best trial's LR at the edge of its range is reported."""
    from camotune.results.plots import write_plots

    space = Space.from_dict(SPACE)
    folder = write_sweep(tmp_path, space)
    ev = Events(folder, space)
    for i in range(10):
        lr = 1e-4 * 10 ** (2 * i / 9)  # 1e-4 ... 1e-2, log-spaced
        tid = f"t{i}"
        ev.start(tid, {"lr": lr, "batch_size": (4, 8, 16)[i % 3]})
        top = 0.05 + 0.05 * i
        if i < 5:
            ev.epochs(tid, [top / 2, top])
            ev.end(tid, "asha_stopped", 2, rung=2)
        else:
            ev.epochs(tid, [top / 2, top, top, top, top, top])
            ev.end(tid, "completed", 6)
    sweep = load_sweep(folder)
    written, notes = write_plots(sweep, tmp_path / "plots")
    assert set(written) == {"learning_curves", "params_vs_iou", "importance", "rung_bias",
                            "compute"}
    for path in written.values():
        assert path.stat().st_size > 5_000
    from camotune.results.importance import param_importances, rung_groups

    imp = param_importances(sweep)
    assert max(imp, key=imp.get) == "lr" and sum(imp.values()) == pytest.approx(1.0)
    judged, passed = rung_groups(sweep)
    assert len(judged) == 10 and int(passed.sum()) == 5
    assert any("lr=0.01 sits at the high edge" in n for n in notes)
    assert not any("skipped" in n for n in notes)
