"""docker/README.md: the commands it shows use files and flags that exist."""

from __future__ import annotations

import re
import shlex

from cluster_files import DOCKER, REPO, SWEEP_FLAGS, sweep_flags

README = (DOCKER / "README.md").read_text(encoding="utf-8")


def shell_commands() -> list[str]:
    """Commands of the README's bash blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_sweep_commands_use_flags_the_cli_accepts() -> None:
    sweeps = [c[c.index("camotune sweep"):] for c in shell_commands() if "camotune sweep" in c]
    assert len(sweeps) >= 2
    for command in sweeps:
        flags = sweep_flags(shlex.split(command))
        assert set(flags) <= SWEEP_FLAGS, set(flags) - SWEEP_FLAGS
        assert flags.get("--storage-path", "/data/runs") == "/data/runs"


def test_referenced_files_exist() -> None:
    for path in set(re.findall(r"docker/[\w./-]+\.(?:yaml|sh|md)|docker/Dockerfile", README)):
        assert (REPO / path).exists(), path
    for name in re.findall(r"`(k8s/\w+(?:\.example)?\.yaml)`", README):
        assert (DOCKER / name).exists(), name


def test_readme_says_how_the_files_were_checked() -> None:
    flat = " ".join(README.split())
    assert "nothing was started by a Docker engine or on a Kubernetes cluster" in flat
    assert "tests/stack/" in flat
