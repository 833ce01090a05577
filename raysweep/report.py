"""Compare a sweep's trials from MLflow: a table, and the metric against synthetic_ratio.

Each point is the mean over seeds with a 95% confidence interval (Student's t), one line per
backbone (and augmentation, where it varies).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from raysweep.errors import UserError  # noqa: E402
from raysweep.redaction import redact_uri  # noqa: E402
from raysweep.tracking import SWEEP_TAG  # noqa: E402

GROUP_BY = ("backbone", "augmentation", "mask_region", "mask_fraction", "synthetic_ratio")


def load_trials(tracking_uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """Child runs of one sweep (the latest one unless `sweep` names it), one row per trial."""
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise UserError(f"no MLflow experiment {experiment!r} at {redact_uri(tracking_uri)}; "
                        f"run a sweep first "
                        f"or pass --experiment with a name from `mlflow experiments search`")
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=10000)
    sweeps = runs[runs.get("tags.raysweep.role", pd.Series(dtype=str)) == "sweep"]
    if sweeps.empty:
        raise UserError(f"experiment {experiment!r} holds no raysweep sweep; run one first")
    if sweep is None:
        sweep = sweeps.sort_values("start_time").iloc[-1][f"tags.{SWEEP_TAG}"]
    trials = runs[(runs[f"tags.{SWEEP_TAG}"] == sweep) &
                  (runs.get("tags.raysweep.role", pd.Series(dtype=str)) != "sweep")]
    if trials.empty:
        raise UserError(f"sweep {sweep!r} has no trial runs yet")
    table = pd.DataFrame({"run_id": trials["run_id"], "status": trials["status"]})
    for column in trials.columns:
        if column.startswith("params."):
            table[column[len("params."):]] = trials[column]
        elif column.startswith("metrics."):
            table[column[len("metrics."):]] = trials[column]
    table["synthetic_ratio"] = table["synthetic_ratio"].astype(float)
    table.attrs["sweep"] = sweep
    return table.reset_index(drop=True)


def summarize(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, 95% CI half-width and count of `metric` per group of swept values (over seeds)."""
    if metric not in trials:
        raise UserError(f"metric {metric!r} not found; known: "
                        f"{', '.join(c for c in trials.columns if c.startswith(('val_', 'test_')))}")
    keys = [k for k in GROUP_BY if k in trials]
    rows = []
    for values, group in trials.groupby(keys, sort=True):
        scores = group[metric].dropna().to_numpy(float)
        n = len(scores)
        if n == 0:  # trials a scheduler stopped before their final evaluation
            continue
        half = float(stats.t.ppf(0.975, n - 1) * scores.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        rows.append({**dict(zip(keys, values)), "n": n, "mean": scores.mean() if n else float("nan"),
                     "ci95": half})
    return pd.DataFrame(rows)


def plot_against_ratio(summary: pd.DataFrame, metric: str, path: Path, title: str = "") -> Path:
    """The metric against synthetic_ratio, one line per backbone (and other varying axes)."""
    series_keys = [k for k in GROUP_BY if k != "synthetic_ratio" and k in summary
                   and summary[k].nunique() > 1] or ["backbone"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for values, group in summary.groupby(series_keys, sort=True):
        group = group.sort_values("synthetic_ratio")
        label = " / ".join(str(v) for v in (values if isinstance(values, tuple) else (values,)))
        ax.errorbar(group["synthetic_ratio"], group["mean"], yerr=group["ci95"].fillna(0),
                    marker="o", capsize=3, label=label)
    ax.set_xlabel("synthetic_ratio (synthetic images per real training image)")
    ax.set_ylabel(f"{metric} (mean ± 95% CI over seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_table(summary: pd.DataFrame) -> str:
    shown = summary.copy()
    shown["mean"] = shown["mean"].map(lambda v: f"{v:.4f}")
    shown["ci95"] = shown["ci95"].map(lambda v: "n/a" if np.isnan(v) else f"±{v:.4f}")
    return shown.to_string(index=False)
