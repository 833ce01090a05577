"""The numbers of a report: the metric per axis value, and paired differences to the baseline.

Seeds are paired: a trial at `synthetic_ratio=1, seed=2` is compared with the baseline trial
(`synthetic_ratio=0`, same seed, same other axes), so seed-to-seed noise shared by both arms
cancels. A 95% confidence interval (Student's t) needs at least `MIN_SEEDS` pairs; below that
the report says so rather than showing an interval from one degree of freedom.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from raysweep.spec import SYNTHESIS_AXES

MIN_SEEDS = 3
# The value of an axis that means "no intervention": what every other value is compared with.
BASELINES = {"synthetic_ratio": 0.0, "mask_fraction": 0.0, "filter_threshold": 0.0,
             "augmentation": "none"}


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95% CI half-width; the half-width is NaN below MIN_SEEDS values."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    if n < MIN_SEEDS:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def _context_label(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all"


def by_axis(trials: pd.DataFrame, axis: str, others: list[str], metric: str) -> pd.DataFrame:
    """The metric per value of `axis`, per combination of the other swept axes (over seeds)."""
    rows = []
    scored = trials.dropna(subset=[metric])
    groups = scored.groupby(others, sort=True) if others else [((), scored)]
    for context, group in groups:
        for value, cell in group.groupby(axis, sort=True):
            mean, half = mean_ci(cell[metric].to_numpy(float))
            rows.append({"axis": axis, "context": _context_label(others, context), "value": value,
                         "n": len(cell), "mean": mean, "ci95": half})
    return pd.DataFrame(rows, columns=["axis", "context", "value", "n", "mean", "ci95"])


def paired_differences(trials: pd.DataFrame, axis: str, others: list[str],
                       metric: str) -> pd.DataFrame:
    """metric(value, seed) − metric(baseline, seed), paired by seed within each context.

    Empty when the axis has no baseline value among its trials (e.g. backbone).
    """
    columns = ["axis", "context", "value", "baseline", "pairs", "diff", "diff_ci95"]
    baseline = BASELINES.get(axis)
    scored = trials.dropna(subset=[metric])
    if baseline is None or "seed" not in scored or not (scored[axis] == baseline).any():
        return pd.DataFrame(columns=columns)
    rows = []
    groups = scored.groupby(others, sort=True) if others else [((), scored)]
    for context, group in groups:
        base = group[group[axis] == baseline].groupby("seed")[metric].mean()
        for value, cell in group[group[axis] != baseline].groupby(axis, sort=True):
            arm = cell.groupby("seed")[metric].mean()
            seeds = arm.index.intersection(base.index)
            diff, half = mean_ci((arm[seeds] - base[seeds]).to_numpy(float))
            rows.append({"axis": axis, "context": _context_label(others, context), "value": value,
                         "baseline": baseline, "pairs": len(seeds), "diff": diff,
                         "diff_ci95": half})
    return pd.DataFrame(rows, columns=columns)


def best_trials(trials: pd.DataFrame, metric: str, axes: list[str], top: int = 10) -> pd.DataFrame:
    """The `top` trials by the metric, with the values they were given."""
    shown = [c for c in ["run_name", *axes, "seed", metric] if c in trials]
    return trials.dropna(subset=[metric]).sort_values(metric, ascending=False)[shown].head(top)


def generation_cost(trials: pd.DataFrame, parent_metrics: dict) -> pd.Series:
    """Seconds charged to each trial: its training time plus its share of generation.

    A pool's generation time (generator fit included) is shared by the images it produced, and
    a trial is charged for the synthetic images it used. Pools reused from the store cost this
    sweep nothing.
    """
    generated = parent_metrics.get("synthetic_images_generated", 0.0)
    seconds = (parent_metrics.get("synthetic_generation_seconds", 0.0)
               + parent_metrics.get("generator_fit_seconds", 0.0))
    per_image = seconds / generated if generated else 0.0
    used = trials.get("synthetic_images_used", pd.Series(0.0, index=trials.index)).fillna(0.0)
    train = trials.get("train_seconds", pd.Series(0.0, index=trials.index)).fillna(0.0)
    return train + per_image * used


def share_baseline(trials: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Real-only trials (ratio 0) read no synthetic image, so the swept synthesis axes (masks,
    strength, translation, filter threshold) and the synthesis kind in `augmentation` do not
    apply to them: they are the baseline of every such context, and a copy of each goes into
    every context whose online augmentation is theirs."""
    from raysweep.synthesis.kinds import split_augmentation

    swept = [a for a in axes if a in SYNTHESIS_AXES or a == "augmentation"]
    if not swept or "synthetic_ratio" not in trials:
        return trials
    real = trials[trials["synthetic_ratio"] == 0]
    other = trials[trials["synthetic_ratio"] != 0]
    if real.empty or other.empty:
        return trials
    contexts = other[swept].drop_duplicates()
    if "augmentation" not in swept:
        shared = real.drop(columns=swept).merge(contexts, how="cross")
        return pd.concat([other, shared], ignore_index=True)
    online = lambda values: values.map(lambda v: split_augmentation(v)[1])  # noqa: E731
    shared = real.drop(columns=swept).assign(_online=online(real["augmentation"])).merge(
        contexts.assign(_online=online(contexts["augmentation"])), on="_online")
    kept = real[~online(real["augmentation"]).isin(shared["_online"])]  # no synthetic peer
    return pd.concat([other, shared.drop(columns="_online"), kept], ignore_index=True)
