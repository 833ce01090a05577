"""Read sweeps back from MLflow: one sweep's trials by its id, and the list of all sweeps.

A sweep is its parent run (tag `raysweep.role = sweep`); its trials are the runs that carry the
same `raysweep.sweep` tag. Looking a sweep up by id, never "the latest", keeps two sweeps of one
spec that run at once from reporting each other's trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from raysweep.errors import UserError
from raysweep.redaction import redact_uri
from raysweep.spec import AXES as SPEC_AXES
from raysweep.spec import NUMERIC_AXES
from raysweep.tracking import SWEEP_TAG, filter_value

ROLE_TAG = "raysweep.role"
REAL_PER_CLASS = "real_per_class"  # raysweep.plan.yardstick.REAL_PER_CLASS
# The spec's axes in the order the report discusses them; seed is the repeat, not an axis.
AXES = tuple(axis for axis in SPEC_AXES if axis != "seed")


@dataclass
class Sweep:
    """One sweep as MLflow holds it: the parent run's fields and one row per trial."""

    sweep_id: str
    experiment: str
    parent_run_id: str
    status: str
    params: dict
    metrics: dict
    trials: pd.DataFrame
    quality: pd.DataFrame

    @property
    def search_alg(self) -> str:
        return self.params.get("search_alg", "grid")

    @property
    def main_trials(self) -> pd.DataFrame:
        """The sweep's own trials: all but the yardstick's larger real-only arms."""
        trials = self.trials
        if REAL_PER_CLASS not in trials or trials[REAL_PER_CLASS].nunique() < 2:
            return trials
        return trials[trials[REAL_PER_CLASS] == trials[REAL_PER_CLASS].min()]

    def swept_axes(self) -> list[str]:
        """Axes whose value differs between the sweep's own trials (seed excluded)."""
        trials = self.main_trials
        return [a for a in AXES if a in trials and trials[a].nunique() > 1]

    def seeds(self) -> int:
        return int(self.trials["seed"].nunique()) if "seed" in self.trials else 1


def _sweep_runs(tracking_uri: str, filter_string: str, experiment: str | None) -> pd.DataFrame:
    mlflow.set_tracking_uri(tracking_uri)
    if experiment is not None:
        if mlflow.get_experiment_by_name(experiment) is None:
            raise UserError(f"no MLflow experiment {experiment!r} at {redact_uri(tracking_uri)}; run a sweep "
                            f"first or list sweeps with `raysweep ls`")
        return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string,
                                  max_results=50000)
    return mlflow.search_runs(search_all_experiments=True, filter_string=filter_string,
                              max_results=50000)


def list_sweeps(tracking_uri: str, experiment: str | None = None) -> pd.DataFrame:
    """Every sweep in the store, newest first: id, spec, trials, state, best."""
    runs = _sweep_runs(tracking_uri, "", experiment)
    columns = ["sweep", "spec", "trials", "state", "best", "started"]
    if runs.empty or f"tags.{ROLE_TAG}" not in runs:
        return pd.DataFrame(columns=columns)
    is_parent = runs[f"tags.{ROLE_TAG}"] == "sweep"
    parents, children = runs[is_parent], runs[~is_parent & runs[f"tags.{SWEEP_TAG}"].notna()]
    counts = children.groupby(f"tags.{SWEEP_TAG}").size()
    experiments = {e.experiment_id: e.name for e in MlflowClient(tracking_uri).search_experiments()}
    rows = []
    for _, parent in parents.sort_values("start_time", ascending=False).iterrows():
        sweep_id = parent[f"tags.{SWEEP_TAG}"]
        best = [(k, v) for k, v in parent.items() if k.startswith("metrics.best_") and pd.notna(v)]
        rows.append({"sweep": sweep_id, "spec": experiments.get(parent["experiment_id"], "?"),
                     "trials": int(counts.get(sweep_id, 0)), "state": parent["status"],
                     "best": f"{best[0][0][len('metrics.best_'):]}={best[0][1]:.4f}" if best else "-",
                     "started": parent["start_time"]})
    return pd.DataFrame(rows, columns=columns)


def load_sweep(tracking_uri: str, sweep_id: str, experiment: str | None = None) -> Sweep:
    """The sweep with this id and its trial runs, one row per trial (params and final metrics)."""
    runs = _sweep_runs(tracking_uri, f"tags.`{SWEEP_TAG}` = '{filter_value('sweep', sweep_id)}'",
                       experiment)
    if runs.empty:
        raise UserError(f"no sweep {sweep_id!r} at {redact_uri(tracking_uri)}; list the sweeps with "
                        f"`raysweep ls`")
    role = runs.get(f"tags.{ROLE_TAG}", pd.Series(index=runs.index, dtype=object))
    parents, trials = runs[role == "sweep"], runs[role != "sweep"]
    if parents.empty:
        raise UserError(f"sweep {sweep_id!r} has no parent run; it was not started by raysweep")
    if trials.empty:
        raise UserError(f"sweep {sweep_id!r} has no trial runs yet")
    parent = parents.iloc[0]
    table = pd.DataFrame({"run_id": trials["run_id"], "status": trials["status"],
                          "run_name": trials.get("tags.mlflow.runName")})
    for column in trials.columns:
        for prefix in ("params.", "metrics."):
            if column.startswith(prefix):
                table[column[len(prefix):]] = trials[column]
    for axis in (*NUMERIC_AXES, REAL_PER_CLASS):
        if axis in table:
            table[axis] = pd.to_numeric(table[axis])
    experiment_name = MlflowClient(tracking_uri).get_experiment(parent["experiment_id"]).name
    return Sweep(
        sweep_id=sweep_id, experiment=experiment_name, parent_run_id=parent["run_id"],
        status=parent["status"],
        params={c[len("params."):]: v for c, v in parent.items()
                if c.startswith("params.") and pd.notna(v)},
        metrics={c[len("metrics."):]: float(v) for c, v in parent.items()
                 if c.startswith("metrics.") and pd.notna(v)},
        trials=table.reset_index(drop=True),
        quality=load_quality(tracking_uri, parent["run_id"]))


def load_quality(tracking_uri: str, parent_run_id: str) -> pd.DataFrame:
    """The per-class quality tables the sweep logged for its pools (empty when none)."""
    import tempfile

    client = MlflowClient(tracking_uri)
    tables = []
    for artifact in client.list_artifacts(parent_run_id, "quality"):
        with tempfile.TemporaryDirectory() as directory:
            path = client.download_artifacts(parent_run_id, artifact.path, directory)
            table = pd.read_csv(path, dtype={"class": str})
        tables.append(table.assign(pool=artifact.path.split("/")[-1].removesuffix(".csv")))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def latest_sweep_id(tracking_uri: str, experiment: str) -> str:
    """The most recently started sweep of an experiment (for `report --experiment` alone)."""
    sweeps = list_sweeps(tracking_uri, experiment)
    if sweeps.empty:
        raise UserError(f"experiment {experiment!r} holds no raysweep sweep; run one first")
    return str(sweeps.iloc[0]["sweep"])
