"""Every synthetic arm in the currency a user decides in: real images per class.

The yardstick's real-only trials give, per backbone, a curve of the metric against real
training images per class (`real_per_class`). A synthetic arm (one combination of the swept
values, trained at the spec's own per_class) is worth the real-set size at which that curve
reaches the arm's metric:

1. the curve is the mean over seeds at each size, made monotone by isotonic regression (more
   real data never scores less: a dip is noise);
2. the arm's mean over seeds is placed on it by linear interpolation in log(size), at the
   smallest size that reaches it; never by extrapolation: above the largest size it is
   "> largest", below the smallest "< smallest";
3. the 95% CI is the percentile interval of the same estimate over seeds resampled with
   replacement (paired: a resample takes the curve's and the arm's trials of the same seeds),
   2,000 resamples from a fixed seed; with fewer than `MIN_SEEDS` seeds there is none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from raysweep.report.stats import MIN_SEEDS

REAL_PER_CLASS = "real_per_class"  # raysweep.plan.yardstick.REAL_PER_CLASS
RESAMPLES = 2000


@dataclass(frozen=True)
class Equivalent:
    """Where one value sits on a real-only curve: `value` real images per class, or beyond
    its ends (`censored` -1: below the smallest size, +1: above the largest, 0: on it)."""

    value: float
    censored: int

    def describe(self) -> str:
        if self.censored > 0:
            return f"> {self.value:g}"
        if self.censored < 0:
            return f"< {self.value:g}"
        return f"{self.value:.0f}"


def place_on_curve(sizes: np.ndarray, scores: np.ndarray, score: float) -> Equivalent:
    """The real-set size at which the monotone curve through (sizes, scores) reaches `score`.

    Args:
        sizes: real images per class, increasing.
        scores: the metric at each size (mean over seeds).
        score: the synthetic arm's metric.
    """
    sizes = np.asarray(sizes, float)
    fitted = IsotonicRegression(increasing=True).fit_transform(np.log(sizes),
                                                               np.asarray(scores, float))
    if score > fitted[-1]:
        return Equivalent(float(sizes[-1]), +1)
    if score < fitted[0]:
        return Equivalent(float(sizes[0]), -1)
    top = int(np.argmax(fitted >= score))  # the first size whose fitted score reaches it
    if top == 0 or fitted[top] == fitted[top - 1]:
        return Equivalent(float(sizes[top]), 0)
    share = (score - fitted[top - 1]) / (fitted[top] - fitted[top - 1])
    log_size = math.log(sizes[top - 1]) + share * (math.log(sizes[top]) - math.log(sizes[top - 1]))
    return Equivalent(float(math.exp(log_size)), 0)


def real_equivalents(trials: pd.DataFrame, metric: str, arm_axes: list[str],
                     seed: int = 0) -> pd.DataFrame:
    """One row per synthetic arm (and backbone): its metric, its real-data equivalent and CI.

    Columns: arm (label), backbone, n (seeds), mean, equivalent, censored, ci_low, ci_high
    (the CI ends, censored like the estimate: `ci_low_censored`, `ci_high_censored`), and
    `largest` (the largest real arm). Empty without a yardstick (a single real size).
    """
    columns = ["arm", "backbone", "n", "mean", "equivalent", "censored", "ci_low",
               "ci_low_censored", "ci_high", "ci_high_censored", "largest"]
    scored = trials.dropna(subset=[metric])
    if REAL_PER_CLASS not in scored or scored[REAL_PER_CLASS].nunique() < 2:
        return pd.DataFrame(columns=columns)
    base = scored[REAL_PER_CLASS].min()
    real = scored[scored["synthetic_ratio"] == 0]
    synthetic = scored[(scored["synthetic_ratio"] > 0) & (scored[REAL_PER_CLASS] == base)]
    rng = np.random.default_rng(seed)
    rows = []
    for backbone, curve_trials in real.groupby("backbone", sort=True):
        curve = curve_trials.pivot_table(index="seed", columns=REAL_PER_CLASS, values=metric,
                                         aggfunc="mean")
        sizes = curve.columns.to_numpy(float)
        arms = synthetic[synthetic["backbone"] == backbone]
        # An arm is named by what varies between the synthetic trials (by every swept axis
        # when there is one arm).
        named = [a for a in arm_axes if a != "backbone" and a in synthetic]
        group_keys = [a for a in named if synthetic[a].nunique() > 1] or named or None
        groups = arms.groupby(group_keys, sort=True) if group_keys else [((), arms)]
        for values, arm_trials in groups:
            values = values if isinstance(values, tuple) else (values,)
            per_seed = arm_trials.groupby("seed")[metric].mean()
            seeds = per_seed.index.intersection(curve.dropna().index)
            if len(seeds) == 0:
                continue
            paired = curve.loc[seeds]
            estimate = place_on_curve(sizes, paired.mean().to_numpy(), per_seed[seeds].mean())
            low = high = Equivalent(float("nan"), 0)
            if len(seeds) >= MIN_SEEDS:
                draws = [_resample(rng, paired, per_seed[seeds], sizes)
                         for _ in range(RESAMPLES)]
                low, high = _percentile(draws, 2.5), _percentile(draws, 97.5)
            named = list(zip(group_keys or [], values))
            if "backbone" in arm_axes:
                named.append(("backbone", backbone))
            label = " ".join(f"{k}={_shown(v)}" for k, v in named)
            rows.append({"arm": label or "synthetic", "backbone": backbone, "n": len(seeds),
                         "mean": float(per_seed[seeds].mean()),
                         "equivalent": estimate.value, "censored": estimate.censored,
                         "ci_low": low.value, "ci_low_censored": low.censored,
                         "ci_high": high.value, "ci_high_censored": high.censored,
                         "largest": float(sizes[-1])})
    return pd.DataFrame(rows, columns=columns)


def real_curve(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The real-only curve per backbone: mean and 95% CI over seeds at each size."""
    from raysweep.report.stats import mean_ci

    scored = trials.dropna(subset=[metric])
    real = scored[scored["synthetic_ratio"] == 0]
    rows = []
    for (backbone, size), cell in real.groupby(["backbone", REAL_PER_CLASS], sort=True):
        mean, half = mean_ci(cell.groupby("seed")[metric].mean().to_numpy(float))
        rows.append({"backbone": backbone, "size": float(size), "mean": mean, "ci95": half})
    return pd.DataFrame(rows, columns=["backbone", "size", "mean", "ci95"])


def metric_name(arm: str) -> str:
    """`real_equivalent_<arm>` in the characters MLflow allows in a metric name:
    `synthetic_ratio=2 augmentation=vae+cutout` -> `real_equivalent_synthetic_ratio-2_augmentation-vae_cutout`."""
    name = arm.replace("=", "-").replace(" ", "_")
    return "real_equivalent_" + re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


def equivalent_metrics(equivalents: pd.DataFrame) -> dict[str, float]:
    """What the parent run records per arm: `real_equivalent_<arm>`, its CI ends (`_ci_low`,
    `_ci_high`) and where each lies beyond the real arms (`_censored`: -1 below, +1 above)."""
    metrics = {}
    for row in equivalents.itertuples():
        name = metric_name(row.arm)
        metrics[name] = row.equivalent
        metrics[f"{name}_censored"] = float(row.censored)
        if not math.isnan(row.ci_low):
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = row.ci_low, row.ci_high
    return metrics


def _resample(rng: np.random.Generator, curve: pd.DataFrame, arm: pd.Series,
              sizes: np.ndarray) -> Equivalent:
    index = rng.integers(0, len(arm), len(arm))
    return place_on_curve(sizes, curve.iloc[index].mean().to_numpy(), arm.iloc[index].mean())


def _percentile(draws: list[Equivalent], q: float) -> Equivalent:
    """A percentile of resampled equivalents; a censored draw counts at its bound, and the
    percentile is censored when it lands on a bound only censored draws reach."""
    values = np.array([d.value for d in draws])
    value = float(np.percentile(values, q))
    censored = [d.censored for d in draws if d.value == value and d.censored]
    return Equivalent(value, censored[0] if censored else 0)


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
