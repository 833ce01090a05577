"""The cluster grows when trials ask: Ray's own autoscaler, on its fake multi-node provider.

The autoscaling config is cluster.yaml's, with the AWS provider swapped for Ray's
`fake_multinode` one (which starts each worker node as local processes, logical GPUs
included) and CPU counts shrunk to fit two cores. The head starts alone, without a GPU;
`validate --address` counts the GPU workers the autoscaler may add, the sweep's generator
actor and trials ask for fractional GPUs, so the autoscaler adds workers for them, and once
the sweep is done and the workers stay idle, it removes them again.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import mlflow
import pytest
import ray
import ray._private.state
import yaml
from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
from ray._private.services import get_node_ip_address
from ray.autoscaler._private.fake_multi_node.node_provider import (
    FAKE_HEAD_NODE_ID,
    FAKE_HEAD_NODE_TYPE,
)
from ray.autoscaler._private.util import validate_config
from ray.cluster_utils import Cluster
from ray.experimental import internal_kv

from raysweep.cli import main
from raysweep.deploy import cluster as deploy_cluster
from raysweep.store.store import SyntheticStore
from raysweep.tracking import NODE_TAG
from tiny import TINY_DDPM, descends_from_us

REPO = Path(__file__).resolve().parent.parent
# Workers idle this long are removed (cluster.yaml: 10 minutes, which GPUs cost).
IDLE_TIMEOUT_MINUTES = 0.2
# Per node: the fake provider starts one Ray node in processes of this machine for each.
OBJECT_STORE_BYTES = 150 * 2**20

SPEC = f"""
name: autoscale
dataset: {{name: digits, per_class: 8}}
generator: {{name: ddpm, options: {TINY_DDPM}}}
synthesis: {{actors: 1, chunk_size: 16}}
training: {{epochs: 1, batch_size: 16, input_size: 16}}
tune: {{cpus_per_trial: 1}}
sweep:
  synthetic_ratio: [0, 1]
  backbone: test_resnet
  seed: [0, 1]
"""
GPU_SETTINGS = ["--set", "tune.gpus_per_trial=0.5", "--set", "synthesis.gpus_per_actor=0.5"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def fake_autoscaling_config(gcs_address: str) -> dict:
    """cluster.yaml as the autoscaler reads it (what `ray up` writes to the head), on Ray's fake
    provider: its node types and worker limits, CPUs shrunk to one per node, GPUs kept
    (logical), and the head under the type name the fake provider gives it."""
    launcher = yaml.safe_load((REPO / "cluster.yaml").read_text())
    node_types = {}
    for name, node_type in launcher["available_node_types"].items():
        resources = {**node_type["resources"], "CPU": min(node_type["resources"]["CPU"], 1)}
        if name == launcher["head_node_type"]:
            node_types[FAKE_HEAD_NODE_TYPE] = {"resources": resources, "node_config": {},
                                               "max_workers": 0}
        else:
            node_types[name] = {
                "resources": {**resources, "object_store_memory": OBJECT_STORE_BYTES},
                "node_config": {}, "min_workers": node_type.get("min_workers", 0),
                "max_workers": node_type["max_workers"]}
    commands = ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return {
        "cluster_name": launcher["cluster_name"],
        "max_workers": launcher["max_workers"],
        "upscaling_speed": launcher["upscaling_speed"],
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address,
                     # Every fake node has this machine's IP: the autoscaler tells them apart
                     # by node id, and there is no SSH or launch config to check.
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        **{key: [] for key in commands},
        "available_node_types": node_types,
        "head_node_type": FAKE_HEAD_NODE_TYPE,
    }


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def workers_alive() -> list[str]:
    return [node["NodeID"] for node in ray.nodes()
            if node["Alive"] and node["NodeID"] != FAKE_HEAD_NODE_ID]


@pytest.fixture
def autoscaling_cluster(tmp_path, monkeypatch):
    """A head started alone (as `ray start --head --autoscaling-config=…`) whose autoscaler
    launches cluster.yaml's worker types through the fake provider."""
    # Read by the autoscaler (a child of the head) and by the nodes it starts.
    monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
    port = free_port()
    config = fake_autoscaling_config(f"{get_node_ip_address()}:{port}")
    validate_config(config)  # Ray's own schema
    path = tmp_path / "autoscaling.yaml"
    path.write_text(yaml.safe_dump(config))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": config["available_node_types"][FAKE_HEAD_NODE_TYPE]["resources"]["CPU"],
        "num_gpus": 0, "gcs_server_port": port, "autoscaling_config": str(path),
        # The state API's dashboard is left out on two cores; Ray's GCS tables answer instead.
        "include_dashboard": False,
        "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}})
    try:
        yield cluster, config
    finally:
        # The autoscaler starts worker nodes as its own children; any it left (a failed test)
        # would outlive the head for a minute, so they are stopped with it.
        ours = {pid: started for pid, started in processes().items()
                if safely(descends_from_us, pid)}
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        for pid, started in processes().items():
            if ours.get(pid) == started:  # the same process, not a new one with its pid
                os.kill(pid, signal.SIGKILL)


def processes() -> dict[int, str]:
    """Every process's pid and start time (which tells a process from a later one with its pid)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                found[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()[19]
        except OSError:  # it ended meanwhile
            pass
    return found


def safely(check, pid: int) -> bool:
    try:
        return check(pid)
    except OSError:  # the process ended meanwhile
        return False


@pytest.mark.slow
def test_the_autoscaler_adds_gpu_workers_for_the_sweep_and_removes_them(
        autoscaling_cluster, in_tmp_cwd, bucket, capsys):
    cluster, config = autoscaling_cluster
    spec = in_tmp_cwd / "autoscale.yaml"
    spec.write_text(SPEC)
    storage = ["--storage", f"s3://{bucket}/raysweep"]

    # 1. The head alone, no GPU, and its autoscaler up (it publishes a status once it runs).
    ray.init(address=cluster.address)
    wait_for(lambda: internal_kv._internal_kv_get(DEBUG_AUTOSCALING_STATUS),
             60, "the autoscaler's first status")
    assert workers_alive() == [] and ray.cluster_resources().get("GPU", 0) == 0
    ray.shutdown()

    # 2. validate counts what the autoscaler may add: the GPU settings fit those workers, and
    #    a trial wanting more GPUs than one worker type has is refused.
    gpu_type = next(node_type for name, node_type in config["available_node_types"].items()
                    if name != FAKE_HEAD_NODE_TYPE)
    assert main(["validate", str(spec), "--address", cluster.address, *storage,
                 *GPU_SETTINGS]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"1 node(s) (up to {config['max_workers']} more node(s) from the autoscaler)" in out
    assert f"{config['max_workers'] * gpu_type['resources']['GPU']:g} GPU in all" in out
    assert main(["validate", str(spec), "--address", cluster.address, *storage,
                 "--set", "tune.gpus_per_trial=2"]) == 2
    assert "no node of the cluster has more than 1" in capsys.readouterr().err
    # Across nodes, four quarter-GPU actors may each sit on a GPU of its own and leave none
    # whole for a one-GPU trial (on one node they would pack onto one GPU).
    assert main(["validate", str(spec), "--address", cluster.address, *storage,
                 "--set", "synthesis.actors=4", "--set", "synthesis.gpus_per_actor=0.25",
                 "--set", "tune.gpus_per_trial=1"]) == 2
    assert "wait forever" in capsys.readouterr().err

    # 3. The sweep: one generator actor and four trials, each wanting half a GPU.
    code = main(["run", str(spec), "--address", cluster.address, *storage, *GPU_SETTINGS,
                 "--tracking-uri", f"sqlite:///{in_tmp_cwd / 'mlflow.db'}"])
    assert code == 0, capsys.readouterr().err

    # 4. Workers were added, and the actor and every trial ran on them (the head has no GPU).
    #    The actor alone fills one worker's CPU; trials of one CPU each ask for more (GCS
    #    keeps dead nodes and actors in its tables; MLflow tags each run with its node).
    ray.init(address=cluster.address)
    added = {node["NodeID"] for node in ray.nodes()} - {FAKE_HEAD_NODE_ID}
    assert 2 <= len(added) <= config["max_workers"]
    actors = ray._private.state.actors().values()
    generators = [actor["Address"]["NodeID"] for actor in actors
                  if actor["ActorClassName"] == "GeneratorActor"]
    assert generators and set(generators) <= added

    # 5. The sweep is whole: pools filled, one parent run, one finished child per trial.
    store = SyntheticStore(f"s3://{bucket}/raysweep/cache")
    assert sorted(store.count(key) for key in store.pool_keys()) == [80, 80]
    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["autoscale"])
    assert len(runs) == 5 and set(runs["status"]) == {"FINISHED"}
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 4 and set(children[f"tags.{NODE_TAG}"]) <= added

    # 6. Idle workers are removed (after idle_timeout_minutes); the head stays.
    wait_for(lambda: workers_alive() == [], 120, "idle workers to be removed")
    assert [n["NodeID"] for n in ray.nodes() if n["Alive"]] == [FAKE_HEAD_NODE_ID]


def test_a_cluster_started_without_autoscaling_config_adds_no_nodes(tmp_path, monkeypatch):
    """The running autoscaler's own config wins over a ~/ray_bootstrap_config.yaml left from
    another cluster: a plain local Ray (its monitor runs with none) counts only its nodes."""
    stale = tmp_path / "ray_bootstrap_config.yaml"
    stale.write_text((REPO / "cluster.yaml").read_text())
    monkeypatch.setattr(deploy_cluster, "BOOTSTRAP_CONFIG", stale)
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False)
    try:
        wait_for(lambda: internal_kv._internal_kv_get(DEBUG_AUTOSCALING_STATUS),
                 60, "the autoscaler's first status")
        assert deploy_cluster.autoscaling_config() is None
        found = deploy_cluster.capacity()
    finally:
        ray.shutdown()
    assert (found.nodes, found.autoscaled_nodes, found.gpus) == (1, 0, 0)
