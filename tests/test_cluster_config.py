"""cluster.yaml and docker/Dockerfile: valid for Ray's launcher, and what DESIGN.md's Cluster asks.

The launcher's own code checks the file (`prepare_config` fills AWS defaults, as `ray up` does,
then `validate_config` applies ray-schema.json), offline: nothing here talks to AWS.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def mlflow_server_args(cluster: dict) -> list[str]:
    """The words of the `mlflow server` command among the head's start commands."""
    for command in cluster["head_start_ray_commands"]:
        for part in re.split(r"&&|\|\||;|&", command):
            words = shlex.split(part)
            for i, word in enumerate(words[:-1]):
                if word.endswith("mlflow") and words[i + 1] == "server":
                    return words[i + 2:]
    raise AssertionError("no `mlflow server` in head_start_ray_commands")


def option(args: list[str], name: str) -> str:
    assert name in args, f"mlflow server has no {name}"
    return args[args.index(name) + 1]


def test_cluster_yaml_passes_rays_schema_raw_and_prepared(cluster):
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_aws_cpu_head_and_gpu_workers(cluster):
    assert cluster["provider"] == {**cluster["provider"], "type": "aws", "region": "us-west-2"}
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["node_config"]["InstanceType"] == "m5.xlarge"
    assert head["resources"].get("CPU") == 4 and not head["resources"].get("GPU")
    workers = [spec for name, spec in types.items() if name != cluster["head_node_type"]]
    assert workers and all(w["resources"].get("GPU") == 1 for w in workers)
    gpu = next(w for w in workers if w["node_config"]["InstanceType"] == "g5.xlarge")
    assert gpu["min_workers"] == 0 and gpu["max_workers"] == 4
    assert cluster["max_workers"] >= gpu["max_workers"]


def test_head_runs_mlflow_with_sqlite_runs_and_s3_artifacts(cluster):
    args = mlflow_server_args(cluster)
    assert option(args, "--backend-store-uri").startswith("sqlite:////")
    assert option(args, "--default-artifact-root").startswith("s3://")
    assert option(args, "--host") == "0.0.0.0" and option(args, "--port") == "5000"


def test_docker_image_is_ours_not_ray_ml(cluster):
    images = [cluster["docker"].get(k) for k in ("image", "head_image", "worker_image")]
    images = [image for image in images if image]
    assert images and all("ray-ml" not in image for image in images)
    assert all(image.rsplit("/", 1)[-1].startswith("raysweep:") for image in images)


def test_dockerfile_base_is_rayproject_ray_at_the_installed_version():
    text = (REPO / "docker" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) == 1, bases
    name, _, tag = bases[0].partition(":")
    assert name == "rayproject/ray", f"base {bases[0]} is not rayproject/ray (ray-ml is gone)"
    assert tag.split("-")[0] == ray.__version__, f"base {bases[0]} vs ray {ray.__version__}"
    assert "py311" in tag.split("-") and "gpu" in tag.split("-")
    assert re.search(r"pip install\b.*\s\.(\s|$)", text), "the image must pip install the repo"
