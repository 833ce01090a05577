"""The real-data yardstick: its trials in the plan, and each synthetic arm placed on the
real-only curve, on known numbers (interpolation, beyond the ends, the CI, the report)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from raysweep.cli import main
from raysweep.plan import build_plan
from raysweep.report import build_report, load_sweep
from raysweep.report.yardstick import (Equivalent, metric_name, place_on_curve,
                                       real_equivalents)
from raysweep.spec import load_spec
from recorded_sweeps import record_sweep
from test_spec import expect_error

METRIC = "test_balanced_accuracy"
SIZES = (50, 100, 200, 400)


def test_a_score_between_two_sizes_is_interpolated_in_log_size():
    scores = [0.80, 0.84, 0.88, 0.92]  # +0.04 per doubling
    assert place_on_curve(np.array(SIZES), np.array(scores), 0.86) == \
        Equivalent(pytest.approx(math.sqrt(100 * 200)), 0)
    assert place_on_curve(np.array(SIZES), np.array(scores), 0.84).value == pytest.approx(100)


def test_beyond_the_largest_arm_is_never_extrapolated():
    scores = np.array([0.80, 0.84, 0.88, 0.92])
    above = place_on_curve(np.array(SIZES), scores, 0.95)
    below = place_on_curve(np.array(SIZES), scores, 0.70)
    assert (above, below) == (Equivalent(400, +1), Equivalent(50, -1))
    assert (above.describe(), below.describe()) == ("> 400", "< 50")


def test_a_dip_in_the_real_curve_is_read_as_noise():
    """More real data never scores less: the curve is made monotone first (isotonic), so a
    score is placed at the first size reaching it, not on the dip."""
    scores = np.array([0.80, 0.86, 0.84, 0.92])  # 200 scored below 100 by chance
    placed = place_on_curve(np.array(SIZES), scores, 0.85)
    # The pooled 100/200 level is 0.85: reached at 100 already.
    assert placed == Equivalent(pytest.approx(100), 0)


def trials(arm_gain: float, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Real-only arms climbing 0.04 per doubling (plus a per-seed offset), and a synthetic arm
    at the base size scoring `arm_gain` above the base real arm."""
    offset = {0: 0.0, 1: 0.02, 2: -0.01, 3: 0.01, 4: -0.02}
    rows = [{"synthetic_ratio": 0.0, "real_per_class": n, "backbone": "r", "seed": s,
             METRIC: 0.80 + 0.04 * math.log2(n / 50) + offset[s]}
            for n in SIZES for s in seeds]
    rows += [{"synthetic_ratio": 2.0, "real_per_class": 50, "backbone": "r", "seed": s,
              METRIC: 0.80 + arm_gain + offset[s]} for s in seeds]
    return pd.DataFrame(rows)


def test_an_arm_is_worth_the_real_size_that_scores_like_it_with_a_ci_over_seeds():
    row = real_equivalents(trials(0.06), METRIC, ["synthetic_ratio"]).iloc[0]
    # +0.06 is one and a half doublings: 50 * 2 ** 1.5 = 141 real images per class.
    assert row["arm"] == "synthetic_ratio=2" and row["n"] == 3
    assert row["equivalent"] == pytest.approx(50 * 2 ** 1.5) and row["censored"] == 0
    # The seeds share their offsets, so pairing leaves no spread: the CI is the point.
    assert row["ci_low"] == pytest.approx(row["equivalent"])
    assert row["ci_high"] == pytest.approx(row["equivalent"])


def test_the_ci_widens_with_seed_noise_and_reaches_beyond_the_curve():
    noisy = trials(0.13, seeds=(0, 1, 2, 3, 4))
    rng = np.random.default_rng(1)
    arm = noisy["synthetic_ratio"] > 0
    noisy.loc[arm, METRIC] += rng.normal(0, 0.03, arm.sum())
    row = real_equivalents(noisy, METRIC, ["synthetic_ratio"]).iloc[0]
    assert row["ci_low"] < row["equivalent"] <= row["ci_high"]
    assert (row["ci_high"], row["ci_high_censored"]) == (400, 1)  # some resamples beat 400


def test_fewer_than_three_seeds_give_no_ci():
    row = real_equivalents(trials(0.06, seeds=(0, 1)), METRIC, ["synthetic_ratio"]).iloc[0]
    assert math.isnan(row["ci_low"]) and row["equivalent"] == pytest.approx(50 * 2 ** 1.5)


def test_without_a_yardstick_there_is_nothing_to_place():
    only_base = trials(0.06)
    only_base = only_base[only_base["real_per_class"] == 50]
    assert real_equivalents(only_base, METRIC, ["synthetic_ratio"]).empty


def test_metric_names_are_what_mlflow_accepts():
    assert metric_name("synthetic_ratio=2 augmentation=vae+cutout") == \
        "real_equivalent_synthetic_ratio-2_augmentation-vae_cutout"


def test_the_report_and_the_parent_run_say_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    table = trials(0.06)
    recorded = [{**{k: v for k, v in row.items() if k != METRIC}, "augmentation": "none",
                 "metrics": {METRIC: row[METRIC]}} for row in table.to_dict("records")]
    sweep_id = record_sweep(uri, "yard", recorded)
    report = build_report(load_sweep(uri, sweep_id), METRIC, tmp_path / "figures")
    # The yardstick's larger real arms are not ratio-0 baselines of the sweep's own axes.
    baseline = report.summary[(report.summary["axis"] == "synthetic_ratio") &
                              (report.summary["value"] == 0)]
    assert baseline["mean"].iloc[0] == pytest.approx(table[(table.synthetic_ratio == 0) &
                                                           (table.real_per_class == 50)][METRIC].mean())
    assert (tmp_path / "figures" / "yardstick.png").stat().st_size > 1000
    assert main(["report", "--sweep", sweep_id, "--tracking-uri", uri,
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "synthetic_ratio=2 ≈ 141 real images per class (95% CI 141–141" in out
    parent = MlflowClient(uri).get_run(load_sweep(uri, sweep_id).parent_run_id).data.metrics
    assert parent["real_equivalent_synthetic_ratio-2"] == pytest.approx(50 * 2 ** 1.5)
    assert parent["real_equivalent_synthetic_ratio-2_censored"] == 0


YARD = """
name: yard
dataset: {name: digits, per_class: 8}
yardstick: {per_class: [12, 16]}
training: {epochs: 1, batch_size: 16, input_size: 16}
sweep:
  synthetic_ratio: [0, 1]
  backbone: test_resnet
  seed: [0, 1]
"""


def test_the_plan_adds_real_only_arms_at_each_size(in_tmp_cwd, write_spec):
    plan = build_plan(load_spec(write_spec(YARD)))
    extra = [c for c in plan.configs if c["real_per_class"] != 8]
    assert sorted((c["real_per_class"], c["seed"]) for c in extra) == [
        (n, s) for n in (12, 16) for s in (0, 1)]
    assert all(c["synthetic_ratio"] == 0 for c in extra)
    assert plan.trial_count == 4 + 4  # the grid's ratio-0 trials are the base size's arms
    trial = plan.trial_planner("s", "/store").trial_plan(extra[-1])
    assert trial.dataset["per_class"] == 16 and trial.pool is None


def test_yardstick_sizes_beyond_the_data_or_below_the_spec_are_refused(write_spec, capsys):
    digits = YARD.replace("per_class: [12, 16]", "per_class: [12, 1000]")
    expect_error(write_spec(digits), capsys, "yardstick.per_class", "1000", "once validation")
    small = YARD.replace("per_class: [12, 16]", "per_class: [4, 16]")
    expect_error(write_spec(small), capsys, "yardstick.per_class", "not above")
