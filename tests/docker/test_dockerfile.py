"""docker/Dockerfile and the repository's .dockerignore, read as text."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import shutil
import subprocess

import pytest
from cluster_files import DOCKER, REPO

DOCKERFILE = DOCKER / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def arg_default(name: str) -> str:
    for word, rest in instructions():
        if word == "ARG" and rest.partition("=")[0] == name:
            return rest.partition("=")[2]
    raise AssertionError(f"no ARG {name}")


def test_base_image_is_a_cuda_pytorch_runtime() -> None:
    base = arg_default("BASE_IMAGE")
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base), base
    assert ("FROM", "${BASE_IMAGE}") in instructions()


def test_ray_version_default_is_the_installed_ray() -> None:
    # Head, workers and drivers must run one Ray: bumping Ray without the image fails here.
    assert arg_default("RAY_VERSION") == importlib.metadata.version("ray")
    runs = [rest for word, rest in instructions() if word == "RUN"]
    assert any('"ray[default,train,tune]==${RAY_VERSION}"' in r for r in runs)
    assert any('echo "ray==${RAY_VERSION}"' in r for r in runs), "Ray stays pinned for later installs"


def test_the_package_is_installed_from_the_copied_source() -> None:
    steps = instructions()
    copy = next(rest for word, rest in steps if word == "COPY" and rest.startswith(". "))
    source_dir = copy.split()[1]
    assert any(word == "RUN" and f"pip install --no-deps {source_dir}" in rest for word, rest in steps)
    assert any(word == "RUN" and "camotune --version" in rest for word, rest in steps)


def test_every_copied_file_exists() -> None:
    for word, rest in instructions():
        if word == "COPY":
            sources = [a for a in rest.split() if not a.startswith("--")][:-1]
            for src in sources:
                assert (REPO / src).exists(), src


def test_runs_as_a_non_root_user() -> None:
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert any(word == "RUN" and "useradd" in rest and users[-1] in rest for word, rest in instructions())


def test_hf_hub_offline_is_settable() -> None:
    assert arg_default("HF_HUB_OFFLINE") in {"0", "1"}
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    assert "HF_HUB_OFFLINE=${HF_HUB_OFFLINE}" in env
    assert "CAMOTUNE_CACHE=" in env


def test_default_command_runs_camotune() -> None:
    cmd = [rest for word, rest in instructions() if word in {"CMD", "ENTRYPOINT"}]
    assert cmd and cmd[-1].startswith('["camotune"')


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether a .dockerignore pattern excludes ``path`` or one of its parent folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in dockerignore():
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


@pytest.mark.parametrize(
    "path", [".venv", ".git", "runs", "mlruns", ".pytest_cache", ".ruff_cache", "docker/.env", ".env",
             "trainer/__pycache__/x.pyc", "data/COD10K-v3"]
)
def test_dockerignore_keeps_environments_runs_caches_and_secrets_out(path: str) -> None:
    assert ignored(path)


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "camotune/cli.py", "model/__init__.py", "trainer/config.py",
             "spaces/__init__.py", "search/__init__.py", "results/__init__.py",
             "tracking/__init__.py", "sweepdir/__init__.py", "commands/__init__.py",
             "docker/ray-worker.sh", "docker/Dockerfile"]
)
def test_dockerignore_keeps_what_the_build_needs(path: str) -> None:
    assert not ignored(path)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_every_run_step_is_valid_shell(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    runs = [rest for word, rest in instructions() if word == "RUN"]
    assert runs
    for script in runs:
        checked = subprocess.run([shell, "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script[:80]}...: {checked.stderr}"


def test_worker_script_is_valid_bash() -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    checked = subprocess.run(["bash", "-n", str(DOCKER / "ray-worker.sh")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
