"""img2img pools: the order of sources and targets, the soft labels trials train on, what
`validate` refuses, and a tiny img2img sweep end to end with its gallery."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.synthesis.identity import Variation
from raysweep.synthesis.img2img import img2img_order, label_weight
from raysweep.training.compose import compose, soft_targets
from test_spec import expect_error

LABELS = np.repeat(np.arange(4), 6)  # 4 classes of 6 training images


def test_same_keeps_each_source_class_and_other_spreads_it_evenly():
    n = len(LABELS)
    sources, targets, seeds = img2img_order(LABELS, 4, 7, Variation(0.5, "same"), 0, 3 * n)
    assert (targets == LABELS[sources]).all() and len(set(seeds.tolist())) == 3 * n
    sources, targets, _ = img2img_order(LABELS, 4, 7, Variation(0.5, "other"), 0, 3 * n)
    assert (targets != LABELS[sources]).all()
    for c in range(4):
        # Class c's 18 variants go to the three other classes, six each.
        counts = np.bincount(targets[LABELS[sources] == c], minlength=4)
        assert counts[c] == 0 and set(counts[np.arange(4) != c]) == {6}
    # Every prefix is class-balanced in its sources, and a chunk is the same as the whole.
    assert np.bincount(LABELS[sources[:8]], minlength=4).tolist() == [2, 2, 2, 2]
    later = img2img_order(LABELS, 4, 7, Variation(0.5, "other"), 10, 30)
    assert (later[0] == sources[10:30]).all() and (later[1] == targets[10:30]).all()


def test_other_variants_carry_soft_labels_that_sum_to_one_with_the_documented_weight():
    variation, gamma = Variation(0.36, "other"), 0.5
    weight = label_weight(variation, gamma)
    assert weight == pytest.approx(0.36 ** 0.5) == pytest.approx(0.6)
    assert label_weight(Variation(0.36, "same"), gamma) == 1.0
    sources, targets, _ = img2img_order(LABELS, 4, 0, variation, 0, 8)
    real = np.zeros((len(LABELS), 2, 2, 1), np.uint8)
    images, labels, synthetic = compose(real, LABELS, real[:8], targets, 8 / 24, "add", 0)
    soft = soft_targets(labels, synthetic, 4, LABELS[sources], np.full(8, weight, np.float32))
    assert np.allclose(soft.sum(1), 1.0)
    rows = np.flatnonzero(synthetic)
    assert np.allclose(soft[rows, targets], weight)
    assert np.allclose(soft[rows, LABELS[sources]], 1 - weight)
    assert (soft[~synthetic].max(1) == 1).all()  # real rows stay one-hot
    # `same` variants need no soft targets at all.
    assert soft_targets(labels, synthetic, 4, LABELS[sources], np.ones(8, np.float32)) is None


IMG2IMG = {"name": "tinyvary", "dataset": {"name": "digits", "per_class": 8},
           "generator": {"name": "ddpm",
                         "options": {"steps": 4, "block_out_channels": [8, 16], "image_size": 8,
                                     "sample_steps": 4, "batch_size": 16}},
           "synthesis": {"chunk_size": 40},
           "training": {"epochs": 1, "batch_size": 16, "input_size": 16},
           "yardstick": {"per_class": [10]},
           "sweep": {"synthetic_ratio": [1], "strength": [0.5], "translation": ["same", "other"],
                     "augmentation": "img2img", "backbone": "test_resnet", "seed": 0}}


def with_sweep(**axes):
    return {**IMG2IMG, "sweep": {**IMG2IMG["sweep"], **axes}}


def test_validate_refuses_what_img2img_cannot_mean(write_spec, capsys):
    expect_error(write_spec(with_sweep(strength=[0, 0.5])), capsys, "sweep.strength", "(0, 1]")
    expect_error(write_spec(with_sweep(strength=[0.5, 1.5])), capsys, "sweep.strength", "1.5")
    expect_error(write_spec(with_sweep(translation=["same", "sideways"])), capsys,
                 "sweep.translation", "sideways", "same, other")
    # A swept strength that some trials ignore would only repeat them.
    expect_error(write_spec(with_sweep(strength=[0.25, 0.5], augmentation=["img2img", "ddpm"])),
                 capsys, "sweep.strength", "'ddpm'", "img2img kind")
    expect_error(write_spec(with_sweep(strength=[0.25, 0.5], synthetic_ratio=[0, 1])), capsys,
                 "sweep.strength", "synthetic_ratio 0", "yardstick")
    # A generator must be able to vary real images.
    expect_error(write_spec({**IMG2IMG, "generator": {"name": "vae"}}), capsys,
                 "img2img", "'vae'", "cannot img2img")


def test_other_on_a_one_class_dataset_is_refused(write_spec, capsys, monkeypatch):
    """No built-in dataset has one class (a folder needs two), but a registered one may."""
    import raysweep.data
    from raysweep.data import ImageDataset, register_dataset

    monkeypatch.setattr(raysweep.data, "_REGISTRY", dict(raysweep.data._REGISTRY))

    @register_dataset("_one_class")
    def one_class(image_size=None) -> ImageDataset:
        rng = np.random.default_rng(0)
        return ImageDataset(rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8),
                            np.zeros(30, np.int64), ("only",))

    spec = {**IMG2IMG, "dataset": {"name": "_one_class", "per_class": 4}, "yardstick": None}
    expect_error(write_spec(spec), capsys, "sweep.translation", "'other'", "1 class")


def test_sd_img2img_without_weights_is_refused(write_spec, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    spec = {**IMG2IMG, "generator": {"name": "sd-img2img"}}
    expect_error(write_spec(spec), capsys, "sd-img2img", "not available offline", "hf download")


@pytest.mark.slow
def test_a_tiny_img2img_sweep_end_to_end(in_tmp_cwd, capsys, monkeypatch):
    import mlflow
    import yaml
    from mlflow.tracking import MlflowClient

    from raysweep.cli import main
    from raysweep.store import SyntheticStore

    spec = in_tmp_cwd / "tiny.yaml"
    spec.write_text(yaml.safe_dump(IMG2IMG))
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert main(["run", str(spec), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tinyvary"])
    parent = runs[runs["tags.raysweep.role"] == "sweep"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    # Two img2img trials, and the yardstick's real-only arms at 8 (the base) and 10 per class.
    assert set(runs["status"]) == {"FINISHED"} and len(children) == 4
    assert sorted(children["params.real_per_class"]) == ["10", "8", "8", "8"]
    assert set(children[children["params.synthetic_ratio"] == "1"]["params.generator"]) == \
        {"img2img-ddpm"}
    client = MlflowClient()
    for row in children[children["params.synthetic_ratio"] == "1"].itertuples():
        assert "img2img_gallery.png" in {a.path for a in client.list_artifacts(row.run_id)}
    metrics = client.get_run(parent["run_id"]).data.metrics
    assert metrics["synthetic_images_generated"] == 2 * 80
    assert "real-data equivalent" in out and "real_equivalent_translation-other" in metrics
    # Each pool records every image's source, source class, target and label weight.
    store = SyntheticStore(in_tmp_cwd / ".raysweep" / "cache")
    for key in store.pool_keys():
        meta = store.pool_meta(key)
        pool = store.read(key, 80)
        assert meta["kind"] == "img2img" and sorted(pool.sources.tolist()) == list(range(80))
        if meta["translation"] == "other":
            assert (pool.labels != pool.source_labels).all()
            assert np.allclose(pool.weights, 0.5 ** 0.5)
        else:
            assert (pool.labels == pool.source_labels).all() and (pool.weights == 1).all()
