"""A running Ray cluster, as `validate --address` and `run --address` see it.

`connect` turns an address that does not answer into one line instead of Ray's minute-long
retry loop. `capacity` is what the cluster has now plus what its autoscaler may add: the node
types of the autoscaling config that the cluster's autoscaler was started with (`ray start
--head --autoscaling-config=FILE`; `ray up` copies the launcher's config to the head as
~/ray_bootstrap_config.yaml and starts it with that).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml
from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
from ray.experimental import internal_kv

from raysweep.errors import UserError

# Where `ray up` puts the autoscaling config on the head.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
# The S3 settings the driver uses reach every worker through Ray's runtime environment, so an
# endpoint or region given only where `raysweep run` starts still applies to actors and trials.
# Secrets are not in this list: workers get their credentials from their own instance profile.
WORKER_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
              "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL")


@dataclass
class Capacity:
    cpus: float
    gpus: float
    max_node_gpus: float
    nodes: int
    autoscaled_nodes: int

    @property
    def multi_node(self) -> bool:
        return self.nodes + self.autoscaled_nodes > 1

    def describe(self) -> str:
        more = f" (up to {self.autoscaled_nodes} more node(s) from the autoscaler)" \
            if self.autoscaled_nodes else ""
        return (f"cluster: {self.nodes} node(s){more}, {self.cpus:g} CPU and {self.gpus:g} GPU "
                f"in all, at most {self.max_node_gpus:g} GPU on one node")


def worker_env() -> dict[str, str]:
    return {name: os.environ[name] for name in WORKER_ENV if os.environ.get(name)}


def connect(address: str) -> None:
    """`ray.init(address)` for an existing cluster; one-line UserError when it does not answer."""
    if address != "auto":
        host, _, port = address.rpartition(":")
        host = host.removeprefix("ray://") or "127.0.0.1"
        try:
            socket.create_connection((host, int(port or 6379)), timeout=5).close()
        except (OSError, ValueError):
            raise UserError(f"--address {address}: no Ray cluster answers there; start one "
                            f"(ray start --head, or ray up cluster.yaml) or fix the address") from None
    try:
        ray.init(address=address, runtime_env={"env_vars": worker_env()},
                 log_to_driver=True, logging_level="WARNING")
    except ConnectionError as error:
        raise UserError(f"--address {address}: no Ray cluster answers ({str(error).splitlines()[0]}); "
                        f"start one (ray start --head, or ray up cluster.yaml) or fix the address") from None


def autoscaling_config() -> Path | None:
    """The autoscaling config of the connected cluster, or None when it does not autoscale.

    The autoscaler (Ray's monitor process on the head) publishes its pid with its status; on the
    head, its command line names the config it reads. Elsewhere, or before its first status,
    the file `ray up` writes on the head stands in.
    """
    status = internal_kv._internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    pid = json.loads(status).get("monitor_pid") if status else None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if pid else []
    except OSError:  # the monitor runs on another machine (or in another container)
        argv = []
    # The pid is checked to be this cluster's monitor: on another machine it may be anything.
    if any(arg.endswith("monitor.py") for arg in argv) and \
            f"--gcs-address={ray.get_runtime_context().gcs_address}" in argv:
        flag = "--autoscaling-config="
        given = next((arg.removeprefix(flag) for arg in argv if arg.startswith(flag)), None)
        # A relative path is the monitor's, from its working directory.
        return Path(f"/proc/{pid}/cwd") / Path(given).expanduser() if given else None
    bootstrap = BOOTSTRAP_CONFIG.expanduser()
    return bootstrap if bootstrap.is_file() else None


def capacity(config_path: Path | None = None) -> Capacity:
    """Resources of the connected cluster's live nodes, plus what the autoscaler may add.

    Args:
        config_path: the autoscaling config; None finds the one the cluster runs with.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n["Resources"].get("CPU", 0.0) for n in nodes)
    gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
    max_node_gpus = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    extra = 0
    path = config_path or autoscaling_config()
    if path is not None and path.is_file():
        config = yaml.safe_load(path.read_text()) or {}
        room = int(config.get("max_workers", 0)) - (len(nodes) - 1)
        for name, node_type in (config.get("available_node_types") or {}).items():
            if name == config.get("head_node_type"):
                continue
            count = min(int(node_type.get("max_workers", 0)), max(room, 0))
            resources = node_type.get("resources") or {}
            cpus += count * float(resources.get("CPU", 0))
            gpus += count * float(resources.get("GPU", 0))
            if count:
                max_node_gpus = max(max_node_gpus, float(resources.get("GPU", 0)))
            extra += count
            room -= count
    return Capacity(cpus, gpus, max_node_gpus, len(nodes), extra)
