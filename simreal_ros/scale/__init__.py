"""Scale-out on Ray: evaluation episodes and training rollouts as Ray actors (``--ray``).

Without ``--ray`` nothing here is imported and every command runs locally as before. With it:

- ``--ray`` (or ``--ray local``) starts a private Ray instance on this machine for the command,
  bound to 127.0.0.1 (no dashboard, no usage reporting), and stops it at the end;
- ``--ray auto`` joins the cluster ``ray start --head`` runs on this machine (or ``RAY_ADDRESS``),
  and starts the private loopback instance when there is none;
- ``--ray HOST:PORT`` (the head's GCS address) or ``--ray ray://HOST:10001`` (Ray Client) joins
  that cluster. Its nodes need the same simreal_ros install; policy bundles travel with the tasks.

The same seeds give the same numbers as the local run: every episode and every environment is
seeded exactly as locally, only where it runs changes (see :mod:`.episodes`, :mod:`.vec_env`).
"""

from __future__ import annotations

import argparse
import os
import socket

LOCAL = "local"
AUTO = "auto"
LOOPBACK = "127.0.0.1"


class RayUnavailableError(RuntimeError):
    """``--ray`` was given but Ray is not installed or the cluster cannot be reached."""


def add_ray_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--ray [ADDRESS|auto|local]`` option of a command (``what`` runs as Ray tasks)."""
    parser.add_argument(
        "--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
        help=f"run {what} on Ray: no value or 'local' starts a private instance on 127.0.0.1; 'auto' joins "
             "this machine's `ray start` cluster (or RAY_ADDRESS), else starts the local one; HOST:PORT or "
             "ray://HOST:10001 joins that cluster (needs `pip install .[scale]`)")


def _import_ray():
    # Both are read when ray is imported: no usage statistics leave the machine, and the node's
    # address is the loopback one instead of one found by probing outside connectivity.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ModuleNotFoundError:
        raise RayUnavailableError("--ray needs Ray: pip install 'simreal_ros[scale]' (ray==2.60.0)") from None
    return ray


def _init_local(ray, num_cpus: int | None) -> None:
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK, log_to_driver=False,
             configure_logging=False)


def connect(address: str = LOCAL, num_cpus: int | None = None):
    """Connect this process to Ray (once; later calls reuse the connection) and return ``ray``.

    ``num_cpus`` sizes a private local instance (default: this machine's cores); a joined
    cluster keeps its own resources.

    Raises:
        RayUnavailableError: Ray is not installed, or the cluster at ``address`` does not answer.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    if address == LOCAL:
        _init_local(ray, num_cpus)
        return ray
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        if address != AUTO:
            raise RayUnavailableError(f"--ray {address}: cannot reach the Ray cluster ({exc})") from None
        _init_local(ray, num_cpus)
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) nobody listens on at once: Ray itself retries for minutes."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address != AUTO:
            raise RayUnavailableError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailableError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                                  "start one with `ray start --head` or give its address") from None


def cluster_cpus(ray) -> int:
    """CPUs of the connected cluster (at least 1): how many actors run side by side."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
