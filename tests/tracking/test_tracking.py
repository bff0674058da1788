"""MLflow tracking without a server: names, URIs, secrets, the buffering writer, the run
content helpers, the preview picture, pickling."""

from __future__ import annotations

import pickle
import socket
import time

import numpy as np
import pytest

from camotune.errors import BadInput
from camotune.tracking import SweepTracker, mlflow_ui_command
from camotune.tracking.content import run_name, sweep_summary
from camotune.tracking.repro import dataset_fingerprint, pip_freeze
from camotune.tracking.secrets import scrub, strip_credentials
from camotune.tracking.writer import (
    Lost,
    TrackingWriter,
    check_reachable,
    resolve_tracking_uri,
)
from camotune.trainer.preview import save_preview


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- names ------------------------------------------------------------------------------------
def test_run_name_from_key_params_in_fixed_order():
    params = {"lr": 3.2e-4, "use_ema": True, "deep_supervision": True, "batch_size": 8,
              "accumulation_steps": 2}
    assert run_name(params) == "bs8-acc2-lr3.2e-4-ema-ds"


def test_run_name_leaves_false_flags_out_and_falls_back():
    assert run_name({"use_ema": False, "batch_size": 4}) == "bs4"
    assert run_name({}, fallback="abc123") == "abc123"
    assert run_name({"weight_decay": 0.05, "backbone": "edgenext_small"}) == \
        "edgenext_small-wd0.05"


# -- tracking URI ---------------------------------------------------------------------------------
def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri("", tmp_path) == "http://env:5000"
    assert resolve_tracking_uri("http://flag:5000", tmp_path) == "http://flag:5000"


def _settings(tmp_path, dataset, **kw):
    from camotune.search.settings import SweepSettings
    from camotune.spaces import load_space
    from camotune.trainer.config import TrainConfig

    base = TrainConfig(dataset_path=str(dataset), backbone="edgenext_xx_small", pretrained=False)
    return SweepSettings(name=kw.pop("name", "s"), storage_path=str(tmp_path),
                         space=load_space("smoke"), space_source="smoke", base=base, **kw)


def test_mlflow_ui_command_for_the_default_store_and_a_server(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = _settings(tmp_path, tmp_path)
    assert mlflow_ui_command(local) == (
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db "
        f"--default-artifact-root {tmp_path.resolve()}/mlartifacts")
    remote = _settings(tmp_path, tmp_path, tracking_uri="https://bob:hunter2pw@mlflow.lab:443")
    assert mlflow_ui_command(remote) == "open https://mlflow.lab:443"


def test_unreachable_server_is_bad_input_within_seconds():
    started = time.monotonic()
    with pytest.raises(BadInput, match=r"--tracking-uri: MLflow tracking server .* not reachable"):
        check_reachable(f"http://alice:hunter2pw@127.0.0.1:{free_port()}", timeout=2)
    assert time.monotonic() - started < 5


def test_a_server_that_never_answers_is_bad_input_after_the_timeout():
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(BadInput, match="not reachable"):
            check_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1.5)
        assert 1.4 < time.monotonic() - started < 6


def test_unreachable_server_message_has_no_credentials():
    with pytest.raises(BadInput) as info:
        check_reachable(f"http://alice:hunter2pw@127.0.0.1:{free_port()}", timeout=2)
    assert "hunter2pw" not in str(info.value) and "\n" not in str(info.value)


def test_sqlite_store_under_a_file_is_bad_input(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(BadInput, match="not writable"):
        check_reachable(f"sqlite:///{blocker}/sub/mlflow.db")
    check_reachable(f"sqlite:///{tmp_path}/new/mlflow.db")  # a folder to be created is fine


@pytest.mark.parametrize("form", ["plain", "file"])
def test_a_file_store_folder_is_bad_input_unless_allowed(tmp_path, monkeypatch, form):
    folder = tmp_path / "store"
    uri = str(folder) if form == "plain" else f"file://{folder}"
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(BadInput, match=f"use sqlite:///{folder}/mlflow.db"):
        check_reachable(uri)
    assert not folder.exists()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user's own opt-in
    check_reachable(uri)


# -- secrets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, leaked", [
    ("token is sekrit-value-42", "sekrit-value-42"),
    ("postgresql://user:pw1234@db:5432/mlflow", "pw1234"),
    ("--db password=abcd1234 --x 1", "abcd1234"),
    ("api_key: 'zzz-999'", "zzz-999"),
    ("use ghp_0123456789abcdefghijABCDEF to clone", "ghp_0123456789abcdefghijABCDEF"),
])
def test_scrub_removes_secrets(text, leaked):
    env = {"RAY_AUTH_TOKEN": "sekrit-value-42", "HOME": "/root"}
    clean = scrub(text, env)
    assert leaked not in clean and clean != text
    assert scrub(clean, env) == clean


def test_scrub_keeps_ordinary_text():
    env = {"RAY_AUTH_MODE": "token", "HOME": "/root", "MY_TOKEN": "true"}
    text = "lr=0.00025 batch_size=8 /root/data token auth mode true"
    assert scrub(text, env) == text
    # a setting that names a secret's kind, or has none, is not a secret itself
    yaml_text = "tracking_auth: null\ntracking_auth: basic\npassword: ''\n"
    assert scrub(yaml_text, env) == yaml_text
    assert scrub("tracking_auth: hunter22", env) == "tracking_auth: ***"


def test_strip_credentials():
    assert strip_credentials("http://u:p@host:5000/x?token=abc&a=1") == "http://host:5000/x?a=1"
    assert strip_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


# -- the writer ----------------------------------------------------------------------------------------
class _Flaky:
    """Stands in for the MLflow client: calls fail while ``down``."""

    def __init__(self):
        self.down = False
        self.done: list[int] = []

    def do(self, n: int) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        self.done.append(n)


def test_writer_buffers_during_an_outage_and_replays_in_order(caplog):
    client = _Flaky()
    writer = TrackingWriter("sqlite:///x.db", client=client, retry_interval_s=0)
    writer.call("a", lambda c: c.do(1))
    client.down = True
    assert writer.call("b", lambda c: c.do(2)) is False
    assert writer.call("c", lambda c: c.do(3)) is False
    assert writer.pending == 2 and writer.errors == 1
    client.down = False
    assert writer.flush(force=True)
    assert client.done == [1, 2, 3] and writer.pending == 0 and writer.lost == 0
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2  # one when it went away, one when it came back


def test_writer_waits_between_retries_and_bounds_its_queue():
    client = _Flaky()
    client.down = True
    writer = TrackingWriter("sqlite:///x.db", client=client, retry_interval_s=3600,
                            max_pending=2)
    for n in range(5):
        writer.call(str(n), lambda c, n=n: c.do(n))
    client.down = False
    writer.call("later", lambda c: c.do(99))  # too soon to retry: queued (and dropped: full)
    assert client.done == [] and writer.pending == 2 and writer.lost == 4
    assert writer.flush(force=True) and client.done == [0, 1]


def test_writer_counts_rejected_and_lost_calls_without_retrying():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    writer = TrackingWriter("sqlite:///x.db", client=object())

    def rejected(client):
        raise MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE)

    def lost(client):
        raise Lost("gone")

    assert writer.call("rejected", rejected) and writer.call("lost", lost)
    assert writer.pending == 0 and writer.errors == 2 and writer.lost == 2


def test_writer_lets_bugs_propagate():
    writer = TrackingWriter("sqlite:///x.db", client=object())
    with pytest.raises(TypeError):
        writer.call("bug", lambda c: len(3))


# -- content --------------------------------------------------------------------------------------------
def test_sweep_summary_from_events():
    events = [
        {"event": "start", "trial_id": "a"}, {"event": "start", "trial_id": "b"},
        {"event": "start", "trial_id": "c"},
        {"event": "epoch", "trial_id": "a", "metrics": {"epoch": 1, "val_iou": 0.2, "val_sm": None}},
        {"event": "epoch", "trial_id": "a", "metrics": {"epoch": 2, "val_iou": 0.5, "val_sm": 0.7}},
        {"event": "epoch", "trial_id": "a", "metrics": {"epoch": 3, "val_iou": 0.4, "val_sm": 0.6}},
        {"event": "end", "trial_id": "a", "stop_reason": "completed", "best_val_iou": 0.5,
         "gpu_seconds": 10.0},
        {"event": "end", "trial_id": "b", "stop_reason": "asha_stopped", "best_val_iou": 0.1,
         "gpu_seconds": 2.5},
        {"event": "orphaned", "trial_id": "c"},
    ]
    metrics, tags = sweep_summary(events)
    assert tags == {"camotune.best_trial_id": "a",
                    "camotune.trials_by_stop_reason": "asha_stopped=1 completed=1"}
    assert metrics == {"best_val_iou": 0.5, "best_epoch": 2.0, "compute_seconds": 12.5,
                       "trials_started": 3.0, "trials_completed": 1.0,
                       "trials_stopped_early": 1.0, "trials_failed": 0.0,
                       "trials_orphaned": 1.0}


def test_dataset_fingerprint_tracks_names_and_sizes_only(tmp_path):
    (tmp_path / "Train").mkdir()
    (tmp_path / "Train" / "a.jpg").write_bytes(b"1234")
    first = dataset_fingerprint(tmp_path)
    assert first.startswith("sha256:") and dataset_fingerprint(tmp_path) == first
    (tmp_path / "Train" / "a.jpg").write_bytes(b"5678")  # same size: same fingerprint
    assert dataset_fingerprint(tmp_path) == first
    (tmp_path / "Train" / "a.jpg").write_bytes(b"56789")
    resized = dataset_fingerprint(tmp_path)
    (tmp_path / "Train" / "b.jpg").write_bytes(b"")
    assert len({first, resized, dataset_fingerprint(tmp_path)}) == 3
    assert dataset_fingerprint(tmp_path / "missing") == "missing"


def test_pip_freeze_lists_pinned_packages():
    lines = pip_freeze().splitlines()
    names = [line.split("==")[0].lower() for line in lines]
    assert "mlflow" in names and "torch" in names and names == sorted(names)
    assert all("==" in line and "://" not in line for line in lines)


def test_preview_png(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    masks = (rng.random((3, 1, 32, 32)) > 0.5).astype(np.uint8)
    probs = rng.random((3, 32, 32)).astype(np.float32)
    path = save_preview(tmp_path / "preview.png", images, masks, probs, title="epoch 5")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] / 2
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="must agree"):
        save_preview(tmp_path / "p.png", images, masks[:2], probs)


# -- pickling -----------------------------------------------------------------------------------------
def test_tracker_pickles_as_its_settings_without_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:hunter2pw@127.0.0.1:1")
    settings = _settings(tmp_path, tmp_path)
    tracker = SweepTracker(settings, resolve_tracking_uri("", tmp_path))
    blob = pickle.dumps(tracker)
    assert b"hunter2pw" not in blob
    restored = pickle.loads(blob)
    assert restored.settings == settings
    assert restored.tracking_uri == "http://alice:hunter2pw@127.0.0.1:1"  # resolved again


def test_for_settings_names_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BadInput, match=r"^\$MLFLOW_TRACKING_URI: MLflow tracking server"):
        SweepTracker.for_settings(_settings(tmp_path, tmp_path), timeout=2)


def test_background_writer_only_enqueues_while_the_server_hangs(tmp_path):
    """A server that accepts connections and never answers: enqueueing 200 calls takes no
    time, and closing the writer journals every one of them (none sent, none lost)."""
    from camotune.tracking.journal import Journal

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        journal = Journal(tmp_path / "tracking_pending.jsonl")
        writer = TrackingWriter(f"http://127.0.0.1:{hung.getsockname()[1]}", journal=journal,
                                background=True)
        started = time.monotonic()
        for n in range(200):
            writer.call(f"call {n}", lambda c: c.search_experiments(max_results=1),
                        op={"op": "tags", "run": "k", "experiment": "e", "tags": {"n": n}})
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        assert writer.close(timeout=2) == 200
        assert time.monotonic() - started < 15
    entries = journal.unsent()
    assert [e["op"]["tags"]["n"] for e in entries] == list(range(200))
    assert len({e["key"] for e in entries}) == 200 and writer.lost == 0
