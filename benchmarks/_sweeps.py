"""Shared helpers for the benchmarks that run whole sweeps: a fresh working directory per run,
and the sweep's numbers read back from MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_DDPM = ("generator.options={steps: 30, block_out_channels: [16, 32], image_size: 16, "
             "sample_steps: 4, batch_size: 32}")


def run_sweep(spec: str | Path, workdir: Path, overrides: list[str] = ()) -> float:
    """Run `raysweep run SPEC` in `workdir` as a user would; return its wall seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "raysweep.cli", "run", str(Path(spec).resolve())]
    for item in overrides:
        command += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    with open(workdir / "run.log", "a") as log:
        subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    return time.perf_counter() - start


def latest_sweep(workdir: Path, experiment: str):
    """(parent run, child runs) of the newest sweep recorded in workdir/mlflow.db."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time DESC"])
    parent = runs[runs["tags.raysweep.role"] == "sweep"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    return client.get_run(parent["run_id"]), [client.get_run(r) for r in children["run_id"]]
