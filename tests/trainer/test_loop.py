"""fit(): files and columns, exact resume, progressive unfreeze, divergence and OOM exits."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from camotune.cli import main
from camotune.errors import JobFailed
from camotune.trainer.checkpoint import load
from camotune.trainer.config import TrainConfig, from_argv, load_yaml
from camotune.trainer.history import METRIC_KEYS, read_history
from camotune.trainer.loop import checkpoint_due, fit, unfreeze_level


def tiny(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset_path=str(dataset), checkpoint_dir=str(out), backbone="edgenext_xx_small",
                pretrained=False, img_size=64, epochs=2, stage1_epochs=1, batch_size=4,
                accumulation_steps=2, num_workers=0, threads=1, lr=2e-3, full_metrics_every=2,
                seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_two_stages_write_every_file_and_column(synth_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny(synth_dataset, tmp_path / "run", use_ema=True, deep_supervision=True)
    rows = []
    result = fit(cfg, report=rows.append)
    out = tmp_path / "run"
    for name in ("config.yaml", "command.txt", "history.csv", "last.pt", "best.pt", "preview.png"):
        assert (out / name).is_file(), name
    assert load_yaml(str(out / "config.yaml")) == cfg
    command = (out / "command.txt").read_text().split()
    assert command[:2] == ["camotune", "train"]
    assert from_argv(command[2:]) == cfg
    history = read_history(out / "history.csv")
    assert list(history[0]) == list(METRIC_KEYS)
    assert [r["epoch"] for r in history] == [1, 2] and [r["stage"] for r in history] == [1, 2]
    last = history[-1]
    for key in METRIC_KEYS:  # the last epoch computes everything
        assert last[key] is not None and math.isfinite(last[key]), key
    assert history[0]["val_sm"] is None  # full metrics only every 2 epochs and at the last
    assert last["val_iou"] == last["val_iou_raw"]  # --objective raw, the default
    assert last["val_fg_ratio"] == last["val_fg_ratio_raw"]
    steps = cfg.optimizer_steps_per_epoch(22, 1) + cfg.optimizer_steps_per_epoch(22, 2)
    assert last["optimizer_steps"] == steps and last["images_seen"] == 2 * 22
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["val_iou"] == last["val_iou"]
    assert result.best_val_iou == max(r["val_iou"] for r in history)
    state = load(out / "best.pt")
    assert state["best_weights"] in ("raw", "ema") and state["ema"] is not None
    assert state["stage"] in (1, 2) and state["best_val_iou"] == result.best_val_iou


def test_objective_raw_ranks_on_the_raw_weights_even_when_the_ema_scores_higher(
        synth_dataset: Path, tmp_path: Path) -> None:
    """EMA 0.9999 without warmup stays at the initial weights (predicting most pixels as
    foreground); the raw weights of this tiny run predict all background. ``--objective raw``
    must not let the EMA's floor become val_iou; ``best`` takes the higher of the two."""
    kw = dict(use_ema=True, ema_decay=0.9999, ema_warmup=False)
    raw = fit(tiny(synth_dataset, tmp_path / "raw", objective="raw", **kw)).history
    best = fit(tiny(synth_dataset, tmp_path / "best", objective="best", **kw)).history
    assert any(r["val_iou_ema"] > r["val_iou_raw"] for r in raw)  # the case this is about
    for r in raw:
        assert r["val_iou"] == r["val_iou_raw"]
        assert r["val_fg_ratio"] == r["val_fg_ratio_raw"]
    assert raw[-1]["best_val_iou"] == max(r["val_iou_raw"] for r in raw)
    assert load(tmp_path / "raw" / "best.pt")["best_weights"] == "raw"
    for r, b in zip(raw, best, strict=True):  # the objective changes the records, not training
        assert (b["val_iou_raw"], b["val_iou_ema"]) == (r["val_iou_raw"], r["val_iou_ema"])
        assert b["val_iou"] == max(b["val_iou_raw"], b["val_iou_ema"])
        assert b["val_fg_ratio_raw"] == r["val_fg_ratio_raw"]
    state = load(tmp_path / "best" / "best.pt")
    assert state["best_weights"] == "ema" and state["best_val_iou"] == best[-1]["best_val_iou"]


def test_objective_without_ema_is_raw(synth_dataset: Path, tmp_path: Path) -> None:
    rows = fit(tiny(synth_dataset, tmp_path / "e", epochs=1, objective="ema")).history
    assert rows[0]["val_iou"] == rows[0]["val_iou_raw"] and rows[0]["val_iou_ema"] is None
    assert load(tmp_path / "e" / "best.pt")["best_weights"] == "raw"


def test_a_finished_run_leaves_nothing_for_the_collector_to_keep(
        synth_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a reused Ray actor relies on (search/trainable.py freezes what is loaded before a
    trial and collects after it): once `fit` returns and one collection runs, the run's
    model, EMA, optimizer and data are gone."""
    import gc
    import weakref

    from camotune.trainer import loop

    refs: dict[str, weakref.ref] = {}
    init = loop._Run.__init__

    def keep_refs(self, cfg, data, *args, **kw) -> None:
        init(self, cfg, data, *args, **kw)
        refs.update(run=weakref.ref(self), model=weakref.ref(self.model),
                    ema=weakref.ref(self.ema), optimizer=weakref.ref(self.optimizer),
                    data=weakref.ref(data))

    monkeypatch.setattr(loop._Run, "__init__", keep_refs)
    gc.collect()
    gc.freeze()
    try:
        fit(tiny(synth_dataset, tmp_path / "r", use_ema=True, deep_supervision=True))
        gc.collect()
        assert len(refs) == 5
        assert [name for name, ref in refs.items() if ref() is not None] == []
    finally:
        gc.unfreeze()


class Killed(Exception):
    pass


@pytest.mark.parametrize(("every", "epochs", "kill_at", "resumes_at"), [
    (1, 3, 1, 2),  # last.pt every epoch
    (2, 4, 3, 3),  # last.pt at 1 (end of stage 1), 2, 4: killed after 3, epoch 3 is replayed
])
def test_interrupted_run_resumes_to_the_same_history(
        synth_dataset: Path, tmp_path: Path, every: int, epochs: int, kill_at: int,
        resumes_at: int) -> None:
    kw = dict(epochs=epochs, stage1_epochs=1, use_ema=True, progressive_unfreeze=True,
              stage2_batch_size=3, warmup_steps=2, checkpoint_every=every)
    straight = fit(tiny(synth_dataset, tmp_path / "a", **kw))

    def kill(row: dict) -> None:
        if row["epoch"] == kill_at:
            raise Killed

    with pytest.raises(Killed):
        fit(tiny(synth_dataset, tmp_path / "b", **kw), report=kill)
    history = read_history(tmp_path / "b" / "history.csv")
    assert [r["epoch"] for r in history] == list(range(1, kill_at + 1))
    assert load(tmp_path / "b" / "last.pt")["epoch"] == resumes_at - 1
    resumed_cfg = dataclasses.replace(tiny(synth_dataset, tmp_path / "b", **kw),
                                      resume_from=str(tmp_path / "b" / "last.pt"))
    rows = []
    resumed = fit(resumed_cfg, report=rows.append)
    assert [r["epoch"] for r in rows] == list(range(resumes_at, epochs + 1))
    skip = {"epoch_time_s", "imgs_per_s"}
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert {k: v for k, v in a.items() if k not in skip} == \
               {k: v for k, v in b.items() if k not in skip}
    assert resumed.best_val_iou == straight.best_val_iou


def test_checkpoint_every_2_writes_last_pt_at_epochs_2_and_3(
        synth_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from camotune.trainer import checkpoint

    writes: list[tuple[str, int]] = []
    real = checkpoint.save_atomic

    def recording(state: dict, path) -> None:
        writes.append((Path(path).name, state["epoch"]))
        real(state, path)

    monkeypatch.setattr(checkpoint, "save_atomic", recording)
    cfg = tiny(synth_dataset, tmp_path / "k", epochs=3, stage1_epochs=3, checkpoint_every=2)
    fit(cfg)
    assert [e for name, e in writes if name == "last.pt"] == [2, 3]
    assert load(tmp_path / "k" / "last.pt")["epoch"] == 3
    # best.pt holds the best epoch even when that epoch wrote no last.pt
    best = load(tmp_path / "k" / "best.pt")
    history = read_history(tmp_path / "k" / "history.csv")
    assert best["best_val_iou"] == max(r["val_iou"] for r in history)
    assert best["metrics"]["val_iou"] == best["best_val_iou"]


def test_checkpoint_epochs_every_k_stage_end_last_and_milestones() -> None:
    cfg = TrainConfig(epochs=10, stage1_epochs=3, checkpoint_every=4)
    assert [e for e in range(1, 11) if checkpoint_due(cfg, e)] == [3, 4, 8, 10]
    assert [e for e in range(1, 11) if checkpoint_due(cfg, e, {2, 6})] == [2, 3, 4, 6, 8, 10]
    every = TrainConfig(epochs=3, stage1_epochs=1)
    assert all(checkpoint_due(every, e) for e in (1, 2, 3))


def test_resume_drops_history_rows_after_the_checkpoint(synth_dataset: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "r"
    fit(tiny(synth_dataset, out, epochs=2, stage1_epochs=2))
    state = load(out / "last.pt")
    state["epoch"] = 1  # as if the run died while epoch 2 was being written
    torch.save(state, out / "epoch1.pt")
    cfg = dataclasses.replace(tiny(synth_dataset, out, epochs=2, stage1_epochs=2),
                              resume_from=str(out / "epoch1.pt"))
    fit(cfg)
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [1, 2]


def test_progressive_unfreeze_keeps_one_optimizer(synth_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny(synth_dataset, tmp_path / "p", epochs=4, stage1_epochs=1,
               progressive_unfreeze=True, accumulation_steps=1, batch_size=8)
    assert [unfreeze_level(cfg, e) for e in range(1, 5)] == [0, 1, 2, 3]
    fit(cfg)
    state = load(tmp_path / "p" / "last.pt")
    n = len(read_history(tmp_path / "p" / "history.csv"))
    assert n == 4 and state["unfreeze_level"] == 3
    steps_per_epoch = cfg.optimizer_steps_per_epoch(22, 1)  # 24 images, 2 held out
    # AdamW's per-parameter step counters: the head trained all 4 epochs, the deepest
    # backbone third epochs 2-4, the shallowest only epoch 4. Moments were never reset.
    counts = sorted({int(s["step"]) for s in state["optimizer"]["state"].values()})
    assert counts == [steps_per_epoch * k for k in (1, 2, 3, 4)]
    assert state["scheduler"]["step_count"] == 4 * steps_per_epoch


def test_checkpoint_dir_with_a_run_is_refused(synth_dataset: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c"
    fit(tiny(synth_dataset, out, epochs=1, stage1_epochs=1))
    argv = ["train", "--dataset-path", str(synth_dataset), "--checkpoint-dir", str(out),
            "--backbone", "edgenext_xx_small", "--no-pretrained", "--img-size", "64",
            "--epochs", "1", "--stage1-epochs", "1", "--num-workers", "0"]
    assert main(argv) == 2
    assert "--resume-from" in capsys.readouterr().err


def test_resume_rejects_flags_that_change_the_run(synth_dataset: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "d"
    fit(tiny(synth_dataset, out, epochs=1, stage1_epochs=1))
    last = str(out / "last.pt")
    assert main(["train", "--resume-from", last, "--lr", "0.5"]) == 2
    assert "--lr" in capsys.readouterr().err
    # run-time flags may change; the run is already complete, so it only re-validates
    assert main(["train", "--resume-from", last, "--num-workers", "0", "--threads", "1"]) == 0


def test_nan_loss_exits_1_as_diverged(synth_dataset: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    from camotune.trainer import losses

    real = losses.CamoLoss.forward

    def poisoned(self, out, mask):
        total, terms = real(self, out, mask)
        return total * float("nan"), terms

    monkeypatch.setattr(losses.CamoLoss, "forward", poisoned)
    argv = ["train", "--dataset-path", str(synth_dataset), "--checkpoint-dir",
            str(tmp_path / "n"), "--backbone", "edgenext_xx_small", "--no-pretrained",
            "--img-size", "64", "--epochs", "1", "--stage1-epochs", "1", "--num-workers", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err


def test_out_of_memory_exits_1_as_oom(synth_dataset: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from camotune.model import CamoXpert

    def oom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(CamoXpert, "forward", oom)
    with pytest.raises(JobFailed) as exc:
        fit(tiny(synth_dataset, tmp_path / "o", epochs=1))
    assert exc.value.reason == "oom"


def test_compile_wraps_the_step_model_at_every_stage(synth_dataset: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile reaches torch.compile once per trainable set (stage 1, then stage 2) and trains
    the same as eager; the eager backend stands in for inductor on the CPU."""
    calls: list[torch.nn.Module] = []
    real = torch.compile

    def compile_eagerly(module: torch.nn.Module, **kw):
        calls.append(module)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    compiled = read_history_of(fit(tiny(synth_dataset, tmp_path / "c", compile=True)))
    monkeypatch.setattr(torch, "compile", real)
    plain = read_history_of(fit(tiny(synth_dataset, tmp_path / "p")))
    assert len(calls) >= 2  # stage 1 (frozen backbone), then the unfrozen stage 2
    assert [r["epoch"] for r in compiled] == [1, 2]
    for a, b in zip(compiled, plain, strict=True):
        assert a["val_iou"] == pytest.approx(b["val_iou"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def read_history_of(result) -> list[dict]:
    return read_history(Path(result.checkpoint_dir) / "history.csv")
