"""The reproducibility record of a run: versions, hardware, host, git state, installed packages,
and a cheap fingerprint of the dataset.

Nothing here imports MLflow or Ray, and nothing initialises CUDA: the GPU model and driver come
from ``nvidia-smi`` (a driver process creating a CUDA context would take GPU memory from the
trials). Each function is cached per process: the record is gathered once and put on every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from camotune import __version__

ENVIRONMENT_FILE = "environment.json"


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """Tags describing where this process runs: ``camotune.version``, ``camotune.python``,
    ``camotune.torch``, ``camotune.cuda`` (torch's CUDA build, "none" for CPU builds),
    ``camotune.gpu`` and ``camotune.gpu_driver`` ("none" without an NVIDIA GPU),
    ``camotune.host``, ``camotune.platform``."""
    import torch

    gpu, driver = _nvidia_smi()
    return {
        "camotune.version": __version__,
        "camotune.python": platform.python_version(),
        "camotune.torch": torch.__version__,
        "camotune.cuda": torch.version.cuda or "none",
        "camotune.gpu": gpu,
        "camotune.gpu_driver": driver,
        "camotune.host": socket.gethostname(),
        "camotune.platform": platform.platform(terse=True),
    }


def write_environment(folder: str | os.PathLike) -> Path:
    """Write `environment` as ``environment.json`` into ``folder`` (a trial folder): the
    driver puts the trial's own host and GPU on its run instead of the driver's."""
    path = Path(folder) / ENVIRONMENT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(environment(), indent=1))
    os.replace(tmp, path)
    return path


def read_environment(folder: str | os.PathLike) -> dict[str, str] | None:
    """The ``environment.json`` of a trial folder, or None when absent or unreadable."""
    try:
        data = json.loads((Path(folder) / ENVIRONMENT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def _nvidia_smi() -> tuple[str, str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "none", "none"
    rows = [line.split(",") for line in out.strip().splitlines() if "," in line]
    if not rows:
        return "none", "none"
    names = sorted({r[0].strip() for r in rows})
    return f"{len(rows)} x {' / '.join(names)}", rows[0][1].strip()


@dataclass(frozen=True)
class GitState:
    root: Path
    commit: str
    dirty: bool
    diff: str          # `git diff HEAD` plus the list of untracked files; "" when clean


@functools.lru_cache(maxsize=1)
def source_git_state() -> GitState | None:
    """Git state of the camotune source tree this process imports (an editable install or a
    checkout on ``PYTHONPATH``); None for an installed package or when git is missing. The
    working directory's repository is not consulted: the record describes the code that ran."""
    import camotune

    package_dir = Path(camotune.__file__).resolve().parent
    root_text = _git(package_dir, "rev-parse", "--show-toplevel")
    if root_text is None:
        return None
    root = Path(root_text.strip())
    # A venv inside some other repository must not pass that repository off as camotune's.
    pyproject = root / "pyproject.toml"
    if package_dir.parent != root or not pyproject.is_file() or \
            'name = "camotune"' not in pyproject.read_text(errors="replace"):
        return None
    commit = (_git(root, "rev-parse", "HEAD") or "").strip()
    if not commit:
        return None
    diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard") or ""
    if untracked.strip():
        diff += "\n# untracked files (contents not recorded):\n" + "".join(
            f"#   {line}\n" for line in untracked.splitlines())
    return GitState(root=root, commit=commit, dirty=bool(diff.strip()), diff=diff)


def _git(cwd: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def pip_freeze() -> str:
    """``name==version`` of every installed distribution, sorted (what ``pip freeze`` lists,
    without its URLs, which may carry credentials; read from package metadata, so it needs
    no pip and no subprocess)."""
    from importlib import metadata

    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            pins[name.lower()] = f"{name}=={dist.version}"
    return "".join(pins[k] + "\n" for k in sorted(pins))


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of the sorted (relative path, size) list of every file under ``path``:
    cheap (no file is read) and changes when a file is added, removed, renamed or resized.
    Hidden files (e.g. ``.DS_Store``) are left out. A missing folder gives ``"missing"``."""
    if not str(path):
        return "missing"
    root = Path(path)
    if not root.is_dir():
        return "missing"
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            full = Path(folder, name)
            try:
                size = full.stat().st_size
            except OSError:
                continue
            entries.append(f"{full.relative_to(root).as_posix()}\t{size}\n")
    digest = hashlib.sha256("".join(sorted(entries)).encode())
    return f"sha256:{digest.hexdigest()}"
