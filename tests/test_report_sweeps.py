"""Real tiny sweeps (Ray, MLflow sqlite, DDPM) through the CLI: filtering and pool quality on
the parent run, and two sweeps of one spec at once, each reporting its own trials."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.store.store import SyntheticStore

FILTERED = """
name: filtered
dataset: {name: digits, per_class: 8}
generator:
  name: ddpm
  options: {steps: 4, block_out_channels: [8, 16], image_size: 8, sample_steps: 2, batch_size: 16}
synthesis: {quality_epochs: 1}
training: {epochs: 1, batch_size: 16, input_size: 16}
sweep:
  synthetic_ratio: 1
  filter_threshold: [0, 0.99]
  backbone: test_resnet
  seed: 0
"""


@pytest.mark.slow
def test_filtering_rejects_doubtful_images_and_the_pool_is_judged(in_tmp_cwd, capsys):
    spec = in_tmp_cwd / "filtered.yaml"
    spec.write_text(FILTERED)
    assert main(["run", str(spec), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out

    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["filtered"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()].set_index("params.filter_threshold")
    # An 8-step DDPM draws noise, which a classifier trained on real digits doubts.
    rejected = children.loc["0.99", "metrics.synthetic_images_rejected"]
    assert children.loc["0", "metrics.synthetic_images_rejected"] == 0
    assert rejected > 0
    assert children.loc["0.99", "metrics.synthetic_images_used"] == 80 - rejected
    assert set(children["tags.mlflow.runName"]) == {"filter_threshold=0", "filter_threshold=0.99"}
    # The pool keeps every image: filtering chose rows of the trial, not of the store.
    store = SyntheticStore(".raysweep/cache")
    assert [store.count(key) for key in store.pool_keys()] == [80]

    parent = runs[runs["tags.raysweep.role"] == "sweep"].iloc[0]
    assert 0 <= parent["metrics.quality_ddpm_seed0_precision"] <= 1
    assert parent["metrics.quality_ddpm_seed0_frechet_distance"] > 0
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent["run_id"], "quality")}
    assert artifacts == {"quality/ddpm_seed0.csv"}
    assert "synthetic quality per pool" in out and "ddpm_seed0" in out


ONE_SPEC = """
name: twice
dataset: {name: digits, per_class: 8}
training: {epochs: 1, batch_size: 16, input_size: 16}
sweep:
  backbone: test_resnet
"""


@pytest.mark.slow
def test_two_sweeps_of_one_spec_at_once_each_report_their_own(in_tmp_cwd):
    spec = in_tmp_cwd / "twice.yaml"
    spec.write_text(ONE_SPEC)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    seeds = {"[0]": 1, "[0, 1]": 2}  # trials each sweep runs
    processes = {seed: subprocess.Popen(
        [sys.executable, "-m", "raysweep.cli", "run", str(spec), "--num-cpus", "1",
         "--set", f"sweep.seed={seed}"], cwd=in_tmp_cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for seed in seeds}
    outputs = {seed: process.communicate(timeout=600)[0] for seed, process in processes.items()}
    ids = {}
    for seed, out in outputs.items():
        assert processes[seed].returncode == 0, out[-2000:]
        match = re.search(r"by swept values \(sweep (\S+), (\d+) trials", out)
        assert match, out[-2000:]
        ids[seed] = match.group(1)
        assert int(match.group(2)) == seeds[seed]
        assert f"sweep {ids[seed]} done" in out
    assert ids["[0]"] != ids["[0, 1]"]
