"""Record finished sweeps in MLflow the way `raysweep run` does (parent run, one child run per
trial, the same tags and names), without training, so reports can be tested on known numbers.
"""

from __future__ import annotations

import uuid

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from raysweep.tracking import SWEEP_TAG, TRIAL_TAG, log_params, run_name, start_parent_run


def record_sweep(tracking_uri: str, experiment: str, trials: list[dict], search_alg: str = "grid",
                 parent_metrics: dict | None = None, sweep_id: str | None = None) -> str:
    """Each trial is {param: value} plus {"metrics": {name: value}}; returns the sweep id."""
    sweep_id = sweep_id or f"{experiment}-{uuid.uuid4().hex[:8]}"
    experiment_id, parent = start_parent_run(tracking_uri, experiment, sweep_id, sweep_id)
    client = MlflowClient(tracking_uri)
    log_params(client, parent, {"search_alg": search_alg, "trials": len(trials)})
    params_only = [{k: v for k, v in t.items() if k != "metrics"} for t in trials]
    varying = [k for k in params_only[0] if len({str(p[k]) for p in params_only}) > 1]
    for index, (params, trial) in enumerate(zip(params_only, trials)):
        run = client.create_run(experiment_id, run_name=run_name(params, varying),
                                tags={"mlflow.parentRunId": parent, TRIAL_TAG: f"t{index:05d}",
                                      SWEEP_TAG: sweep_id})
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, float(v), 0, 1) for k, v in trial["metrics"].items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
    client.log_batch(parent, metrics=[Metric(k, float(v), 0, 0)
                                      for k, v in (parent_metrics or {}).items()])
    client.set_terminated(parent, "FINISHED")
    return sweep_id
