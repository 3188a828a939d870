"""Where Ray runs, for both stages: the extraction's Ray engine and the training sweep join Ray here.

DESIGN.md §3 "Parallelism": no address means a new local Ray instance on this machine (the embedded default,
never a cluster that happens to run here); `--address` or `RAY_ADDRESS` means that cluster. Ray is imported
only when a session starts, so reading this module costs nothing.
"""

from __future__ import annotations

import os


def ray_address(address: str | None) -> str | None:
    """The cluster to join (`address`, else RAY_ADDRESS); None: a local instance on this machine."""
    return address or os.environ.get("RAY_ADDRESS") or None


def init_ray(address: str | None) -> bool:
    """Join the cluster at `address` (`ray_address`), else start a local Ray instance; nothing if Ray is
    already initialised (a caller's own session). True if this call started it: the caller may end it."""
    import ray

    if ray.is_initialized():
        return False
    address = ray_address(address)
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True
