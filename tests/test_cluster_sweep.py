"""A sweep on a multi-node Ray cluster (ray.cluster_utils.Cluster, logical GPUs), with the
synthetic store on S3 and MLflow as a server with S3 artifacts, all on loopback: the shape of
`ray up cluster.yaml` followed by `raysweep run SPEC --address auto`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import mlflow
import pytest
import ray
from ray.cluster_utils import Cluster

from raysweep.cli import main
from raysweep.synthesis.store import SyntheticStore

SPEC = """
name: cluster
dataset: {{name: digits, per_class: 8}}
generator:
  name: ddpm
  options: {{steps: 3, block_out_channels: [8, 16], image_size: 8, sample_steps: 2, batch_size: 16}}
synthesis: {{actors: 2, gpus_per_actor: 0.25, chunk_size: 16}}
training: {{epochs: 1, batch_size: 16, input_size: 16}}
tune: {{cpus_per_trial: 1, gpus_per_trial: 0.5}}
store: {{path: "s3://{bucket}/raysweep"}}
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


@pytest.mark.slow
def test_sweep_on_two_nodes_with_s3_and_an_mlflow_server(in_tmp_cwd, bucket, mlflow_server, capsys):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    cluster.add_node(num_cpus=2, num_gpus=1)  # a "GPU worker" with one logical GPU
    cluster.wait_for_nodes()
    try:
        spec = in_tmp_cwd / "cluster.yaml"
        spec.write_text(SPEC.format(bucket=bucket))
        code = main(["run", str(spec), "--address", cluster.address,
                     "--tracking-uri", mlflow_server])
        assert code == 0, capsys.readouterr().err
    finally:
        ray.shutdown()
        cluster.shutdown()

    # Pools live on S3, one per seed, each generated once at the largest ratio's size.
    store = SyntheticStore(f"s3://{bucket}/raysweep")
    assert len(store.pool_keys()) == 2 and len(store.generator_keys()) == 1
    assert sorted(store.count(k) for k in store.pool_keys()) == [80, 80]
    assert all(store.verify(k) == [] for k in store.pool_keys())

    # MLflow (through the server) holds one parent and four finished children, artifacts on S3.
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["cluster"])
    assert len(runs) == 5 and set(runs["status"]) == {"FINISHED"}
    child = runs[runs["tags.mlflow.parentRunId"].notna()].iloc[0]
    assert child["artifact_uri"].startswith(f"s3://{bucket}/mlflow")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=bucket, Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("confusion_matrix.png") for k in keys)
