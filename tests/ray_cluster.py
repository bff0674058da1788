"""A token-authenticated Ray cluster of ``ray start`` processes on this machine, for the tests.

Each node has its own ports on 127.0.0.1 (never Ray's fixed defaults, which would clash with
any other Ray here), the head its own ``--temp-dir``; the nodes and the CLI share a ``HOME`` of
their own (no ~/.ray of the user's) and a fresh token. `Cluster.stop` stops every process the
cluster started and their children, found by parent links: ``ray stop`` is never used, as it
would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from servers import free_ports, listening

NODE_START_TIMEOUT_S = 180   # ~10 s idle; far longer on a loaded 2-core machine
CLI_TIMEOUT_S = 600
STOP_GRACE_S = 5


def process_tree(pids: list[int]) -> list[int]:
    """``pids`` and all their descendants, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo += children.get(pid, [])
    return out


@dataclasses.dataclass
class Cluster:
    root: Path
    token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(32))
    procs: list[subprocess.Popen] = dataclasses.field(default_factory=list)
    gcs: str = ""
    dashboard: str = ""

    def __post_init__(self) -> None:
        # Unix socket paths under the temp dir must stay short: not under pytest's tmp_path.
        self.temp = Path(tempfile.mkdtemp(prefix="ct-", dir="/tmp"))
        self.home = self.root / "home"
        self.home.mkdir(parents=True)

    def env(self, token: str | None = "cluster") -> dict[str, str]:
        """The environment of the nodes and of the CLI: no ~/.ray of the user's, the CLI's
        folder on PATH (the job entrypoint is ``camotune``); ``token`` None for no token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env.update(HOME=str(self.home), HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
                   OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0",
                   MLFLOW_DISABLE_TELEMETRY="true", CAMOTUNE_CACHE=str(self.root / "cache"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if token is not None:
            env.update(RAY_AUTH_MODE="token",
                       RAY_AUTH_TOKEN=self.token if token == "cluster" else token)
        return env

    def start(self) -> None:
        gcs, dash, client, *ports = free_ports(11)
        self.gcs, self.dashboard = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}"
        # The Ray client server is started by the head only when ray[client] is installed.
        client_flag = (["--ray-client-server-port", str(client)]
                       if importlib.util.find_spec("grpc") else [])
        self._spawn("head", ["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dash), "--temp-dir", str(self.temp),
                             *client_flag, *self.agent_ports(ports[:4])])
        self.wait(lambda: listening(gcs), "the head's GCS")
        self._spawn("worker", ["--address", self.gcs, *self.agent_ports(ports[4:8])])
        self.wait_for_nodes(2)

    @staticmethod
    def agent_ports(ports: list[int]) -> list[str]:
        """``ray start`` flags giving a node's agents these four ports."""
        # Fixed defaults (52365 ...) would clash with any other Ray on this machine.
        names = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--metrics-export-port", "--runtime-env-agent-port")
        return [x for name, port in zip(names, ports, strict=True) for x in (name, str(port))]

    def _spawn(self, name: str, args: list[str]) -> None:
        self.spawn(name, [sys.executable, "-m", "ray.scripts.scripts", "start", *args,
                          "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats",
                          "--block"])

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``command`` (a node) with `env` (or ``env``), its output in ``<name>.log``;
        `stop` stops it and its children."""
        with (self.root / f"{name}.log").open("w") as log:
            self.procs.append(subprocess.Popen(command, env=env or self.env(), stdout=log,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def wait_for_nodes(self, n: int) -> None:
        """Until ``n`` nodes are alive in the cluster at `gcs`."""
        code = ("import logging, sys, time, ray\n"
                "ray.init(address=sys.argv[1], logging_level=logging.ERROR)\n"
                "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]): time.sleep(0.5)\n")
        subprocess.run([sys.executable, "-c", code, self.gcs, str(n)], env=self.env(),
                       check=True, timeout=NODE_START_TIMEOUT_S, capture_output=True)

    def wait(self, ready, what: str) -> None:
        """Poll ``ready`` until true; raise with the logs when a node exits or time is up."""
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not ready():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up: {self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM to each ``ray start``, then SIGKILL to every process they started (found
        by parent links, not by name: raylet, GCS, agents, Ray workers) still alive."""
        roots = [p.pid for p in self.procs]
        tree = process_tree(roots)
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE_S)
        for pid in process_tree(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)

    def job_api(self) -> bool:
        """Whether the head serves Ray's job API (it needs ``ray[default]``)."""
        try:
            urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=5)
        except urllib.error.HTTPError:
            return True  # 401 without a token: the server is there
        except OSError:
            return False
        return True

    def cli(self, *args: str, token: str | None = "cluster",
            wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
        command = [sys.executable, "-m", "camotune", *args]
        if not wait:
            # SIGINT as a terminal sends it, even when pytest runs where it is ignored.
            return subprocess.Popen(command, env=self.env(token), cwd=self.root, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                     signal.SIG_DFL))
        return subprocess.run(command, env=self.env(token), cwd=self.root, text=True,
                              capture_output=True, timeout=CLI_TIMEOUT_S)

