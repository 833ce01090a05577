"""A sweep on a multi-node Ray cluster (ray.cluster_utils.Cluster, logical GPUs), with Tune's
storage, the synthetic store and MLflow's artifacts under one S3 prefix (`--storage`) and MLflow
as a server, all on loopback: the shape of `ray up cluster.yaml` followed by `raysweep run SPEC
--address auto --storage s3://…`. A GPU node is removed while a trial runs on it, and that trial
is retried on the other node, with Tune's state on S3."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import mlflow
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.cluster_utils import Cluster

from raysweep.cli import main
from raysweep.store.store import SyntheticStore
from raysweep.tracking import NODE_TAG

SPEC = """
name: cluster
dataset: {{name: digits, per_class: 8}}
generator:
  name: ddpm
  options: {{steps: 3, block_out_channels: [8, 16], image_size: 8, sample_steps: 2, batch_size: 16}}
synthesis: {{actors: 2, gpus_per_actor: 0.25, chunk_size: 16}}
training: {{epochs: 8, batch_size: 16, input_size: 16}}
tune: {{cpus_per_trial: 1, gpus_per_trial: 0.5}}
sweep:
  synthetic_ratio: [0, 1]
  backbone: test_resnet
  seed: [0, 1]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, bucket, endpoint, monkeypatch):
    """`mlflow server` as the head node runs it: sqlite backend, artifacts on S3."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--default-artifact-root", f"s3://{bucket}/mlflow",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        process.kill()
        pytest.fail("mlflow server did not start")
    yield url
    process.terminate()
    process.wait(timeout=30)


def remove_node_while_trials_run(cluster: Cluster, nodes: list, tracking_uri: str,
                                 done: threading.Event, removed: list) -> None:
    """Once a trial has logged an epoch (of eight) on one of `nodes`, remove that node: the
    trial was cut off and must finish on the other. MLflow tags each run with its node."""
    client = MlflowClient(tracking_uri)
    by_id = {node.node_id: node for node in nodes}
    while not done.is_set():
        experiment = client.get_experiment_by_name("cluster")
        for run in client.search_runs([experiment.experiment_id],
                                      "attributes.status = 'RUNNING'") if experiment else []:
            node = by_id.get(run.data.tags.get(NODE_TAG))
            epochs = client.get_metric_history(run.info.run_id, "epoch")
            if node is not None and epochs and max(m.value for m in epochs) <= 4:
                cluster.remove_node(node)
                removed.append((run.info.run_id, node.node_id))
                return
        time.sleep(0.5)


@pytest.mark.slow
def test_sweep_on_two_nodes_survives_losing_a_node(in_tmp_cwd, bucket, mlflow_server, capsys):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    # Two "GPU workers" with one logical GPU each (nodes are added from the main thread:
    # starting one installs signal handlers).
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    done, removed = threading.Event(), []
    watcher = threading.Thread(target=remove_node_while_trials_run,
                               args=(cluster, workers, mlflow_server, done, removed))
    watcher.start()
    try:
        spec = in_tmp_cwd / "cluster.yaml"
        spec.write_text(SPEC.format(bucket=bucket))
        code = main(["run", str(spec), "--address", cluster.address,
                     "--tracking-uri", mlflow_server, "--storage", f"s3://{bucket}/raysweep"])
        assert code == 0, capsys.readouterr().err
    finally:
        done.set()
        watcher.join()
        ray.shutdown()
        cluster.shutdown()
    assert removed, "the node was not removed while trials ran"

    # Pools live on S3, one per seed, each generated once at the largest ratio's size.
    store = SyntheticStore(f"s3://{bucket}/raysweep/cache")
    assert len(store.pool_keys()) == 2 and len(store.generator_keys()) == 1
    assert sorted(store.count(k) for k in store.pool_keys()) == [80, 80]
    assert all(store.verify(k) == [] for k in store.pool_keys())

    # MLflow (through the server) holds one parent and four finished children, one per trial,
    # every one of them with all its epochs, artifacts under the storage prefix.
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["cluster"])
    assert len(runs) == 5 and set(runs["status"]) == {"FINISHED"}
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert all(children["metrics.epoch"] == 8)
    # The trial cut off with its node finished on the other one.
    (cut_run, lost_node), = removed
    finished_on = children.set_index("run_id").loc[cut_run, f"tags.{NODE_TAG}"]
    assert finished_on in {w.node_id for w in workers} - {lost_node}
    assert all(children["artifact_uri"].str.startswith(f"s3://{bucket}/raysweep/mlflow"))
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=bucket, Prefix="raysweep/mlflow/").get("Contents", [])]
    assert any(k.endswith("confusion_matrix.png") for k in keys)

    # Tune kept its state on S3, and the trials cut off with the node were retried there.
    sweep = runs[runs["tags.raysweep.role"] == "sweep"].iloc[0]["tags.raysweep.sweep"]
    analysis = tune.ExperimentAnalysis(f"s3://{bucket}/raysweep/tune/{sweep}")
    assert len(analysis.trials) == 4
    assert sum(trial.run_metadata.num_failures for trial in analysis.trials) >= 1
