"""The report's figures: metric per axis, paired differences, cost, parameter importance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from raysweep.report.runs import NUMERIC_AXES  # noqa: E402
from raysweep.report.stats import MIN_SEEDS  # noqa: E402


def _positions(axis: str, values: pd.Series) -> tuple[np.ndarray, list | None]:
    """x positions: the value itself on numeric axes, the category's index otherwise."""
    if axis in NUMERIC_AXES:
        return values.to_numpy(float), None
    categories = sorted(values.astype(str).unique())
    return np.array([categories.index(str(v)) for v in values], float), categories


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_axis(summary: pd.DataFrame, axis: str, metric: str, path: Path, title: str) -> Path:
    """Mean over seeds against one axis, one line per combination of the other axes; error
    bars only where a CI exists (at least MIN_SEEDS seeds)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _, categories = _positions(axis, summary["value"])
    for context, group in summary.groupby("context", sort=True):
        x = group["value"].to_numpy(float) if categories is None else \
            np.array([categories.index(str(v)) for v in group["value"]], float)
        order = np.argsort(x)
        ax.errorbar(x[order], group["mean"].to_numpy()[order],
                    yerr=np.nan_to_num(group["ci95"].to_numpy()[order]), marker="o", capsize=3,
                    label=context)
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
    without_ci = summary["ci95"].isna().all()
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric} (mean over seeds" + (")" if without_ci else " ± 95% CI)"))
    ax.set_title(title + (f"\nfewer than {MIN_SEEDS} seeds: no confidence intervals"
                          if without_ci else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_trials(trials: pd.DataFrame, axis: str, metric: str, path: Path, title: str) -> Path:
    """Every trial's metric against one axis (sampled searches: one point per trial)."""
    scored = trials.dropna(subset=[metric])
    x, categories = _positions(axis, scored[axis])
    if categories is not None:
        x = x + np.random.default_rng(0).uniform(-0.12, 0.12, len(x))  # separate equal values
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(x, scored[metric], alpha=0.8)
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=8)
    ax.set_xlabel(axis)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_paired(paired: pd.DataFrame, axis: str, metric: str, path: Path, title: str) -> Path | None:
    """Paired difference to the baseline with its 95% CI; only comparisons with a CI are drawn
    (None when there is none)."""
    shown = paired[paired["pairs"] >= MIN_SEEDS]
    if shown.empty:
        return None
    labels = [f"{axis}={v}\n{c}" for v, c in zip(shown["value"], shown["context"])]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(shown) + 1.6))
    y = np.arange(len(shown))
    ax.errorbar(shown["diff"], y, xerr=shown["diff_ci95"], fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"{metric} − baseline ({axis}={shown['baseline'].iloc[0]}), "
                  f"paired by seed, 95% CI", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_cost(trials: pd.DataFrame, cost: pd.Series, colour_by: str | None, metric: str,
              path: Path, title: str) -> Path:
    """The metric against the seconds charged to each trial (training + generation share)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    scored = trials[metric].notna()
    groups = trials[scored].groupby(colour_by, sort=True) if colour_by else [("all", trials[scored])]
    for value, group in groups:
        ax.scatter(cost[group.index], group[metric], label=f"{colour_by}={value}" if colour_by
                   else "trials", alpha=0.8)
    ax.set_xlabel("seconds charged to the trial (training + share of generation)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_importance(importances: dict[str, float], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(importances) + 1.4))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (Optuna fANOVA)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
