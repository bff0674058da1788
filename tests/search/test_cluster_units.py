"""The cluster pieces that need no cluster: token lookup, --submit's command line and checks,
trial resources."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from camotune.cli import main
from camotune.errors import BadInput, JobFailed
from camotune.search import runtime, submit
from camotune.search.distributed import _worker_failure, check_resources, trial_resources
from camotune.search.trainable import write_outcome


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment without any Ray token; returns the (empty) home folder."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    # Ray re-reads its cached settings after RAY_AUTH_MODE changes; not in this process.
    monkeypatch.setattr(runtime, "_refresh_ray_config", lambda: None)
    return tmp_path


def test_token_source_follows_rays_order(no_token: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.token_source() is None
    (no_token / ".ray").mkdir()
    (no_token / ".ray" / "auth_token").write_text("abc\n")
    assert runtime.token_source() == str(no_token / ".ray" / "auth_token")
    named = no_token / "token.txt"
    named.write_text("def")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert runtime.token_source() == str(named)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ghi")
    assert runtime.token_source() == "$RAY_AUTH_TOKEN"


def test_empty_token_file_is_bad_input(no_token: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = no_token / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(empty))
    with pytest.raises(BadInput, match="RAY_AUTH_TOKEN_PATH"):
        runtime.token_source()


def test_token_turns_token_mode_on_unless_set(no_token: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.configure_auth("head:6379") is None
    assert "RAY_AUTH_MODE" not in os.environ  # no token: nothing to send
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert runtime.configure_auth("head:6379") == "$RAY_AUTH_TOKEN"
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    runtime.configure_auth("head:6379")
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_token_mode_without_token_is_bad_input(no_token: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(BadInput, match="no token found: set RAY_AUTH_TOKEN"):
        runtime.configure_auth("head:6379")


@pytest.mark.parametrize(("address", "gcs"), [("head:6379", True), ("10.0.0.1:6379", True),
                                              ("auto", False), ("ray://head:10001", False),
                                              ("http://head:8265", False)])
def test_gcs_addresses(address: str, gcs: bool) -> None:
    assert runtime.is_gcs_address(address) is gcs


def test_nothing_listening_is_one_line(no_token: Path) -> None:
    with pytest.raises(BadInput, match="no Ray cluster answers there"):
        runtime.probe_gcs("127.0.0.1:1", None)


def test_entrypoint_drops_only_the_submitting_flags() -> None:
    argv = ["--space", "smoke", "--submit", "--address", "http://h:8265", "--lr", "0.1",
            "--address=http://x:1", "--dataset-path", "/d", "--name", "--address-like"]
    assert submit.entrypoint_argv(argv) == ["--space", "smoke", "--lr", "0.1",
                                            "--dataset-path", "/d", "--name", "--address-like"]


@pytest.mark.parametrize("address", [None, "head:6379", "ray://head:10001", "auto"])
def test_submit_needs_the_job_api(address: str | None) -> None:
    with pytest.raises(BadInput, match="http://HEAD:8265"):
        submit.check_submit_address(address)


def test_submit_address_keeps_the_scheme() -> None:
    assert submit.check_submit_address("https://head:8265/") == "https://head:8265"


@pytest.mark.parametrize(("extra", "message"), [
    (["--storage-path", "runs", "--dataset-path", "/d"], "--storage-path runs: with --submit"),
    (["--storage-path", "/runs", "--dataset-path", "data"], "--dataset-path data: with --submit"),
    (["--dataset-path", "/d"], "give --storage-path as an absolute path"),
    (["--storage-path", "/runs", "--dataset-path", "/d", "--space", "my.yaml"],
     "--space my.yaml: with --submit"),
    (["--storage-path", "/runs", "--dataset-path", "/d", "--points", "p.yaml"],
     "--points p.yaml: with --submit"),
    (["--storage-path", "/runs", "--dataset-path", "/d", "--lr", "-1"], "--lr must be > 0"),
    (["--storage-path", "/runs", "--dataset-path", "/d", "--name", "a/b"], "plain folder name"),
])
def test_submit_checks_before_contacting_anything(extra: list[str], message: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    argv = ["sweep", "--space", "smoke", "--submit", "--address", "http://127.0.0.1:1", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_submit_to_nothing_is_one_line(no_token: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["sweep", "--space", "smoke", "--submit", "--address", "http://127.0.0.1:1",
            "--storage-path", "/runs", "--dataset-path", "/d"]
    assert main(argv) == 2
    assert "no Ray job API answers there" in capsys.readouterr().err.strip().splitlines()[-1]


def test_resume_submit_needs_an_absolute_folder(capsys: pytest.CaptureFixture) -> None:
    assert main(["resume", "runs/x", "--submit", "--address", "http://127.0.0.1:1"]) == 2
    assert "absolute path on the cluster" in capsys.readouterr().err


def test_abbreviated_flags_are_refused(capsys: pytest.CaptureFixture) -> None:
    # --submit forwards the command line minus its own flags: no abbreviations to miss.
    assert main(["sweep", "--space", "smoke", "--sub", "--address", "http://h:1"]) == 2
    assert "unrecognized arguments: --sub" in capsys.readouterr().err


def test_one_worker_trial_reserves_its_worker() -> None:
    pgf = trial_resources(2.0, 1.0, 1)
    assert pgf.bundles == [{"CPU": 2.0, "GPU": 1.0}]


def test_coordinator_of_several_workers_reserves_no_cpu_or_gpu() -> None:
    pgf = trial_resources(4.0, 1.0, 3)
    assert pgf.required_resources.get("CPU", 0) == 0
    assert pgf.required_resources.get("GPU", 0) == 0
    assert pgf.bundles == [{"memory": 1.0}]


def test_workers_need_whole_gpus() -> None:
    with pytest.raises(BadInput, match="each worker needs a whole GPU"):
        check_resources(cpus=1, gpus=0.5, workers=2)
    check_resources(cpus=1, gpus=0.5, workers=1)
    check_resources(cpus=1, gpus=2, workers=2)


def test_a_failed_worker_names_the_trials_stop_reason(tmp_path: Path) -> None:
    crash = RuntimeError("worker group failed")
    assert "worker group failed" in str(_worker_failure(tmp_path, crash))
    write_outcome(tmp_path, "diverged", "rank 1: non-finite loss in epoch 3")
    failure = _worker_failure(tmp_path, crash)
    assert isinstance(failure, JobFailed) and failure.reason == "diverged"
    assert str(failure) == "rank 1: non-finite loss in epoch 3"
    write_outcome(tmp_path, "error", "rank 0: ValueError: bad")
    failure = _worker_failure(tmp_path, crash)
    assert not isinstance(failure, JobFailed) and str(failure) == "rank 0: ValueError: bad"


def test_a_job_api_in_ray_address_is_named_as_such(no_token: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(BadInput, match=re.escape("RAY_ADDRESS=http://127.0.0.1:8265 is a job API address")):
        runtime.init_ray(None)


def test_the_first_failure_recorded_is_the_one_kept(tmp_path: Path) -> None:
    from camotune.search.trainable import read_outcome, record_failure

    record_failure(tmp_path, JobFailed("non-finite loss in epoch 3", reason="diverged"),
                   prefix="rank 1: ")
    record_failure(tmp_path, RuntimeError("broken process group"), prefix="rank 0: ")
    outcome = read_outcome(tmp_path)
    assert outcome["stop_reason"] == "diverged"
    assert outcome["message"] == "rank 1: non-finite loss in epoch 3"


def test_the_quiet_settings_travel_to_a_clusters_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from camotune.search.quiet import QUIET_ENV, quiet_third_party, worker_env_vars

    for key in QUIET_ENV:  # restored after the test
        monkeypatch.delenv(key, raising=False)
    quiet_third_party(verbose=True)
    assert worker_env_vars() == {}  # --verbose: the libraries' own output, here and there
    quiet_third_party(verbose=False)
    assert worker_env_vars() == {"TQDM_DISABLE": "1"}
