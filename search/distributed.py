"""Trials spanning several workers (``--workers-per-trial N``): Ray Train inside the Tune trial.

Ray 2.60 runs Ray Train V2 (``RAY_TRAIN_V2_ENABLED`` defaults to on), where a Tune function
trial that calls ``TorchTrainer.fit()`` is only the driver of a Train run: Train starts its own
placement group of N workers (``ScalingConfig``) and a controller actor on the trial's node.
The old ``Tuner(trainer)`` pattern, where Tune reserved the workers' bundles, is deprecated, and
a Tune-level bundle for the workers would be reserved twice. So:

- the Tune trial (the coordinator) reserves a token 1 byte of memory, no CPU and no GPU
  (Tune needs a non-empty bundle); ``--cpus-per-trial`` / ``--gpus-per-trial`` are each
  worker's ``ScalingConfig`` resources;
- every worker runs ``fit(cfg, report=ray.train.report)`` with torch.distributed set up by
  Ray Train (gloo on CPUs, NCCL on GPUs); fit shards the data by rank, all-reduces the
  validation sums and writes files on rank 0 only;
- a controller-side callback forwards rank 0's row of each epoch through a one-slot queue to
  the coordinator, which calls ``tune.report`` with the same pointer checkpoint as a
  single-worker trial. Ray's ``TuneReportCallback`` forwards metrics only (the checkpoint path
  becomes a metric), so a restored trial would not look like a single-worker one.

Resume is as for single-worker trials: the trial folder's ``last.pt`` (shared storage).

When Tune stops a trial (ASHA, the collapse stopper, the time budget, the last epoch's STOP),
it ends the trial's process; Ray Train's controller and workers go with it, but its placement
group belongs to the job, and Ray Train's own cleaner needs the dashboard's state API (absent
from a minimal Ray and from camotune's local Ray). A detached reaper removes the workers'
placement group once the trial's process is gone, so the next trial can have the resources.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from camotune.errors import BadInput, JobFailed
from camotune.trainer.config import TrainConfig

log = logging.getLogger(__name__)

# The coordinator's bundle: Tune refuses an empty one; one byte of memory fits on any node.
COORDINATOR_BUNDLE = {"memory": 1}
NODES_FILE = "node.json"
TRAIN_RUN_NAME = "train"  # Ray Train's own files: <sweep>/ray_<trial_id>/train/


def worker_bundle(cpus: float, gpus: float) -> dict[str, float]:
    """One worker's resources (``--cpus-per-trial``, ``--gpus-per-trial``)."""
    return {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}


def trial_resources(cpus: float, gpus: float, workers: int):
    """The Tune placement group of one trial: the worker itself when ``workers`` is 1, else
    only the coordinator's token bundle (Ray Train reserves the workers)."""
    from ray import tune

    if workers <= 1:
        return tune.PlacementGroupFactory([worker_bundle(cpus, gpus)])
    return tune.PlacementGroupFactory([dict(COORDINATOR_BUNDLE)])


class TrialResources:
    """``tune.with_resources`` callable: the resources of the trial with this Tune config
    (its ``--workers-per-trial`` may come from the space)."""

    def __init__(self, settings) -> None:
        self.settings = settings

    def __call__(self, config: dict[str, Any]):
        from camotune.search.trainable import trial_params

        s = self.settings
        try:
            workers = s.space.apply(s.base, trial_params(config)).workers_per_trial
        except BadInput:
            # An invalid sampled combination: the trial gets the base config's slot and its
            # trainable ends it as `error` with the message; the sweep goes on.
            workers = s.space.apply(s.base, {}).workers_per_trial
        return trial_resources(s.cpus_per_trial, s.gpus_per_trial, workers)


def check_resources(*, cpus: float, gpus: float, workers: int) -> None:
    """What a multi-worker trial needs before Ray starts; ``BadInput`` otherwise."""
    if workers <= 1:
        return
    if 0 < gpus < 1:
        raise BadInput(f"--gpus-per-trial {gpus}: with --workers-per-trial {workers} each worker "
                       "needs a whole GPU (NCCL runs one rank per GPU)")
    from camotune.search import compat

    if not compat.train_v2_enabled():
        raise BadInput("--workers-per-trial needs Ray Train V2: unset RAY_TRAIN_V2_ENABLED=0")


def node_record(rank: int) -> dict[str, Any]:
    """Where this process runs: rank, Ray node id and IP, host name, pid."""
    import ray

    ctx = ray.get_runtime_context()
    return {"rank": rank, "node_id": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
            "pid": os.getpid()}


def write_nodes(trial_dir: Path, workers: list[dict[str, Any]]) -> None:
    """``node.json`` in the trial folder: ``{"workers": [node_record per rank]}``."""
    from camotune.search.trainable import write_json

    write_json(trial_dir, NODES_FILE, {"workers": workers})


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: ``fit`` with torch.distributed already initialised."""
    import ray
    import ray.train
    import torch.distributed as dist

    from camotune.search.trainable import record_failure
    from camotune.trainer.config import from_dict
    from camotune.trainer.loop import fit

    cfg = from_dict(loop_config["config"])
    trial_dir = Path(cfg.checkpoint_dir)
    rank = dist.get_rank()
    if rank == 0:
        # The placement group Ray Train made for this worker group (a new one after a retry).
        ray.get(loop_config["reaper"].watch.remote(ray.util.get_current_placement_group()))
    _quiet_worker_logs(rank)
    workers: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(workers, node_record(rank))
    if rank == 0:
        from camotune.tracking.repro import write_environment

        write_nodes(trial_dir, workers)
        write_environment(trial_dir)  # rank 0's host and GPU for the trial's MLflow run

    def report(row: dict[str, Any]) -> None:
        # Every rank reports each epoch (Ray Train waits for all); rank 0's row is forwarded.
        ray.train.report({k: v for k, v in row.items() if v is not None})

    try:
        fit(cfg, report=report, overwrite=True,
            checkpoint_epochs=frozenset(loop_config.get("checkpoint_epochs", ())))
    except Exception as exc:
        record_failure(trial_dir, exc, prefix=f"rank {rank}: ")
        raise


def _quiet_worker_logs(rank: int) -> None:
    """Rank 0 logs for the run; Ray Train's line per report says nothing new."""
    if rank != 0:
        logging.getLogger("camotune").setLevel(logging.WARNING)
    from camotune.search import compat

    compat.quiet(compat.train_v2_context_logger())


class _Reaper:
    """Detached watcher of one multi-worker trial: removes the workers' placement group when
    the trial's process dies before Ray Train could, then exits. ``sentinel`` is an actor of
    the trial's process (it dies with it); a timed-out ping means busy, not dead."""

    def __init__(self, sentinel) -> None:
        self.sentinel = sentinel
        self.placement_group = None
        self.released = False

    def watch(self, placement_group) -> None:
        self.placement_group = placement_group

    def release(self) -> None:
        self.released = True

    def run(self, interval_s: float = 1.0) -> None:
        import time

        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        while not self.released:
            try:
                ray.get(self.sentinel.qsize.remote(), timeout=30)
            except GetTimeoutError:
                pass
            except RayActorError:
                if self.placement_group is not None and not self.released:
                    log.warning("trial process gone: removing its workers' placement group")
                    try:
                        ray.util.remove_placement_group(self.placement_group)
                    except Exception:  # already removed by Ray Train; nothing left to free
                        log.debug("placement group already removed", exc_info=True)
                break
            time.sleep(interval_s)
        ray.actor.exit_actor()


def _start_reaper(sentinel):
    """The trial's reaper, detached (it must outlive the trial) and outside the trial's
    placement group (whose actors die with it)."""
    import ray

    cls = ray.remote(num_cpus=0, lifetime="detached", max_concurrency=4)(_Reaper)
    reaper = cls.options(scheduling_strategy="DEFAULT").remote(sentinel)
    reaper.run.remote()
    return reaper


def _forwarding_callback(queue):
    """A Ray Train callback (it runs in the Train controller) putting rank 0's metrics of
    each report into ``queue``; built here so that Ray Train is imported only when used."""
    from ray.train.v2.api.callback import UserCallback

    class ForwardRankZero(UserCallback):
        def __init__(self, results) -> None:
            self.results = results

        def after_report(self, run_context, metrics, checkpoint) -> None:
            self.results.put(dict(metrics[0]))  # blocks until the coordinator took the last

    return ForwardRankZero(queue)


def run_workers(cfg: TrainConfig, *, cpus: float, gpus: float, storage: Path,
                report: Callable[[dict[str, Any]], None],
                checkpoint_epochs: Collection[int] = ()) -> None:
    """Train ``cfg`` over ``cfg.workers_per_trial`` Ray Train workers from inside a Tune
    trial, calling ``report(row)`` with rank 0's row after every epoch, in this thread (so
    ``report`` may call ``tune.report``). Ray Train's own files go to ``storage/train``;
    ``checkpoint_epochs`` always write last.pt (`fit`'s argument).

    Raises ``JobFailed`` (diverged, oom) or ``RuntimeError`` with the failing rank's message
    when a worker fails; the failing rank has written the trial's ``outcome.json``.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    check_resources(cpus=cpus, gpus=gpus, workers=cfg.workers_per_trial)
    from camotune.trainer.config import to_dict

    results = Queue(maxsize=1, actor_options={"num_cpus": 0})
    reaper = _start_reaper(results.actor)  # the queue's actor dies with this process
    trainer = TorchTrainer(
        _train_worker, train_loop_config={"config": to_dict(cfg), "reaper": reaper,
                                          "checkpoint_epochs": sorted(checkpoint_epochs)},
        scaling_config=ScalingConfig(num_workers=cfg.workers_per_trial, use_gpu=gpus > 0,
                                     resources_per_worker=worker_bundle(cpus, gpus)),
        run_config=RunConfig(name=TRAIN_RUN_NAME, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=0),
                             callbacks=[_forwarding_callback(results)]))
    failure: list[BaseException] = []

    def fit_all() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # handed to the trial's thread below
            failure.append(exc)

    # fit() blocks until the run ends; tune.report must be called from the trial's thread.
    thread = threading.Thread(target=fit_all, name="ray-train-driver", daemon=True)
    thread.start()
    try:
        while True:
            try:
                row = results.get(timeout=1.0)
            except Empty:
                if thread.is_alive():
                    continue
                try:
                    row = results.get_nowait()  # the last epoch may still be queued
                except Empty:
                    break
            report(row)
        thread.join()
        ray.get(reaper.release.remote())  # Ray Train has removed its placement group itself
    finally:
        results.shutdown()
    if failure:
        raise _worker_failure(Path(cfg.checkpoint_dir), failure[0])


def _worker_failure(trial_dir: Path, exc: BaseException) -> Exception:
    from camotune.search.trainable import read_outcome

    outcome = read_outcome(trial_dir)
    if outcome is None:
        return RuntimeError(f"Ray Train run failed: {type(exc).__name__}: {exc}")
    if outcome["stop_reason"] in ("diverged", "oom"):
        return JobFailed(outcome["message"], reason=outcome["stop_reason"])
    return RuntimeError(outcome["message"])
