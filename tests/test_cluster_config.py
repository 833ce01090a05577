"""cluster.yaml and docker/Dockerfile: valid for Ray's launcher, and what DESIGN.md's Cluster asks.

The launcher's own code checks the file (`prepare_config` fills AWS defaults, as `ray up` does,
then `validate_config` applies ray-schema.json), offline: nothing here talks to AWS.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import urllib.request
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
    """The `mlflow server` options among the head's start commands (after the starter's `--`)."""
    for command in cluster["head_start_ray_commands"]:
        words = shlex.split(command)
        if "raysweep.deploy.tracking_server" in words:
            return words[words.index("--") + 1:]
    raise AssertionError("no `python -m raysweep.deploy.tracking_server` in head_start_ray_commands")


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


def test_head_runs_mlflow_on_loopback_with_its_database_on_the_host_disk(cluster):
    args = mlflow_server_args(cluster)
    database = option(args, "--backend-store-uri")
    assert database == "sqlite:///~/mlflow/mlflow.db"  # ~ is the container's home, /home/ray
    assert "-v /home/ubuntu/mlflow:/home/ray/mlflow" in cluster["docker"]["head_run_options"]
    assert option(args, "--default-artifact-root").startswith("s3://")
    assert option(args, "--host") == "127.0.0.1" and option(args, "--port") == "5000"
    start = next(c for c in cluster["head_start_ray_commands"] if "ray start --head" in c)
    assert "--dashboard-host=127.0.0.1" in start


def test_nodes_name_an_ami_and_their_own_least_privilege_profiles(cluster):
    configs = {name: t["node_config"] for name, t in cluster["available_node_types"].items()}
    assert all(c.get("ImageId") == "YOUR-DLAMI-ID" for c in configs.values())
    profiles = {name: c["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1] for name, c in configs.items()}
    assert profiles == {"ray.head.cpu": "raysweep-head", "ray.worker.gpu": "raysweep-worker"}
    readme = (REPO / "docker" / "README.md").read_text()
    assert "raysweep-head" in readme and "raysweep-worker" in readme


def test_docker_image_is_ours_not_ray_ml(cluster):
    images = [cluster["docker"].get(k) for k in ("image", "head_image", "worker_image")]
    images = [image for image in images if image]
    assert images and all("ray-ml" not in image for image in images)
    assert all(image.rsplit("/", 1)[-1].startswith("raysweep:") for image in images)


def pinned(name: str) -> str:
    for line in (REPO / "docker" / "constraints.txt").read_text().splitlines():
        package, _, version = line.partition("==")
        if package.strip().lower() == name:
            return version.strip()
    raise AssertionError(f"docker/constraints.txt pins no {name}")


def test_dockerfile_base_is_rayproject_ray_at_the_pinned_version():
    text = (REPO / "docker" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) == 1, bases
    name, _, tag = bases[0].split("@")[0].partition(":")  # a pinned digest may follow the tag
    assert name == "rayproject/ray", f"base {bases[0]} is not rayproject/ray (ray-ml is gone)"
    assert tag.split("-")[0] == pinned("ray"), f"base {bases[0]} vs ray=={pinned('ray')} pinned"
    # CPU base: torch's wheel brings its own CUDA; a -gpu base would add a second stack.
    assert "py311" in tag.split("-") and tag.endswith("-cpu")
    assert re.search(r"pip install\b.*-c docker/constraints.txt\s+\.(\s|$)", text), \
        "the image must pip install the repo with the constraints"


def test_the_image_runs_as_the_unprivileged_ray_user():
    text = (REPO / "docker" / "Dockerfile").read_text()
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    users = [i for i, words in enumerate(lines) if words[0] == "USER"]
    froms = [i for i, words in enumerate(lines) if words[0] == "FROM"]
    assert users and users[0] > froms[-1], "no USER after FROM: the image would run as root"
    assert lines[users[-1]][1] == "ray"


def test_nodes_use_a_security_group_that_opens_ssh_to_one_address_only(cluster, monkeypatch):
    """Ray's own group opens SSH to 0.0.0.0/0 (its security_group setting only adds rules), so
    every node type names the user's group, and Ray's own code then creates none."""
    from ray.autoscaler._private.aws import config as aws_config

    for name, node_type in cluster["available_node_types"].items():
        assert node_type["node_config"].get("SecurityGroupIds") == ["YOUR-SECURITY-GROUP-ID"], name

    def no_group_of_rays(*args, **kwargs):
        raise AssertionError("Ray would create its own security group (SSH from 0.0.0.0/0)")

    monkeypatch.setattr(aws_config, "_upsert_security_groups", no_group_of_rays)
    aws_config._configure_security_group(prepare_config(copy.deepcopy(cluster)))
    readme = (REPO / "docker" / "README.md").read_text()
    assert "--port 22 --cidr YOUR-IP/32" in readme and "0.0.0.0/0 and" in readme
    assert "--source-group $SG" in readme


def policies() -> dict[str, dict]:
    """The two IAM policies of docker/README.md, by profile name."""
    readme = (REPO / "docker" / "README.md").read_text()
    found = {}
    for name in ("raysweep-worker", "raysweep-head"):
        after = readme[readme.index(f"**`{name}`**"):]
        body = after[after.index("```json") + len("```json"):]
        found[name] = json.loads(body[:body.index("```")])
    return found


def allowed(policy: dict, action: str, resource: str, context: dict | None = None) -> bool:
    """IAM's answer for these Allow-only policies: an action and resource pattern match (`*`
    and `?` as IAM reads them, across `/`) and every condition holds."""
    from fnmatch import fnmatchcase

    assert all(s["Effect"] == "Allow" for s in policy["Statement"])  # no Deny to evaluate
    context = context or {}

    def matches(patterns, value, case=True):
        patterns = [patterns] if isinstance(patterns, str) else patterns
        return any(fnmatchcase(value if case else value.lower(), p if case else p.lower())
                   for p in patterns)

    def holds(operator: str, key: str, expected) -> bool:
        if key not in context:
            return operator.endswith("IfExists")
        test = (lambda v, p: v == p) if operator.startswith("StringEquals") else \
            (lambda v, p: matches(p, v))
        expected = [expected] if isinstance(expected, str) else expected
        return any(test(context[key], e) for e in expected)

    return any(matches(s["Action"], action, case=False) and matches(s["Resource"], resource)
               and all(holds(op, key, value) for op, pairs in s.get("Condition", {}).items()
                       for key, value in pairs.items())
               for s in policy["Statement"])


BUCKET = "arn:aws:s3:::YOUR-BUCKET"
SWEEP = "raysweep/tune/ratio-20261124-011502-3fa9c1"
TRIAL = f"{SWEEP}/train_fn_1a2b3_00000_0_seed=0,synthetic_ratio=0.0000_2026-11-24_01-15-02"


def test_workers_write_pools_and_their_trials_but_not_what_the_driver_unpickles():
    worker = policies()["raysweep-worker"]
    for key in ("raysweep/cache/pools/3f0c/shard-00000-1a2b3c4d.npz",
                "raysweep/cache/generators/ab12/0123456789ab/unet/model.safetensors",
                f"{TRIAL}/checkpoint_000003/checkpoint.pt", f"{TRIAL}/result.json",
                "raysweep/", "raysweep/tune/", f"{SWEEP}/", f"{TRIAL}/"):  # pyarrow's folders
        assert allowed(worker, "s3:PutObject", f"{BUCKET}/{key}"), key
    for key in (f"{SWEEP}/tuner.pkl", f"{SWEEP}/experiment_state-2026-11-24_01-15-02.json",
                "raysweep/mlflow/1/0f3c/artifacts/spec.yaml", "other/x", "raysweep/tune/x"):
        assert not allowed(worker, "s3:PutObject", f"{BUCKET}/{key}"), key
        assert not allowed(worker, "s3:DeleteObject", f"{BUCKET}/{key}"), key
    assert allowed(worker, "s3:GetObject", f"{BUCKET}/{SWEEP}/tuner.pkl")
    # Listing: under the prefix, and the prefix-less HEAD of the bucket that pyarrow makes.
    assert allowed(worker, "s3:ListBucket", BUCKET, {"s3:prefix": "raysweep/cache/pools/"})
    assert allowed(worker, "s3:ListBucket", BUCKET)
    assert not allowed(worker, "s3:ListBucket", BUCKET, {"s3:prefix": "other/"})
    # What `cache verify` and `cache gc` call on S3.
    assert allowed(worker, "s3:ListBucketMultipartUploads", BUCKET)
    assert allowed(worker, "s3:AbortMultipartUpload", f"{BUCKET}/raysweep/cache/pools/k/x")
    assert not any(allowed(worker, f"ec2:{a}", "arn:aws:ec2:us-west-2:1:instance/i-1")
                   for a in ("RunInstances", "TerminateInstances", "StopInstances", "CreateTags"))


def test_the_head_manages_only_this_clusters_instances(cluster):
    head = policies()["raysweep-head"]
    name = cluster["cluster_name"]
    instance = "arn:aws:ec2:us-west-2:YOUR-ACCOUNT-ID:instance/i-0123456789abcdef0"
    assert allowed(head, "ec2:RunInstances", instance,
                   {"aws:RequestTag/ray-cluster-name": name})
    assert not allowed(head, "ec2:RunInstances", instance)
    assert not allowed(head, "ec2:RunInstances", instance,
                       {"aws:RequestTag/ray-cluster-name": "someone-else"})
    for action in ("TerminateInstances", "StopInstances", "StartInstances", "CreateTags"):
        assert allowed(head, f"ec2:{action}", instance, {"ec2:ResourceTag/ray-cluster-name": name})
        assert not allowed(head, f"ec2:{action}", instance), action  # an instance not ours
    assert allowed(head, "ec2:CreateTags", instance, {"ec2:CreateAction": "RunInstances"})
    assert allowed(head, "s3:PutObject", f"{BUCKET}/{SWEEP}/tuner.pkl")
    assert allowed(head, "s3:PutObject", f"{BUCKET}/raysweep/mlflow/1/0f3c/artifacts/spec.yaml")
    assert not allowed(head, "s3:PutObject", f"{BUCKET}/other/x")
    assert allowed(head, "iam:PassRole", "arn:aws:iam::YOUR-ACCOUNT-ID:role/raysweep-worker")
    assert not allowed(head, "iam:PassRole", "arn:aws:iam::YOUR-ACCOUNT-ID:role/admin")


def test_ci_runs_readme_test_command_with_the_constraints():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert "pip install -c docker/constraints.txt -e '.[test]'" in ci
    readme = (REPO / "README.md").read_text()
    assert ci[-1] == "python -m pytest -q" and f"&& {ci[-1]}\n" in readme


FAKE_DOCKER = """#!/usr/bin/env bash
# Stands in for `docker` on a machine without a daemon: `exec [-it] [-e VAR=…] NAME CMD…` runs
# CMD here, the way the container would; anything else is an error.
[ "$1" = exec ] || { echo "fake docker: only exec" >&2; exit 1; }
shift
while [ $# -gt 0 ]; do
  case "$1" in -it|-i|-t) shift;; -e) shift 2;; *) break;; esac
done
shift  # the container's name
exec "$@"
"""


class LocalHost:
    """Ray's process runner, with `ssh … user@host CMD` run by a shell on this machine instead."""

    DEVNULL = subprocess.DEVNULL

    def __init__(self, environment: dict):
        self.environment = environment

    def _local(self, command: list[str]) -> list[str]:
        at = next(i for i, word in enumerate(command) if word.startswith("ray@"))
        return ["bash", "-c", " ".join(command[at + 1:])]  # what sshd runs for the remote user

    def check_call(self, command, **kwargs):
        return subprocess.check_call(self._local(command), env=self.environment, timeout=300,
                                     stdin=subprocess.DEVNULL)

    def check_output(self, command, **kwargs):
        return subprocess.check_output(self._local(command), env=self.environment, timeout=300)


class OneNode:
    """The node provider Ray's command runner asks for the node's address."""

    def internal_ip(self, node_id):
        return "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_head_commands_start_mlflow_through_rays_command_wrapping(cluster, tmp_path):
    """The head's setup and start commands, as `ray up` runs them: Ray's DockerCommandRunner
    wraps each in `docker exec … bash --login -c -i` and its SSH runner wraps that again; only
    ssh and docker are replaced (a local shell, and a `docker` that runs the command here).
    `ray stop`/`ray start` are left out: on a shared machine `ray stop` ends everyone's Ray."""
    from ray.autoscaler._private.command_runner import DockerCommandRunner

    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    # The node's login environment (bash --login resets PATH from /etc/profile): our `docker`,
    # this checkout's raysweep and this machine's python, as the image's would be.
    (home / ".profile").write_text(f"export PATH={bin_dir}:{os.environ['PATH']}\n"
                                   f"export PYTHONPATH={REPO}\n")
    (home / ".bashrc").write_text("")
    port = free_port()  # 5000 may be taken on a shared machine
    environment = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                   "PYTHONPATH": str(REPO)}
    runner = DockerCommandRunner(
        cluster["docker"], log_prefix="test", node_id="head", provider=OneNode(),
        auth_config={"ssh_user": "ray"}, cluster_name=cluster["cluster_name"],
        process_runner=LocalHost(environment), use_internal_ip=True)
    commands = cluster["head_setup_commands"] + [
        c for c in cluster["head_start_ray_commands"] if not re.search(r"\bray (stop|start)\b", c)]
    assert any("mlflow" in c for c in commands)
    pid_file = home / "mlflow" / "mlflow-server.pid"
    try:
        for attempt in range(2):  # the second `ray up` must find the first server, not a second
            for command in commands:
                runner.run(command.replace("--port 5000", f"--port {port}"))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
                assert answer.status == 200
            if attempt == 0:
                first = pid_file.read_text()
        assert pid_file.read_text() == first
        assert (home / "mlflow" / "mlflow.db").is_file()  # ~ became the container's home
        assert (home / ".bashrc").read_text().count("MLFLOW_TRACKING_URI") == 1
    finally:
        if pid_file.exists():
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


@pytest.mark.slow  # an MLflow server starts (seconds on an idle machine, minutes on a busy one)
def test_tracking_server_reads_a_secret_store_uri_from_a_private_file(tmp_path, capsys,
                                                                      monkeypatch):
    """For a database with a password: the URI is read from a mode-600 file and handed to
    `mlflow server` through its environment, so no command line on the head shows it."""
    from raysweep.deploy import tracking_server

    monkeypatch.setattr(tracking_server, "READY_SECONDS", 400)  # a busy shared test machine

    secret = tmp_path / "backend-store-uri"
    secret.write_text(f"sqlite:///{tmp_path / 's3cr3t-store.db'}\n")
    secret.chmod(0o644)
    pid_file, log_file = tmp_path / "mlflow.pid", tmp_path / "mlflow.log"
    port = free_port()
    argv = ["--pid-file", str(pid_file), "--log-file", str(log_file),
            "--backend-store-uri-file", str(secret), "--", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    assert tracking_server.main(argv) == 2  # readable by others: refused, in one line
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "chmod 600" in err and not pid_file.exists()
    secret.chmod(0o600)
    try:
        assert tracking_server.main(argv) == 0
        pid = int(pid_file.read_text())
        lines = [Path(f"/proc/{p.name}/cmdline").read_bytes() for p in Path("/proc").iterdir()
                 if p.name.isdigit() and _in_session(int(p.name), pid)]
    finally:
        if pid_file.exists():
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    assert any(b"mlflow" in line for line in lines)
    assert not any(b"s3cr3t" in line for line in lines), lines
    assert (tmp_path / "s3cr3t-store.db").is_file()  # the server used the file's URI


def _in_session(pid: int, session: int) -> bool:
    """Whether `pid` belongs to the session the server was started in (its own)."""
    try:
        return os.getsid(pid) == session
    except OSError:
        return False
