"""The sweep's progress view: counts, ETA, the TTY table and the pipe's lines."""

from __future__ import annotations

import io
import logging

import pytest

from camotune.search.progress import SweepProgress, fmt_duration, fmt_value, rung_epochs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _progress(clock: Clock, *, live: bool = False, stream=None) -> SweepProgress:
    return SweepProgress(6, 4, rungs=rung_epochs(4, 1, 2), live=live, stream=stream,
                         summary_every=60.0, refresh_every=0.0, clock=clock)


def test_counts_and_eta_from_known_durations() -> None:
    clock = Clock()
    p = _progress(clock)
    p.trial_started("a", {"lr": 0.001})
    p.trial_started("b", {"lr": 0.002})
    assert p.eta() is None  # no trial has ended: unknown
    assert "ETA unknown" in p.summary_line()
    clock.now += 10
    p.trial_ended("a", "asha_stopped", best=0.25)
    clock.now += 20
    p.trial_ended("b", "completed", best=0.5)
    p.trial_started("c", {"lr": 0.003})
    clock.now += 5
    c = p.counts()
    assert (c.done, c.completed, c.stopped, c.running, c.pending) == (2, 1, 1, 1, 3)
    # mean duration 15 s; 3 pending x 15 + running c (age 5) 10 = 55 s over 2 slots
    assert p.eta() == pytest.approx(37.5)
    assert p.headline() == "2 of 6 done (1 completed, 1 stopped), 1 running, 3 pending"
    assert p.best()[0] == "b"


def test_failures_are_counted_apart_from_stops() -> None:
    clock = Clock()
    p = _progress(clock)
    for tid in "xy":
        p.trial_started(tid, {})
        p.trial_ended(tid, "error", message="BadInput: boom\nmore")
    assert p.headline() == "2 of 6 done (0 completed, 0 stopped, 2 failed), 0 running, 4 pending"


def test_pipe_mode_one_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    p = _progress(clock)
    with caplog.at_level(logging.INFO, logger="camotune.search.progress"):
        p.trial_started("a", {"lr": 0.000123456789, "use_ema": True})
        for epoch in range(1, 5):  # rungs at 1, 2 and the last epoch 4: epoch 3 is quiet
            clock.now += 1
            p.trial_epoch("a", epoch, 0.1234567 * epoch, 0.1234567 * epoch)
            p.tick()
        p.trial_ended("a", "completed", best=0.4938)
        clock.now += 61
        p.tick()  # the periodic summary
        p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "trial a started lr=0.0001235 use_ema=true"
    assert [line.split()[2] for line in lines[1:4]] == ["epoch=1/4", "epoch=2/4", "epoch=4/4"]
    assert "val_iou=0.2469" in lines[2]
    assert lines[4].startswith("trial a ended stop_reason=completed epochs=4 best_val_iou=0.4938")
    assert lines[5].startswith("progress: 1 of 6 done") and "ETA" in lines[5]
    assert len(lines) == 7  # the summary again at close; nothing redrawn


def test_tty_mode_draws_a_live_table_and_logs_no_event_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    out = io.StringIO()
    p = _progress(clock, live=True, stream=out)
    with caplog.at_level(logging.INFO, logger="camotune.search.progress"):
        p.trial_started("a", {"lr": 0.001, "batch_size": 8})
        p.trial_started("b", {"lr": 0.01, "batch_size": 4})
        p.tick()
        assert p._live is not None  # rich Live, redrawn in place
        clock.now += 30
        p.trial_epoch("a", 2, 0.3333333, 0.3333333)
        p.trial_ended("b", "collapsed", best=0.01)
        p.tick()
        p.close()
    assert not caplog.records
    text = out.getvalue()
    assert "1 of 6 done (0 completed, 1 stopped), 1 running, 4 pending" in text
    assert "best 0.3333 (trial a)" in text and "0.3333333" not in text
    assert "collapsed" in text and "ETA" in text


def test_render_columns() -> None:
    clock = Clock()
    p = _progress(clock)
    p.trial_started("a", {"lr": 0.00012346})
    clock.now += 75
    header, rows = p.table_rows()
    assert header == ["trial", "state", "epoch", "val_iou", "best", "time", "lr"]
    assert rows == [["a", "running", "0/4", "-", "-", "1m15s", "0.0001235"]]


def test_formats() -> None:
    assert fmt_value(0.1234567) == "0.1235" and fmt_value(3e-5) == "3e-05"
    assert fmt_value(None) == "-" and fmt_value(False) == "false" and fmt_value(8) == "8"
    assert (fmt_duration(None), fmt_duration(5), fmt_duration(125), fmt_duration(3725)) == \
        ("unknown", "5s", "2m05s", "1h02m")
    assert rung_epochs(6, 2, 3) == {2, 6} and rung_epochs(18, 2, 3) == {2, 6, 18}


def test_trials_ended_before_a_resume_count_but_give_no_eta() -> None:
    clock = Clock()
    p = _progress(clock)
    p.add_ended("old", "completed", epochs=4, best=0.3)
    p.trial_started("new", {})
    assert p.headline() == "1 of 6 done (1 completed, 0 stopped), 1 running, 4 pending"
    assert p.eta() is None
    assert p.table_rows()[1][1][5] == "-"
