"""The report of a sweep, read back from a real sqlite MLflow store holding recorded sweeps
with known numbers: a ratio axis, a categorical axis, an Optuna search, and `raysweep ls`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from raysweep.cli import main
from raysweep.report import build_report, load_sweep
from recorded_sweeps import record_sweep

METRIC = "test_balanced_accuracy"
# Per-seed offsets shared by every arm (what pairing cancels) and per-seed jitter of the effect.
SEED_OFFSET = {0: 0.00, 1: 0.04, 2: -0.03}
JITTER = {0: 0.004, 1: -0.002, 2: 0.001}


@pytest.fixture
def uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def ratio_trials(seeds=(0, 1, 2)):
    """resnet gains 0.05 per unit of ratio, mobilenet 0.02; both with seed noise."""
    slope = {"resnet10t": 0.05, "mobilenet": 0.02}
    return [{"synthetic_ratio": r, "augmentation": "none", "backbone": b, "seed": s,
             "metrics": {METRIC: 0.8 + SEED_OFFSET[s] + (slope[b] + JITTER[s]) * r,
                         "train_seconds": 10 + 5 * r, "synthetic_images_used": 500 * r}}
            for r in (0.0, 1.0, 2.0) for b in slope for s in seeds]


def test_ratio_axis_pairs_seeds_against_the_baseline(uri, tmp_path, capsys):
    sweep_id = record_sweep(uri, "ratio", ratio_trials(), parent_metrics={
        "synthetic_images_generated": 1000, "synthetic_generation_seconds": 80,
        "generator_fit_seconds": 20})
    assert main(["report", "--sweep", sweep_id, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert sweep_id in out and "18 trials" in out

    report = build_report(load_sweep(uri, sweep_id), METRIC, tmp_path / "again")
    assert report.axes == ["synthetic_ratio", "backbone"]
    paired = report.paired[report.paired["axis"] == "synthetic_ratio"].set_index(["context", "value"])
    row = paired.loc[("backbone=resnet10t", 2.0)]
    diffs = np.array([(0.05 + JITTER[s]) * 2 for s in (0, 1, 2)])
    assert row["pairs"] == 3
    assert row["diff"] == pytest.approx(diffs.mean())
    assert row["diff_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3))
    # Unpaired, the seed offsets (±0.04) would swamp the 0.004 jitter: pairing removes them.
    summary = report.summary.set_index(["axis", "context", "value"])
    assert summary.loc[("synthetic_ratio", "backbone=resnet10t", 2.0), "ci95"] > 5 * row["diff_ci95"]
    # Cost: 10 + 5·ratio training seconds plus 500·ratio images at 0.1 s each.
    ratios = report.sweep.trials["synthetic_ratio"]
    assert np.allclose(report.cost, 10 + 5 * ratios + 50 * ratios)

    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"axis_synthetic_ratio.png", "axis_backbone.png", "paired_synthetic_ratio.png",
            "cost.png", "report.html", "report.csv", "report.json"} <= files
    assert "paired_backbone.png" not in files  # backbone has no baseline value
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len([f for f in files if f.endswith(".png")])
    table = json.loads((tmp_path / "r" / "report.json").read_text())
    assert table["sweep"] == sweep_id and table["seeds"] == 3 and table["notes"] == []
    logged = {a.path for a in MlflowClient(uri).list_artifacts(load_sweep(uri, sweep_id).parent_run_id,
                                                               "report")}
    assert {"report/report.html", "report/report.csv", "report/report.json"} <= logged


def test_fewer_than_three_seeds_says_so_instead_of_drawing_bars(uri, tmp_path):
    sweep_id = record_sweep(uri, "ratio", ratio_trials(seeds=(0, 1)))
    report = build_report(load_sweep(uri, sweep_id), METRIC, tmp_path / "r")
    assert any("only 2 seed(s)" in note for note in report.notes)
    assert report.summary["ci95"].isna().all() and report.paired["diff_ci95"].isna().all()
    assert not (tmp_path / "r" / "paired_synthetic_ratio.png").exists()


def test_categorical_axis_compares_each_augmentation_with_none(uri, tmp_path):
    gain = {"none": 0.0, "classic": 0.03, "mixup": -0.02}
    trials = [{"synthetic_ratio": 0.0, "augmentation": a, "backbone": "resnet10t", "seed": s,
               "metrics": {METRIC: 0.85 + SEED_OFFSET[s] + gain[a] + JITTER[s]}}
              for a in gain for s in (0, 1, 2)]
    sweep_id = record_sweep(uri, "augment", trials)
    report = build_report(load_sweep(uri, sweep_id), METRIC, tmp_path / "r")
    assert report.axes == ["augmentation"]
    paired = report.paired.set_index("value")
    assert paired.loc["classic", "diff"] == pytest.approx(0.03)
    assert paired.loc["mixup", "diff"] == pytest.approx(-0.02)
    assert set(paired.index) == {"classic", "mixup"}
    assert (tmp_path / "r" / "paired_augmentation.png").stat().st_size > 1000


def test_a_synthesis_axis_is_compared_only_where_trials_read_synthetic_images(uri, tmp_path):
    """Real-only trials are every strength's baseline: the ratio axis pairs each strength
    against them, and the strength axis shows no ratio-0 context (it would repeat them)."""
    gain = {0.25: 0.01, 0.75: 0.03}
    trials = [{"synthetic_ratio": 0.0, "strength": 0.25, "seed": s,
               "metrics": {METRIC: 0.8 + SEED_OFFSET[s]}} for s in (0, 1, 2)]
    trials += [{"synthetic_ratio": 1.0, "strength": g, "seed": s,
                "metrics": {METRIC: 0.8 + SEED_OFFSET[s] + gain[g] + JITTER[s]}}
               for g in gain for s in (0, 1, 2)]
    sweep_id = record_sweep(uri, "img2img", trials)
    report = build_report(load_sweep(uri, sweep_id), METRIC, tmp_path / "r")
    strength = report.summary[report.summary["axis"] == "strength"]
    assert list(strength["context"]) == ["synthetic_ratio=1.0"] * 2
    assert list(strength["value"]) == [0.25, 0.75] and all(strength["n"] == 3)
    ratio = report.paired[report.paired["axis"] == "synthetic_ratio"].set_index("context")
    assert ratio.loc["strength=0.75", "diff"] == pytest.approx(0.03 + np.mean(list(JITTER.values())))


def test_optuna_search_ranks_trials_and_axes(uri, tmp_path, capsys):
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(24):  # the backbone decides, the ratio barely matters
        backbone, ratio = rng.choice(["resnet10t", "mobilenet"]), float(rng.uniform(0, 2))
        score = (0.9 if backbone == "resnet10t" else 0.6) + 0.005 * ratio + rng.normal(0, 0.005)
        trials.append({"synthetic_ratio": ratio, "augmentation": "none", "backbone": backbone,
                       "seed": int(rng.integers(0, 2)), "metrics": {METRIC: score}})
    sweep_id = record_sweep(uri, "optuna", trials, search_alg="optuna")
    report = build_report(load_sweep(uri, sweep_id), METRIC, tmp_path / "r")
    assert report.sampled
    assert max(report.importances, key=report.importances.get) == "backbone"
    assert list(report.best[METRIC]) == sorted(report.best[METRIC], reverse=True)
    better = min(10, sum(t["backbone"] == "resnet10t" for t in trials))
    assert set(report.best["backbone"][:better]) == {"resnet10t"}  # the better backbone first
    assert (tmp_path / "r" / "importance.png").exists()
    assert main(["report", "--sweep", sweep_id, "--format", "json", "--out", str(tmp_path / "j")]) == 0
    assert "best trials:" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["report.json"]


def test_two_sweeps_of_one_spec_each_report_their_own_trials(uri, tmp_path):
    first = record_sweep(uri, "ratio", ratio_trials(seeds=(0, 1, 2)))
    second = record_sweep(uri, "ratio", ratio_trials(seeds=(0,)))
    assert len(load_sweep(uri, first).trials) == 18
    assert len(load_sweep(uri, second).trials) == 6


def test_ls_lists_sweeps_and_bad_input_is_one_line(uri, capsys):
    first = record_sweep(uri, "ratio", ratio_trials(), parent_metrics={"best_val_accuracy": 0.9})
    second = record_sweep(uri, "augment", ratio_trials(seeds=(0,)))
    assert main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == [second, "augment", "6", "FINISHED"]
    assert lines[2].split()[:5] == [first, "ratio", "18", "FINISHED", "val_accuracy=0.9000"]
    assert main(["report", "--sweep", first, "--format", "pdf"]) == 2
    assert main(["report", "--sweep", "nope"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "unknown format pdf" in errors[0] and "raysweep ls" in errors[1]
