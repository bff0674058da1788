"""``--submit``: run a sweep's (or a resume's) driver as a Ray Job on the cluster.

``camotune sweep --submit --address http://HEAD:8265 FLAGS`` submits the same ``camotune sweep
FLAGS`` command line (``--submit`` and ``--address`` removed, ``--name`` added when not given)
to Ray's job API, prints the job id on stdout, then follows the job's log on stderr. Inside the
job, ``camotune sweep`` joins the cluster through ``$RAY_ADDRESS``. Ctrl-C stops following, not
the job. The exit code is the job's: 0 when it SUCCEEDED; 2 when the command rejected its input
(exit 2 on the cluster); 1 for any other failure or a stopped job.

Every path in the command is a path on the cluster, so nothing is checked against this
machine's files: flags naming paths must be absolute, and the data set, space file, storage
and tracking server are checked by the job itself before Ray starts there (one line, exit 2).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePosixPath

from camotune.errors import BadInput, JobFailed
from camotune.search.runtime import auth_error_message, configure_auth

log = logging.getLogger(__name__)

# Flags naming files or folders, which must be absolute paths on the cluster.
PATH_FLAGS = ("dataset_path", "storage_path", "points", "warm_start", "pretrained_path",
              "cache_dir", "resume_from")
STATUS_POLL_S = 1.0


def entrypoint_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--submit`` and ``--address X`` / ``--address=X`` (every occurrence).
    The parsers take no abbreviated flags, so exact matches are all there is to remove."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--submit":
            continue
        if token == "--address":
            skip = True
            continue
        if token.startswith("--address="):
            continue
        out.append(token)
    return out


def check_submit_address(address: str | None) -> str:
    """The job API address (``http(s)://HEAD:8265``) ``--submit`` needs."""
    if not address:
        raise BadInput("--submit needs --address http://HEAD:8265 (the cluster's job API)")
    if not address.startswith(("http://", "https://")):
        raise BadInput(f"--submit --address {address}: give the job API address, "
                       "http://HEAD:8265 (the dashboard port), not the GCS address")
    return address.rstrip("/")


def check_cluster_paths(args, argv: Sequence[str]) -> None:
    """Paths given with ``--submit`` are paths on the cluster: they must be absolute (the job's
    working folder is Ray's, not yours). ``--storage-path`` must be given for the same reason."""
    from camotune.spaces import list_presets

    if not any(t == "--storage-path" or t.startswith("--storage-path=") for t in argv):
        raise BadInput("--submit: give --storage-path as an absolute path on the cluster "
                       "(e.g. /data/runs), shared by every Ray node")
    for name in PATH_FLAGS:
        value = getattr(args, name, None)
        if value and not PurePosixPath(value).is_absolute() and "://" not in value:
            raise BadInput(f"--{name.replace('_', '-')} {value}: with --submit, give the absolute "
                           "path on the cluster")
    if args.space not in list_presets() and not PurePosixPath(args.space).is_absolute():
        raise BadInput(f"--space {args.space}: with --submit, give a preset name or the absolute "
                       "path of the space file on the cluster")


def sweep_name(args) -> str:
    """``--name``, else ``<space>-<date>-<time>`` generated here (so that it can be printed)."""
    if args.name:
        return args.name
    from camotune.spaces import list_presets

    space = args.space if args.space in list_presets() else PurePosixPath(args.space).stem
    return f"{space}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def job_client(address: str):
    """A ``JobSubmissionClient`` for ``address``, token authentication prepared; one line
    (``BadInput``) when nothing answers there or the cluster refuses the token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    source = configure_auth(address)
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise BadInput(auth_error_message(address, source)) from None
    except ConnectionError:
        raise BadInput(f"--address {address}: no Ray job API answers there (the head's "
                       "dashboard port, default 8265; the head needs `ray[default]`)") from None


def submit(command: Sequence[str], address: str, *, description: str) -> int:
    """Submit ``camotune COMMAND`` as a Ray job, print its id on stdout, follow its log on
    stderr until it ends (Ctrl-C stops following only) and return its exit code."""
    from ray.exceptions import AuthenticationError

    from camotune.search.quiet import worker_env_vars

    client = job_client(address)
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    entrypoint = shlex.join(["camotune", *command])
    try:
        env = worker_env_vars()  # every process of the job, on every node
        job_id = client.submit_job(entrypoint=entrypoint, entrypoint_num_cpus=0,
                                   metadata={"camotune": description},
                                   **({"runtime_env": {"env_vars": env}} if env else {}))
    except AuthenticationError:
        raise BadInput(auth_error_message(address, configure_auth(address))) from None
    print(job_id, flush=True)
    log.info("submitted job %s to %s: %s", job_id, address, entrypoint)
    log.info("%s; stop it with: ray job stop --address %s %s", description, address, job_id)
    try:
        try:
            asyncio.run(_follow(client, job_id))
        except RuntimeError as exc:  # the log stream broke; the job goes on
            log.warning("lost the log stream of job %s (%s); waiting for it to end", job_id, exc)
        return _exit_code(client, job_id)
    except KeyboardInterrupt:
        print(f"stopped following; job {job_id} keeps running. Follow it again with "
              f"`ray job logs --follow --address {address} {job_id}`, stop it with "
              f"`ray job stop --address {address} {job_id}`", file=sys.stderr)
        return 130


async def _follow(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        sys.stderr.write(chunk)
        sys.stderr.flush()


def _exit_code(client, job_id: str) -> int:
    from ray.job_submission import JobStatus

    info = client.get_job_info(job_id)
    while not info.status.is_terminal():
        time.sleep(STATUS_POLL_S)  # the log stream ends a moment before the status is final
        info = client.get_job_info(job_id)
    if info.status == JobStatus.SUCCEEDED:
        log.info("job %s succeeded", job_id)
        return 0
    if info.status == JobStatus.FAILED and info.driver_exit_code == BadInput.exit_code:
        raise BadInput(f"job {job_id}: the command rejected its input (its message is above)")
    if info.status == JobStatus.STOPPED:
        raise JobFailed(f"job {job_id} was stopped", reason="error")
    if info.driver_exit_code is not None:
        raise JobFailed(f"job {job_id} failed: its command exited with {info.driver_exit_code} "
                        "(its log is above)", reason="error")
    message = (info.message or "").strip().splitlines()
    raise JobFailed(f"job {job_id} ended {info.status.value}"
                    + (f": {message[0]}" if message else ""), reason="error")
