"""Starting or joining Ray for a sweep's driver."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def init_ray(address: str | None) -> None:
    """Join ``address`` (auto, host:port, ray://host:10001) or start a local Ray. Does nothing
    when Ray is already initialised (e.g. by a test or an enclosing Ray job)."""
    import ray

    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(include_dashboard=False, **quiet)
    log.info("ray: %s", {k: v for k, v in ray.cluster_resources().items()
                         if k in ("CPU", "GPU", "memory")})
