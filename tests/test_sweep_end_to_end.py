"""A whole sweep through the CLI on tiny settings: real Ray, real MLflow (sqlite), real DDPM."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tiny import generator_actor_pids

from raysweep.cli import main
from raysweep.plan import build_plan
from raysweep.spec import load_spec

TINY = """
name: tiny
dataset: {name: digits, per_class: 8}
generator:
  name: ddpm
  options: {steps: 4, block_out_channels: [8, 16], image_size: 8, sample_steps: 2, batch_size: 16}
synthesis: {actors: 2, chunk_size: 24}
training: {epochs: 2, batch_size: 16, input_size: 16}
tune: {cpus_per_trial: 1}
sweep:
  synthetic_ratio: [0, 0.5, 1]
  backbone: test_resnet
  seed: [0, 1]
"""


@pytest.mark.slow
def test_sweep_end_to_end_records_every_trial(in_tmp_cwd, capsys):
    spec = in_tmp_cwd / "tiny.yaml"
    spec.write_text(TINY)
    assert main(["run", str(spec), "--num-cpus", "2"]) == 0
    capsys.readouterr()

    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tiny"])
    parents = runs[runs["tags.raysweep.role"] == "sweep"]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 1 and len(children) == 6
    assert set(runs["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parents.iloc[0]["run_id"]}
    swept = {(float(r), int(s)) for r, s in zip(children["params.synthetic_ratio"],
                                                 children["params.seed"])}
    assert swept == {(r, s) for r in (0.0, 0.5, 1.0) for s in (0, 1)}

    client = MlflowClient()
    n_test = len(build_plan(load_spec(spec)).splits.test)
    charged = []
    for row in children.itertuples():
        history = client.get_metric_history(row.run_id, "val_balanced_accuracy")
        assert [m.step for m in history] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(row.run_id)}
        assert "confusion_matrix.png" in artifacts
        ratio = float(client.get_run(row.run_id).data.params["synthetic_ratio"])
        assert ("synthetic_samples.png" in artifacts) == (ratio > 0)
        metrics = client.get_run(row.run_id).data.metrics
        assert metrics["synthetic_images_used"] == round(ratio * 80)
        # The images are charged to the trial whose demand made them: the ratio-1 trial of
        # each seed asked for the whole pool, the ratio-0.5 trial read a prefix of it.
        generated = metrics["synthetic_images_generated_for_trial"]
        assert generated == (80 if ratio == 1 else 0)
        assert metrics["synthetic_images_reused"] == round(ratio * 80) - generated
        charged.append(generated)
        # Accuracy on the real test split: a whole number of its images, as the trial saved it.
        correct = metrics["test_accuracy"] * n_test
        assert abs(correct - round(correct)) < 1e-6
        saved = json.loads(Path(client.download_artifacts(row.run_id, "test_metrics.json",
                                                          str(in_tmp_cwd))).read_text())
        assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    parent_artifacts = {a.path for a in client.list_artifacts(parents.iloc[0]["run_id"])}
    assert {"spec.yaml", "synthetic_samples_seed0.png", "synthetic_samples_seed1.png"} <= parent_artifacts
    assert "report" in parent_artifacts  # the report's files, logged by `run`
    # One pool per seed, each holding exactly the largest ratio's images: generated once,
    # by two actors that each loaded the model once for all six trials.
    parent_metrics = client.get_run(parents.iloc[0]["run_id"]).data.metrics
    assert parent_metrics["synthetic_images_generated"] == 160 == sum(charged)
    assert parent_metrics["generator_model_loads"] == 2

    # Trials this short save no resumable state (one a minute at most): a finished trial's
    # checkpoint holds its artifacts only, so the sweep leaves no model-sized files behind.
    sweep_id = parents.iloc[0]["tags.raysweep.sweep"]
    checkpoints = list((in_tmp_cwd / ".raysweep" / "tune" / sweep_id).glob("*/checkpoint_*"))
    assert len(checkpoints) == 6
    assert all((c / "artifacts" / "confusion_matrix.png").exists() for c in checkpoints)
    assert not list((in_tmp_cwd / ".raysweep" / "tune").rglob("state.pt"))

    # A second sweep reuses the trained generator and the pools: every image it reads is
    # stored, so no generator actor even starts.
    assert main(["run", str(spec), "--num-cpus", "2", "--set", "sweep.synthetic_ratio=[0, 1]"]) == 0
    capsys.readouterr()
    runs = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`raysweep.role` = 'sweep'",
                              order_by=["start_time DESC"])
    second = client.get_run(runs.iloc[0]["run_id"]).data.metrics
    assert second["generator_reused"] == 1.0 and second["generator_fit_seconds"] == 0.0
    assert second["synthetic_images_generated"] == 0 and second["generator_model_loads"] == 0

    # The report reads the latest sweep back from MLflow.
    assert main(["report", "--experiment", "tiny", "--out", str(in_tmp_cwd / "r")]) == 0
    assert "test_balanced_accuracy" in capsys.readouterr().out
    assert (in_tmp_cwd / "r" / "axis_synthetic_ratio.png").stat().st_size > 1000


GENERATORS = """
name: generators
dataset: {name: digits, per_class: 8}
generator:
  name: ddpm
  options: {steps: 4, block_out_channels: [8, 16], image_size: 8, sample_steps: 2, batch_size: 16}
  options_by_name: {vae: {steps: 4, base_channels: 8}}
training: {epochs: 1, batch_size: 16, input_size: 16}
sweep:
  synthetic_ratio: 1
  augmentation: [ddpm, vae+cutout]
  backbone: test_resnet
  seed: 0
"""


@pytest.mark.slow
def test_one_sweep_compares_generators(in_tmp_cwd):
    """`augmentation: [ddpm, vae+cutout]` draws each trial's images from its own generator."""
    spec = in_tmp_cwd / "generators.yaml"
    spec.write_text(GENERATORS)
    assert main(["run", str(spec), "--num-cpus", "2"]) == 0
    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["generators"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert dict(zip(children["params.augmentation"], children["params.generator"])) == {
        "ddpm": "ddpm", "vae+cutout": "vae"}
    parent = runs[runs["tags.raysweep.role"] == "sweep"].iloc[0]
    assert parent["params.generators"] == "ddpm,vae"
    assert parent["metrics.synthetic_images_generated"] == 160  # 80 per generator, once each
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"])}
    assert {"synthetic_samples_ddpm_seed0.png", "synthetic_samples_vae_seed0.png"} <= artifacts


@pytest.mark.slow
def test_generator_actor_killed_on_every_attempt_fails_the_sweep_in_one_line(in_tmp_cwd, capsys):
    """No restart forever: the actor dies on each of its 1 + ACTOR_RESTARTS attempts, and
    `raysweep run` stops with one line and a non-zero exit instead of hanging."""
    from raysweep.synthesis.actors import ACTOR_RESTARTS

    spec = in_tmp_cwd / "tiny.yaml"
    spec.write_text(TINY)
    killed: set[int] = set()
    done = threading.Event()

    def kill_every_attempt():
        while not done.wait(0.1):
            for pid in generator_actor_pids() - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)

    killer = threading.Thread(target=kill_every_attempt, daemon=True)
    killer.start()
    try:
        code = main(["run", str(spec), "--num-cpus", "2"])
    finally:
        done.set()
        killer.join(10)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(killed) == ACTOR_RESTARTS + 1
    assert err[-1].startswith("raysweep: error: generator ddpm: an actor failed to start "
                              f"{ACTOR_RESTARTS + 1} times"), err[-3:]
    assert "Traceback" not in "\n".join(err)
