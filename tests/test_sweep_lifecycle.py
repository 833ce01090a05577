"""How a sweep ends: Ctrl-C / SIGTERM → KILLED and a non-zero exit; a killed driver → `--resume`
finishes the same sweep with one child run per trial; bad cluster and storage input → one line,
exit 2; MLflow errors in the callback retried and never fatal. Real Ray, MLflow on sqlite."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

from raysweep import tracking
from raysweep.cli import main

REPO = Path(__file__).resolve().parent.parent

# No generator: the lifecycle is the point, so trials are tiny and all that takes time.
NO_SYNTHESIS = """
name: life
dataset: {name: digits, per_class: 8}
training: {epochs: 40, batch_size: 16, input_size: 16}
tune: {cpus_per_trial: 1}
sweep:
  synthetic_ratio: 0
  backbone: test_resnet
  seed: [0, 1]
"""

# A generator and pools too, so `--resume` has pools to reuse. Each trial asks for both CPUs, so
# trials run one at a time and for seconds each: the test can catch the moment when Tune's saved
# state holds one trial finished while the next still runs, and kill the driver there. Every
# epoch is checkpointed, so the cut-off trial continues from one.
RESUMED_EPOCHS = 20
WITH_POOLS = f"""
name: resumed
dataset: {{name: digits, per_class: 8}}
generator:
  name: ddpm
  options: {{steps: 3, block_out_channels: [8, 16], image_size: 8, sample_steps: 2, batch_size: 16}}
synthesis: {{actors: 1, chunk_size: 40}}
training: {{epochs: {RESUMED_EPOCHS}, batch_size: 16, input_size: 16}}
tune: {{cpus_per_trial: 2, checkpoint_interval_s: 0}}
sweep:
  synthetic_ratio: [0, 1]
  backbone: test_resnet
  seed: [0, 1]
"""


def start_sweep(directory: Path, spec_text: str, *extra: str) -> subprocess.Popen:
    spec = directory / "spec.yaml"
    spec.write_text(spec_text)
    # Tune saves its experiment state (what --resume reads) every 10 s by default; every second
    # here, so a finished trial is on disk well before the last trial ends.
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "raysweep.cli", "run", str(spec),
                             "--num-cpus", "2", *extra], cwd=directory, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def runs(directory: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def children(all_runs: list) -> list:
    return [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]


# What reading a sweep's state raises while the sweep is still creating it: the sqlite file or
# Tune's directory not there yet or being written, the parent run not there yet (StopIteration).
NOT_READY = (MlflowException, sqlite3.Error, OSError, ValueError, KeyError, StopIteration)


def wait_for(condition, process: subprocess.Popen, seconds: float = 400) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the sweep ended early:\n{process.stdout.read()[-3000:]}")
        try:
            if condition():
                return
        except NOT_READY:
            pass
        time.sleep(0.5)
    process.kill()
    pytest.fail("timed out waiting for the sweep")


def epochs_logged(directory: Path, run) -> bool:
    client = MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    return bool(client.get_metric_history(run.info.run_id, "epoch"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_sweep_killed_with_its_running_children(tmp_path, signum):
    process = start_sweep(tmp_path, NO_SYNTHESIS)
    wait_for(lambda: any(r.info.status == "RUNNING" and epochs_logged(tmp_path, r)
                         for r in children(runs(tmp_path, "life"))), process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=300)

    assert process.returncode == 128 + signum, output[-3000:]
    assert f"interrupted by {signal.Signals(signum).name}" in output
    every = runs(tmp_path, "life")
    parent = [r for r in every if r.data.tags.get("raysweep.role") == "sweep"]
    assert [r.info.status for r in parent] == ["KILLED"]
    statuses = [r.info.status for r in children(every)]
    assert "KILLED" in statuses and set(statuses) <= {"KILLED", "FINISHED"}


@pytest.mark.slow
def test_a_killed_driver_resumes_and_mlflow_ends_with_one_run_per_trial(tmp_path):
    process = start_sweep(tmp_path, WITH_POOLS)

    def saved_as_done() -> set[str]:
        """Trials that Tune's saved experiment state (what --resume restores) holds finished."""
        parent = next(r for r in runs(tmp_path, "resumed") if r.data.tags.get("raysweep.role"))
        path = tmp_path / ".raysweep" / "tune" / parent.data.tags["raysweep.sweep"]
        return {t.trial_id for t in tune.ExperimentAnalysis(str(path)).trials
                if t.status == "TERMINATED"}

    def one_done_one_running() -> bool:
        running = [r for r in children(runs(tmp_path, "resumed")) if r.info.status == "RUNNING"]
        return bool(running) and bool(saved_as_done())

    wait_for(one_done_one_running, process)
    process.kill()  # SIGKILL: nothing of raysweep's runs after this
    process.wait()
    done = saved_as_done()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    before = {r.info.run_id: [m.value for m in client.get_metric_history(r.info.run_id, "train_loss")]
              for r in children(runs(tmp_path, "resumed"))
              if r.data.tags["raysweep.trial_id"] in done}
    assert before and all(len(losses) == RESUMED_EPOCHS for losses in before.values())
    parent_id = next(r.info.run_id for r in runs(tmp_path, "resumed")
                     if r.data.tags.get("raysweep.role") == "sweep")
    assert client.get_run(parent_id).info.status == "RUNNING"  # what a killed driver leaves

    resumed = start_sweep(tmp_path, WITH_POOLS, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert "resuming sweep" in output and "(0 generated, 80 reused)" in output

    every = runs(tmp_path, "resumed")
    parents = [r for r in every if r.data.tags.get("raysweep.role") == "sweep"]
    assert [(r.info.run_id, r.info.status) for r in parents] == [(parent_id, "FINISHED")]
    kids = children(every)
    assert len(kids) == 4 and {r.info.status for r in kids} == {"FINISHED"}
    assert len({r.data.tags["raysweep.trial_id"] for r in kids}) == 4
    # Trials the saved state held finished were not run again: their loss curves are unchanged.
    for run_id, losses in before.items():
        assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == losses
    assert all(r.data.metrics["epoch"] == RESUMED_EPOCHS for r in kids)


def test_resume_with_nothing_to_resume_is_one_line(in_tmp_cwd, capsys):
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(NO_SYNTHESIS)
    assert main(["run", str(spec), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--resume" in err and "no unfinished sweep" in err


SWEEP_ID = "life-20261201-000000-abcdef"


def unfinished_sweep(directory: Path, *, sweep_id: str = SWEEP_ID, storage: Path | None = None,
                     driver: str = "") -> tuple:
    """A parent run as a driver left it (RUNNING), its Tune state (a tuner.pkl) where it says,
    and the spec it belongs to; returns (spec, tracking URI, run id)."""
    from raysweep.spec import load_spec
    from raysweep.sweep.run import STORAGE_TAG
    from raysweep.tracking import experiment_id, open_store, resolve_tracking_uri

    path = directory / "spec.yaml"
    path.write_text(NO_SYNTHESIS)
    uri = resolve_tracking_uri(None, None)
    storage = storage or directory / ".raysweep" / "tune"
    (storage / sweep_id).mkdir(parents=True, exist_ok=True)
    (storage / sweep_id / "tuner.pkl").write_bytes(b"")
    client = open_store(uri)
    run = client.create_run(experiment_id(client, "life"), tags={
        tracking.SWEEP_TAG: sweep_id, "raysweep.role": "sweep", STORAGE_TAG: str(storage),
        tracking.DRIVER_TAG: driver})
    return load_spec(path), uri, run.info.run_id


def dead_driver() -> str:
    """The driver tag of a process that has ended (as a SIGKILLed driver's is)."""
    process = subprocess.Popen(["sleep", "60"])
    tag = tracking.driver_tag(process.pid)
    process.kill()
    process.wait()
    return tag


def test_resume_never_restores_from_a_path_a_tag_names(in_tmp_cwd, capsys):
    """`Tuner.restore` unpickles tuner.pkl: a tag pointing at someone else's folder must not
    lead there. The spec's own storage (or --storage) is the only place resumed from."""
    elsewhere = in_tmp_cwd / "planted"
    unfinished_sweep(in_tmp_cwd, storage=elsewhere, driver=dead_driver())
    capsys.readouterr()  # MLflow's lines from creating the store
    assert main(["run", str(in_tmp_cwd / "spec.yaml"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(elsewhere) in err and "--storage" in err
    assert not ray.is_initialized()


@pytest.mark.parametrize("sweep_id", ["life-x'/../../etc", "other-20261201-000000-abcdef",
                                      "life-20261201-000000-abcdef/../../x"])
def test_resume_refuses_a_sweep_id_raysweep_did_not_make(in_tmp_cwd, sweep_id):
    from raysweep.errors import UserError
    from raysweep.sweep.run import find_resumable

    spec, uri, _ = unfinished_sweep(in_tmp_cwd, sweep_id=sweep_id.split("/")[0],
                                    driver=dead_driver())
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("life").experiment_id])[0]
    client.set_tag(run.info.run_id, tracking.SWEEP_TAG, sweep_id)
    with pytest.raises(UserError, match="not one raysweep makes for spec 'life'"):
        find_resumable(spec, uri)


def test_resume_waits_for_the_driver_to_be_gone(in_tmp_cwd):
    """Two drivers must never share a Tune directory: a live driver (here a process that is
    still running) is refused; once it has ended, the same sweep resumes."""
    from raysweep.errors import UserError
    from raysweep.sweep.run import Resumable, find_resumable

    driver = subprocess.Popen(["sleep", "60"])
    try:
        spec, uri, run_id = unfinished_sweep(in_tmp_cwd, driver=tracking.driver_tag(driver.pid))
        with pytest.raises(UserError, match=f"still running .*pid {driver.pid}"):
            find_resumable(spec, uri)
        # KILLED in MLflow, but its driver runs (another --resume is taking it over): refused.
        MlflowClient(uri).set_terminated(run_id, "KILLED")
        with pytest.raises(UserError, match="still running"):
            find_resumable(spec, uri)
    finally:
        driver.kill()
        driver.wait()
    assert find_resumable(spec, uri) == Resumable(SWEEP_ID,
                                                  str(in_tmp_cwd / ".raysweep" / "tune"))


def test_resume_refuses_a_driver_on_another_host(in_tmp_cwd):
    from raysweep.errors import UserError
    from raysweep.sweep.run import find_resumable

    spec, uri, run_id = unfinished_sweep(in_tmp_cwd, driver="head-node-7:4242:abc/123")
    with pytest.raises(UserError, match=f"host 'head-node-7' .*resume it there.*{run_id}"):
        find_resumable(spec, uri)
    MlflowClient(uri).set_terminated(run_id, "KILLED")  # that driver ended it on its way out
    assert find_resumable(spec, uri).sweep_id == SWEEP_ID


def test_storage_must_be_a_prefix_every_node_reaches(in_tmp_cwd, capsys):
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(NO_SYNTHESIS)
    assert main(["validate", str(spec), "--storage", str(in_tmp_cwd / "here")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--storage" in err and "s3://" in err


def test_a_missing_storage_bucket_is_one_line(in_tmp_cwd, bucket, capsys):
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(NO_SYNTHESIS)
    assert main(["validate", str(spec), "--storage", f"s3://{bucket}-missing/raysweep"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{bucket}-missing" in err


def test_an_address_that_does_not_answer_is_one_line(in_tmp_cwd, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(NO_SYNTHESIS)
    assert main(["validate", str(spec), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"127.0.0.1:{port}" in err and "no Ray cluster answers" in err
    assert not ray.is_initialized()


@pytest.mark.slow
def test_validate_address_checks_the_spec_against_the_cluster(in_tmp_cwd, capsys, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    cluster.add_node(num_cpus=1, num_gpus=0)
    cluster.wait_for_nodes()
    try:
        spec = in_tmp_cwd / "spec.yaml"
        spec.write_text(NO_SYNTHESIS)
        # Two nodes and Tune's storage in this directory: the other node cannot reach it.
        assert main(["validate", str(spec), "--address", cluster.address]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "tune.storage_path" in err and "--storage" in err
        # With the storage on S3, a GPU per trial is more than any node has.
        assert main(["validate", str(spec), "--address", cluster.address,
                     "--set", "tune.storage_path=s3://bucket/tune", "--set",
                     "store.path=s3://bucket/cache", "--set", "tune.gpus_per_trial=1"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "tune.gpus_per_trial" in err
        assert not ray.is_initialized()  # validate disconnects
    finally:
        cluster.shutdown()


def test_capacity_counts_what_the_autoscaler_may_add():
    """cluster.yaml as the head's autoscaling config: a CPU head, up to 4 one-GPU workers, so
    the README's GPU overrides validate on a head that has no GPU itself."""
    from raysweep.deploy.cluster import capacity

    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False)
    try:
        found = capacity(REPO / "cluster.yaml")
    finally:
        ray.shutdown()
    assert (found.nodes, found.autoscaled_nodes) == (1, 4)
    assert found.gpus == 4 and found.max_node_gpus == 1 and found.multi_node


class FakeTrial(SimpleNamespace):
    """What the callback reads of a Tune trial: its id and config."""


@pytest.mark.slow  # MLflow's sqlite store waits 20 s for a lock before it reports one
def test_mlflow_errors_in_the_callback_are_retried_and_never_fatal(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = "locked-20261201-000000-abcdef"
    experiment, parent = tracking.start_parent_run(uri, "locked", sweep, run_name=sweep)
    # on_trial_result alone needs no trial planner (it creates the child run itself).
    callback = tracking.MLflowTrialCallback(uri, experiment, parent, sweep, {}, planner=None)
    trial = FakeTrial(trial_id="t1", config={"synthetic_ratio": 0, "augmentation": "none"},
                      checkpoint=None)
    callback.on_trial_result(iteration=0, trials=[], trial=trial,
                             result={"epoch": 0, "val_accuracy": 0.25})

    def lock(seconds: float, held: threading.Event) -> None:  # another writer holds the file
        connection = sqlite3.connect(tmp_path / "mlflow.db")
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        connection.rollback()
        connection.close()

    def while_locked(seconds: float, result: dict) -> None:
        held = threading.Event()
        holder = threading.Thread(target=lock, args=(seconds, held))
        holder.start()
        held.wait()  # the lock is taken before the callback writes
        callback.on_trial_result(iteration=0, trials=[], trial=trial, result=result)
        holder.join()

    # Held for longer than one attempt waits (20 s), shorter than the budget: retried, recorded.
    monkeypatch.setattr(tracking, "TRACKING_BUDGET_S", 60.0)
    while_locked(24, {"epoch": 1, "val_accuracy": 0.5})
    run_id = callback.run_ids["t1"]
    assert MlflowClient(uri).get_run(run_id).data.metrics["val_accuracy"] == 0.5

    # When the budget runs out, the hook says so and the sweep goes on.
    monkeypatch.setattr(tracking, "TRACKING_BUDGET_S", 1.0)
    while_locked(24, {"epoch": 2, "val_accuracy": 0.75})
    assert "not recorded" in capsys.readouterr().out
    assert MlflowClient(uri).get_run(run_id).data.metrics["val_accuracy"] == 0.5


@pytest.mark.slow
def test_a_sweep_whose_trials_fail_ends_failed(in_tmp_cwd, capsys):
    """A checkpoint file that is not one: the file exists (validate passes), the trial fails
    loading it, Tune gives up after tune.max_failures, and the sweep ends FAILED, exit 1."""
    broken = in_tmp_cwd / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    spec = in_tmp_cwd / "spec.yaml"
    spec.write_text(NO_SYNTHESIS)
    code = main(["run", str(spec), "--num-cpus", "2", "--set", "training.epochs=1",
                 "--set", "sweep.seed=0", "--set", f"training.pretrained={broken}",
                 "--set", "tune.max_failures=0"])
    assert code == 1
    assert not ray.is_initialized()
    every = runs(in_tmp_cwd, "life")
    parent = [r.info.status for r in every if r.data.tags.get("raysweep.role") == "sweep"]
    assert parent == ["FAILED"] and [r.info.status for r in children(every)] == ["FAILED"]
