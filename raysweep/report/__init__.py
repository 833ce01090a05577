"""The report of one sweep, by its id: a view for every swept axis, cost, and importance.

`build_report` reads the sweep from MLflow and computes, for each axis the sweep varied, the
metric against that axis per combination of the other axes, and the paired difference to the
baseline (ratio 0, augmentation none) with its CI. Sampled searches add the best trials and
Optuna's parameter importance; a sweep with a yardstick states every synthetic arm in real
images per class (`yardstick.py`). `write_report` renders it as PNGs, one self-contained HTML
page, and CSV/JSON of the table (`render.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from raysweep.report.importance import param_importances
from raysweep.report.plots import (plot_axis, plot_cost, plot_importance, plot_paired,
                                   plot_trials, plot_yardstick)
from raysweep.report.runs import Sweep, latest_sweep_id, list_sweeps, load_sweep
from raysweep.report.stats import (MIN_SEEDS, best_trials, by_axis, generation_cost,
                                   paired_differences, share_baseline)
from raysweep.report.yardstick import real_curve, real_equivalents
from raysweep.spec import SYNTHESIS_AXES

__all__ = ["Report", "build_report", "latest_sweep_id", "list_sweeps", "load_sweep"]


@dataclass
class Report:
    sweep: Sweep
    metric: str
    axes: list[str]
    summary: pd.DataFrame
    paired: pd.DataFrame
    best: pd.DataFrame
    importances: dict[str, float]
    cost: pd.Series
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    # Each synthetic arm in real images per class (empty without a yardstick), and the curve.
    equivalents: pd.DataFrame = field(default_factory=pd.DataFrame)
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def sampled(self) -> bool:
        return self.sweep.search_alg != "grid"


def build_report(sweep: Sweep, metric: str, figures_dir: Path) -> Report:
    """Every table and figure of the report; PNGs go to `figures_dir`."""
    from raysweep.errors import UserError

    if metric not in sweep.trials:
        known = ", ".join(c for c in sweep.trials.columns if c.startswith(("val_", "test_")))
        raise UserError(f"metric {metric!r} not found in sweep {sweep.sweep_id}; known: {known}")
    figures_dir.mkdir(parents=True, exist_ok=True)
    axes = sweep.swept_axes()
    # Real-only trials are the baseline of every context of the synthesis axes.
    trials = share_baseline(sweep.main_trials, axes) if sweep.search_alg == "grid" else \
        sweep.main_trials
    notes = []
    unscored = int(trials[metric].isna().sum())
    if unscored:
        notes.append(f"{unscored} of {len(trials)} trials have no {metric} "
                     f"(stopped early by the scheduler, or failed) and are left out")
    seeds = sweep.seeds()
    if seeds < MIN_SEEDS:
        notes.append(f"only {seeds} seed(s): confidence intervals need at least {MIN_SEEDS}, "
                     f"so none are shown; add seeds to the spec's sweep.seed")
    title = f"{sweep.experiment}: {sweep.sweep_id}"
    summaries, pairs, figures = [], [], []
    for axis in axes:
        others = [a for a in axes if a != axis]
        # At ratio 0 a synthesis axis changes nothing: its rows there would repeat the baseline.
        rows = trials[trials["synthetic_ratio"] != 0] \
            if axis in SYNTHESIS_AXES and "synthetic_ratio" in others else trials
        summary = by_axis(rows, axis, others, metric)
        paired = paired_differences(rows, axis, others, metric)
        summaries.append(summary)
        pairs.append(paired)
        if sweep.search_alg == "grid":
            figures.append(plot_axis(summary, axis, metric, figures_dir / f"axis_{axis}.png", title))
        else:
            figures.append(plot_trials(trials, axis, metric, figures_dir / f"axis_{axis}.png", title))
        drawn = plot_paired(paired, axis, metric, figures_dir / f"paired_{axis}.png", title)
        if drawn:
            figures.append(drawn)
    if not axes:
        notes.append("the sweep varied no axis but the seed: nothing to compare")
    cost = generation_cost(sweep.trials, sweep.metrics)
    figures.append(plot_cost(sweep.trials, cost, axes[0] if axes else None, metric,
                             figures_dir / "cost.png", title))
    best = best_trials(sweep.main_trials, metric, axes)
    equivalents = real_equivalents(sweep.trials, metric, axes)
    curve = real_curve(sweep.trials, metric) if not equivalents.empty else pd.DataFrame()
    if not equivalents.empty:
        figures.append(plot_yardstick(curve, equivalents, metric,
                                      figures_dir / "yardstick.png", title))
    importances = {}
    if sweep.search_alg != "grid":
        importances = param_importances(sweep.main_trials, axes, metric)
        if importances:
            figures.append(plot_importance(importances, figures_dir / "importance.png", title))
    return Report(sweep, metric, axes,
                  pd.concat(summaries, ignore_index=True) if summaries else by_axis(
                      trials.assign(_all="all"), "_all", [], metric),
                  pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(),
                  best, importances, cost, notes, figures, equivalents, curve)
