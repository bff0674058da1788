"""The sweep tracker driven directly (as the records callback drives it) against a real MLflow
server: re-attachment after a crash, orphans, an outage in the middle of a sweep; and the
default sqlite store. Fast compared to a Ray sweep, and deterministic."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from camotune.search.settings import SweepSettings, write_settings
from camotune.search.trainable import trial_config
from camotune.sweepdir import TRIALS_FILE, append_event
from camotune.tracking import RUNS_FILE, SweepTracker
from camotune.trainer.config import TrainConfig, to_dict
from camotune.trainer.history import METRIC_KEYS, HistoryWriter

pytestmark = pytest.mark.slow


class FakeDriver:
    """Plays the records callback: trials.jsonl, history.csv files and the tracker calls."""

    def __init__(self, settings: SweepSettings, tracker: SweepTracker) -> None:
        self.settings = settings
        self.tracker = tracker
        self.path = settings.sweep_dir / TRIALS_FILE
        self.histories: dict[str, HistoryWriter] = {}

    def start(self, tid: str, params: dict, *, restored: bool = False) -> None:
        cfg = trial_config(self.settings, params, tid)
        record = {"event": "start", "trial_id": tid, "params": params, "config": to_dict(cfg),
                  "trial_dir": f"trials/{tid}", "lr_stage1": cfg.resolved_lr(1),
                  "lr_stage2": cfg.resolved_lr(2), "restored": restored,
                  "resources": {"cpu": 1.0, "gpu": 0.0}}
        folder = self.settings.sweep_dir / "trials" / tid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(f"lr: {params.get('lr', 1e-3)}\n")
        (folder / "command.txt").write_text("camotune train --lr 0.001\n")
        # A restored trial keeps its rows (the trainer drops none: it resumes at the last).
        self.histories[tid] = HistoryWriter(folder / "history.csv",
                                            keep_until=10**6 if restored else None)
        append_event(self.path, record)
        self.tracker.trial_start(tid, record)

    def epoch(self, tid: str, epoch: int, *, report: bool = True) -> dict:
        row = {k: None for k in METRIC_KEYS}
        row.update(epoch=epoch, stage=1, train_loss=1.0 / epoch, val_iou=iou(tid, epoch),
                   best_val_iou=max(iou(tid, e) for e in range(1, epoch + 1)), lr=1e-3)
        self.histories[tid].append(row)
        if report:  # else the driver died before the report reached it
            append_event(self.path, {"event": "epoch", "trial_id": tid, "epoch": epoch,
                                     "metrics": row, "seconds": float(epoch)})
            self.tracker.trial_epoch(tid, row)
        return row

    def end(self, tid: str, reason: str, epochs: int, rung: int | None = None) -> None:
        record = {"event": "end", "trial_id": tid, "stop_reason": reason, "rung": rung,
                  "epochs": epochs, "best_val_iou": max(iou(tid, e) for e in range(1, epochs + 1)),
                  "last_val_iou": iou(tid, epochs), "gpu_seconds": 2.0 * epochs,
                  "message": "", "evidence": {}}
        append_event(self.path, record)
        self.tracker.trial_end(tid, record, self.settings.sweep_dir / "trials" / tid)

    def orphaned(self, tid: str) -> None:
        append_event(self.path, {"event": "orphaned", "trial_id": tid})
        self.tracker.trial_orphaned(tid)


def iou(tid: str, epoch: int) -> float:
    return round(0.1 * epoch + 0.01 * (sum(map(ord, tid)) % 7), 4)


def make_settings(tmp_path: Path, dataset, **kw) -> SweepSettings:
    from camotune.spaces import load_space

    base = TrainConfig(dataset_path=str(dataset), backbone="edgenext_xx_small", pretrained=False)
    settings = SweepSettings(name=kw.pop("name", "sweep1"), storage_path=str(tmp_path / "runs"),
                             space=load_space("smoke"), space_source="smoke", base=base,
                             experiment=kw.pop("experiment", f"exp-{uuid.uuid4().hex[:8]}"),
                             **kw)
    settings.sweep_dir.mkdir(parents=True)
    write_settings(settings)
    return settings


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def steps(client, run_id: str, key: str = "val_iou") -> list[tuple[int, float]]:
    return sorted((m.step, round(m.value, 4)) for m in client.get_metric_history(run_id, key))


def test_resume_reattaches_to_the_same_runs(tmp_path, synth_dataset, mlflow_server):
    """A sweep stops (time budget) and its driver is gone (its tracker pickled in tuner.pkl,
    its session lost, the last runs missing from the run map); the resumed one re-attaches:
    no duplicate runs, a restored trial keeps its run and its history (the epoch whose report
    never arrived comes from history.csv), an orphan is closed KILLED."""
    settings = make_settings(tmp_path, synth_dataset, tracking_uri=mlflow_server.uri)
    tracker = SweepTracker.for_settings(settings)
    blob = pickle.dumps(tracker)  # what Tuner writes into tuner.pkl at the start
    first = FakeDriver(settings, tracker)
    tracker.sweep_start(settings)
    first.start("a", {"lr": 1e-3, "batch_size": 8})
    first.start("b", {"lr": 3.2e-4, "batch_size": 4, "use_ema": True})
    for epoch in (1, 2):
        first.epoch("a", epoch)
    first.epoch("b", 1)
    first.end("a", "asha_stopped", 2, rung=2)
    first.start("c", {"lr": 2e-3, "batch_size": 16})
    first.epoch("b", 2, report=False)  # the report never reaches the driver
    tracker.sweep_end(settings.sweep_dir)  # the time budget ran out: b and c are interrupted
    stopped = {r.data.tags["camotune.trial_id"]: r for r in runs_of(
        mlflow_server.client(), settings.experiment) if "camotune.trial_id" in r.data.tags}
    assert stopped["b"].info.status == "KILLED"
    assert stopped["b"].data.tags["camotune.interrupted"] == "true"
    before = tracker.run_ids()
    tracker.close()  # the process is gone: only files remain
    # ... and it died right after creating the runs of b and c, before saving the map.
    run_map = yaml.safe_load((settings.sweep_dir / RUNS_FILE).read_text())
    for tid in ("b", "c"):
        del run_map["trials"][tid]
    # ... and a's end is in trials.jsonl (and "ended" in the map, saved when the calls were
    # queued) but the call closing its run was still queued when the driver died
    assert "a" in run_map["ended"]
    mlflow_server.client().update_run(before["a"], status="RUNNING")
    (settings.sweep_dir / RUNS_FILE).write_text(yaml.safe_dump(run_map))

    resumed = pickle.loads(blob)
    second = FakeDriver(settings, resumed)
    resumed.sweep_start(settings)
    second.start("b", {"lr": 3.2e-4, "batch_size": 4, "use_ema": True}, restored=True)
    second.orphaned("c")
    second.epoch("b", 3)
    second.end("b", "completed", 3)
    second.start("d", {"lr": 5e-4, "batch_size": 8})
    second.epoch("d", 1)
    second.end("d", "diverged", 1)
    resumed.sweep_end(settings.sweep_dir)

    client = mlflow_server.client()
    runs = runs_of(client, settings.experiment)
    assert len(runs) == 5  # the parent and a, b, c, d: nothing duplicated
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.tags["camotune.interrupted"] == "false"
    children = {r.data.tags["camotune.trial_id"]: r for r in runs if r not in parent}
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
               for r in children.values())
    assert {t: r.info.run_id for t, r in children.items() if t in before} == before
    assert resumed.run_ids() == {t: r.info.run_id for t, r in children.items()}
    assert (settings.sweep_dir / RUNS_FILE).is_file()

    expected = {"a": ("KILLED", "asha_stopped", [1, 2]), "b": ("FINISHED", "completed", [1, 2, 3]),
                "d": ("FAILED", "diverged", [1])}
    for tid, (status, reason, epochs) in expected.items():
        run = children[tid]
        assert run.info.status == status and run.data.tags["camotune.stop_reason"] == reason
        assert steps(client, run.info.run_id) == [(e, iou(tid, e)) for e in epochs]
    assert children["a"].data.tags["camotune.rung"] == "2"
    assert children["b"].data.tags["camotune.interrupted"] == "false"
    assert children["b"].info.run_name == "bs4-lr3.2e-4-ema"
    orphan = children["c"]
    assert orphan.info.status == "KILLED" and orphan.data.tags["camotune.orphaned"] == "true"
    params = children["b"].data.params
    assert params["batch_size"] == "4" and params["lr_stage1"] == repr(3.2e-4)
    assert set(to_dict(settings.base)) <= set(params)
    artifacts = {a.path for a in client.list_artifacts(children["b"].info.run_id)}
    assert {"config.yaml", "command.txt", "history.csv"} <= artifacts
    top = client.get_run(parent[0].info.run_id)
    assert top.data.metrics["compute_seconds"] == 2.0 * (2 + 3 + 1)
    assert top.data.tags["camotune.best_trial_id"] == "b"
    assert top.data.params["base.backbone"] == "edgenext_xx_small"
    assert top.data.params["grace_period"] == "2" and top.data.params["searcher"] == "tpe"
    assert top.data.params["rungs"] == ",".join(map(str, settings.rung_epochs))
    assert top.data.params["rung_metric"] == settings.rung_metric
    assert top.data.tags["camotune.trials_by_stop_reason"].startswith("asha_stopped=1")
    assert set(top.data.metrics) == {"best_val_iou", "best_epoch", "compute_seconds",
                                     "trials_started", "trials_completed",
                                     "trials_stopped_early", "trials_failed", "trials_orphaned"}
    assert top.data.tags["camotune.dataset_hash"].startswith("sha256:")
    parent_files = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert "sweep.yaml" in parent_files and "repro" in parent_files


class Proxy:
    """A TCP forwarder to the MLflow server that can go away (connections refused and cut)
    and come back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.up()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        for sock in [*([self._listener] if self._listener else []), *self._open]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._listener = None
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()


def test_an_outage_mid_sweep_is_buffered_and_replayed(tmp_path, synth_dataset, mlflow_server,
                                                      caplog):
    proxy = Proxy(mlflow_server.port)
    settings = make_settings(tmp_path, synth_dataset, tracking_uri=proxy.uri)
    tracker = SweepTracker.for_settings(settings)
    driver = FakeDriver(settings, tracker)
    tracker.sweep_start(settings)
    tracker.session.writer.retry_interval_s = 0.0
    driver.start("a", {"lr": 1e-3})
    driver.epoch("a", 1)
    proxy.down()
    caplog.set_level(logging.WARNING, logger="camotune.tracking.writer")
    started = time.monotonic()
    driver.epoch("a", 2)
    driver.epoch("a", 3)
    driver.start("b", {"lr": 2e-3})  # its run is created once the server is back
    driver.epoch("b", 1)
    assert time.monotonic() - started < 1  # enqueued: the writer thread meets the outage
    writer = tracker.session.writer
    while writer.errors == 0 and time.monotonic() - started < 60:
        time.sleep(0.1)
    assert writer.errors >= 1 and writer.pending >= 4
    proxy.up()
    driver.epoch("a", 4)
    driver.end("a", "completed", 4)
    driver.end("b", "collapsed", 1)
    tracker.sweep_end(settings.sweep_dir)
    proxy.down()

    assert tracker.session.writer.pending == 0 and tracker.session.writer.lost == 0
    client = mlflow_server.client()
    runs = runs_of(client, settings.experiment)
    children = {r.data.tags["camotune.trial_id"]: r for r in runs
                if "camotune.trial_id" in r.data.tags}
    assert set(children) == {"a", "b"} and len(runs) == 3
    assert steps(client, children["a"].info.run_id) == [(e, iou("a", e)) for e in (1, 2, 3, 4)]
    assert steps(client, children["b"].info.run_id) == [(1, iou("b", 1))]
    assert children["b"].info.status == "KILLED"
    parent = next(r for r in runs if "camotune.trial_id" not in r.data.tags)
    assert int(parent.data.tags["camotune.tracking_errors"]) >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert all(r.name.startswith("camotune") for r in caplog.records if r.levelname == "WARNING")
    assert sum("calls are buffered" in w for w in warnings) == 1
    assert sum("works again" in w for w in warnings) == 1


def test_default_store_is_sqlite_in_the_storage_path(tmp_path, synth_dataset, monkeypatch):
    """No URI: ``<storage-path>/mlflow.db``, artifacts under ``<storage-path>/mlartifacts``,
    nothing in the working directory (no ./mlruns)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    settings = make_settings(tmp_path, synth_dataset)
    tracker = SweepTracker.for_settings(settings)
    driver = FakeDriver(settings, tracker)
    tracker.sweep_start(settings)
    driver.start("a", {"lr": 1e-3})
    driver.epoch("a", 1)
    driver.end("a", "completed", 1)
    tracker.sweep_end(settings.sweep_dir)

    storage = Path(settings.storage_path)
    assert (storage / "mlflow.db").is_file()
    run_id = tracker.run_ids()["a"]
    uploaded = list((storage / "mlartifacts").rglob(f"{run_id}/artifacts/config.yaml"))
    assert len(uploaded) == 1
    assert list(work.iterdir()) == [] and not (storage / "mlruns").exists()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    assert steps(client, run_id) == [(1, iou("a", 1))]


def run_sync(sweep_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, "-m", "camotune", "sync", str(sweep_dir)],
                          capture_output=True, text=True, env=env, timeout=300)


def snapshot(client, experiment: str) -> dict:
    """Every run: status, tags that matter, and the full history of every metric."""
    out = {}
    for run in runs_of(client, experiment):
        histories = {key: sorted((m.step, m.timestamp, m.value)
                                 for m in client.get_metric_history(run.info.run_id, key))
                     for key in run.data.metrics}
        out[run.info.run_id] = (run.info.status, run.data.tags.get("camotune.run_key"),
                                dict(run.data.params), histories)
    return out


def test_an_outage_that_outlasts_the_sweep_is_journaled_and_synced(tmp_path, synth_dataset,
                                                                    mlflow_server, caplog):
    """The server goes away mid-sweep and is still gone at its end: the Tune loop never
    waits, the unsent calls are kept in the sweep folder and the last line says how many and
    how to send them; `camotune sync` refuses (exit 2, one line) while the server is down, then
    sends everything: one run per trial, none RUNNING, every epoch once; a second sync
    changes nothing."""
    from camotune.tracking.journal import JOURNAL_FILE, Journal

    proxy = Proxy(mlflow_server.port)
    settings = make_settings(tmp_path, synth_dataset, tracking_uri=proxy.uri)
    tracker = SweepTracker.for_settings(settings)
    driver = FakeDriver(settings, tracker)
    tracker.sweep_start(settings)
    driver.start("a", {"lr": 1e-3})
    driver.epoch("a", 1)
    assert tracker.session.writer.flush(force=True, timeout=120)
    proxy.down()
    caplog.set_level(logging.INFO, logger="camotune.tracking")
    started = time.monotonic()
    for epoch in (2, 3):
        driver.epoch("a", epoch)
    driver.end("a", "completed", 3)
    driver.start("b", {"lr": 2e-3})  # its run never reaches the server during the sweep
    driver.epoch("b", 1)
    driver.end("b", "asha_stopped", 1, rung=1)
    assert time.monotonic() - started < 2  # only enqueued
    tracker.sweep_end(settings.sweep_dir)
    tracker.close()

    journal = Journal(settings.sweep_dir / JOURNAL_FILE)
    unsent = journal.count_unsent()
    assert unsent >= 10
    assert {e["op"]["op"] for e in journal.unsent()} >= {"create", "epoch", "end", "tags"}
    last = [r.getMessage() for r in caplog.records if "camotune sync" in r.getMessage()]
    assert len(last) == 1 and f"{unsent} tracking calls are not sent" in last[0]
    assert str(settings.sweep_dir) in last[0]
    summary = [r.getMessage() for r in caplog.records if "trial runs" in r.getMessage()]
    assert "1 trial runs" in summary[-1]  # b's run does not exist yet, and is not claimed

    refused = run_sync(settings.sweep_dir)
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "not reachable" in refused.stderr
    assert journal.count_unsent() == unsent

    proxy.up()
    done = run_sync(settings.sweep_dir)
    assert done.returncode == 0, done.stderr
    assert f"{unsent} calls sent" in done.stderr and journal.count_unsent() == 0
    client = mlflow_server.client()
    runs = runs_of(client, settings.experiment)
    children = {}
    for run in runs:
        tid = run.data.tags.get("camotune.trial_id")
        if tid is not None:
            assert tid not in children, f"two runs for trial {tid}"
            children[tid] = run
    assert set(children) == {"a", "b"} and len(runs) == 3
    assert all(r.info.status != "RUNNING" for r in runs)
    assert children["a"].info.status == "FINISHED" and children["b"].info.status == "KILLED"
    assert children["b"].data.tags["camotune.stop_reason"] == "asha_stopped"
    parent = next(r for r in runs if "camotune.trial_id" not in r.data.tags)
    assert children["b"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    for tid, epochs in (("a", 3), ("b", 1)):
        for key in ("val_iou", "train_loss", "epoch"):
            history = client.get_metric_history(children[tid].info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), (tid, key)
    assert steps(client, children["a"].info.run_id) == [(e, iou("a", e)) for e in (1, 2, 3)]
    run_map = yaml.safe_load((settings.sweep_dir / RUNS_FILE).read_text())
    assert run_map["trials"] == {t: r.info.run_id for t, r in children.items()}

    before = snapshot(client, settings.experiment)
    again = run_sync(settings.sweep_dir)
    assert again.returncode == 0 and "nothing to send" in again.stderr
    assert snapshot(client, settings.experiment) == before
    proxy.down()
