"""The report's figures: metric per axis, paired differences, cost, parameter importance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from raysweep.spec import NUMERIC_AXES  # noqa: E402
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


def plot_yardstick(curve: pd.DataFrame, equivalents: pd.DataFrame, metric: str, path: Path,
                   title: str) -> Path:
    """The metric against real images per class (real-only arms, mean ± 95% CI), with each
    synthetic arm drawn at its metric and placed at its real-data equivalent."""
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for backbone, group in curve.groupby("backbone", sort=True):
        line = ax.errorbar(group["size"], group["mean"], yerr=np.nan_to_num(group["ci95"]),
                           marker="s", capsize=3, label=f"real only ({backbone})")
        arms = equivalents[equivalents["backbone"] == backbone]
        for row in arms.itertuples():
            ax.axhline(row.mean, color=line[0].get_color(), alpha=0.25, lw=0.8)
            marker = {0: "o", 1: ">", -1: "<"}[row.censored]
            ax.plot(row.equivalent, row.mean, marker=marker, ms=7, ls="none",
                    label=f"{row.arm} ≈ {_equivalent_text(row)}")
    ax.set_xscale("log", base=2)
    sizes = sorted(curve["size"].unique())
    ax.set_xticks(sizes, [f"{size:g}" for size in sizes])
    ax.minorticks_off()
    ax.set_xlabel("real training images per class")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.set_title(title + "\nsynthetic arms placed on the real-only curve", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    return _save(fig, path)


def _equivalent_text(row) -> str:
    from raysweep.report.yardstick import Equivalent

    return Equivalent(row.equivalent, row.censored).describe()
