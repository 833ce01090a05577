"""Inpainting: RePaint in the DDPM, the blur/erase controls, inpainted pools with provenance,
and the one-line errors `validate` gives for the mask axes."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.data import ImageDataset
from raysweep.generators import create_generator
from raysweep.synthesis.identity import Mask, PoolId
from raysweep.synthesis.inpaint import Masking, Repainter, inpaint_order
from raysweep.synthesis.sources import source_order
from raysweep.synthesis.kinds import trial_source
from raysweep.store import PoolImages, SyntheticStore
from raysweep.training.reference import ReferenceOptions
from test_spec import GOOD, expect_error, validate
from test_stable_diffusion import _fitted, inpaint_dir, offline  # noqa: F401 (fixtures)
from tiny import TINY_DDPM


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 1), dtype=np.uint8)
    return ImageDataset(images, np.arange(40) % 4, ("a", "b", "c", "d"), name="noise")


@pytest.fixture(scope="module")
def tiny_ddpm(tiny_data):
    generator = create_generator("ddpm", **TINY_DDPM, repaint_steps=4, repaint_jump_length=2)
    generator.fit(tiny_data.images, tiny_data.labels, 4, seed=0)
    return generator


def test_repaint_keeps_unmasked_pixels_and_is_deterministic(tiny_ddpm, tiny_data, tmp_path):
    masks = np.random.default_rng(1).random((6, 12, 12)) < 0.3
    sources, labels = tiny_data.images[:6], tiny_data.labels[:6]
    out = tiny_ddpm.sample_inpaint(sources, masks, labels, np.arange(6))
    assert out.shape == sources.shape and out.dtype == np.uint8
    assert (out[~masks] == sources[~masks]).all()
    assert (out[masks] != sources[masks]).mean() > 0.5
    # Image i depends only on its own inputs and seed: a prefix request gives the same images,
    # and so do the weights after a save/load round trip.
    assert (tiny_ddpm.sample_inpaint(sources[:2], masks[:2], labels[:2], np.arange(2))
            == out[:2]).all()
    tiny_ddpm.save(str(tmp_path))
    loaded = create_generator("ddpm", repaint_steps=4, repaint_jump_length=2)
    loaded.load(str(tmp_path))
    assert (loaded.sample_inpaint(sources, masks, labels, np.arange(6)) == out).all()
    with pytest.raises(ValueError, match="masks must have shape"):
        tiny_ddpm.sample_inpaint(sources, masks[:, :6], labels, np.arange(6))


@pytest.mark.parametrize("name", ["blur", "erase"])
def test_controls_change_only_the_masked_pixels(name, tiny_data):
    control = create_generator(name)
    control.fit(tiny_data.images, tiny_data.labels, 4, seed=0)
    masks = np.zeros((3, 12, 12), bool)
    masks[:, :, 6:] = True
    out = control.sample_inpaint(tiny_data.images[:3], masks, tiny_data.labels[:3], np.arange(3))
    assert (out[~masks] == tiny_data.images[:3][~masks]).all()
    assert (out[masks] != tiny_data.images[:3][masks]).any()
    if name == "erase":
        means = np.round(tiny_data.images[:3].mean(axis=(1, 2, 3)))
        assert np.allclose(out[:, :, 6:, 0], means[:, None, None], atol=1)
    with pytest.raises(TypeError, match="needs source images and masks"):
        control.sample(tiny_data.labels[:3], np.arange(3))


def test_kinds_pick_inpainting_sources():
    assert trial_source("inpaint", "ddpm").name == "inpaint-ddpm"
    assert trial_source("inpaint+classic", "sd-inpaint").name == "sd-inpaint"
    assert trial_source("blur", "ddpm").inpaint and trial_source("erase", "ddpm").inpaint
    assert not trial_source("ddpm", "ddpm").inpaint and not trial_source("none", "ddpm").inpaint
    assert trial_source("none", "sd-inpaint").inpaint


def test_inpaint_order_is_class_balanced_and_cycles_with_new_seeds():
    labels = np.repeat(np.arange(4), 5)
    order = source_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(20))
    assert set(labels[order[:4]]) == {0, 1, 2, 3}  # every prefix is class-balanced
    sources, picked, seeds = inpaint_order(labels, 3, 0, 40)  # ratio 2: two variants each
    assert (sources[:20] == sources[20:]).all() and (picked == labels[sources]).all()
    assert len(set(seeds.tolist())) == 40


def test_store_keeps_provenance_and_plain_pools_stay_plain(tmp_path):
    store = SyntheticStore(tmp_path)
    store.create_pool("p", {})
    rng = np.random.default_rng(0)
    for start in (0, 3):
        store.append("p", PoolImages(rng.integers(0, 255, (3, 4, 4, 1), dtype=np.uint8),
                                     np.arange(3), np.arange(start, start + 3),
                                     sources=np.arange(start, start + 3) * 2,
                                     masks=rng.random((3, 4, 4)) < 0.5,
                                     saliency=rng.integers(0, 255, (3, 4, 4), dtype=np.uint8)))
    pool = store.read("p", 5)
    assert pool.sources.tolist() == [0, 2, 4, 6, 8] and pool.masks.shape == (5, 4, 4)
    assert pool.saliency.dtype == np.uint8 and store.verify("p") == []
    store.create_pool("q", {})
    store.append("q", PoolImages(np.zeros((2, 4, 4, 1), np.uint8), np.arange(2), np.arange(2)))
    assert store.read("q", 2).sources is None and store.read("q", 2).masks is None


def test_repainter_masks_exact_shares_and_records_provenance(tiny_data, tmp_path):
    control = create_generator("erase")
    control.fit(tiny_data.images, tiny_data.labels, 4, seed=0)
    options = ReferenceOptions(backbone="test_resnet", epochs=1, input_size=16)
    masking = Masking(options, "unused-in-this-test", "gradcam", None, 1.0)
    repainter = Repainter(control, tiny_data, masking, SyntheticStore(tmp_path))
    sources, _, seeds = inpaint_order(tiny_data.labels, 0, 0, 8)
    images = repainter.repaint(sources, seeds, Mask(0.25, "background"))
    assert (images.sources == sources).all() and (images.labels == tiny_data.labels[sources]).all()
    assert [int(m.sum()) for m in images.masks] == [36] * 8  # round(0.25 * 144)
    untouched = ~images.masks
    assert (images.images[untouched] == tiny_data.images[sources][untouched]).all()
    assert images.saliency.shape == (8, 12, 12)


RATIO = {**GOOD, "sweep": {**GOOD["sweep"], "synthetic_ratio": [1]}}


@pytest.mark.parametrize("sweep, words", [
    ({"mask_fraction": [0, 0.25, 0.5]}, ("sweep.mask_fraction", "'none'", "repeat")),
    ({"mask_fraction": 1.0, "augmentation": "inpaint"}, ("sweep.mask_fraction", "[0, 1)")),
    ({"mask_region": ["background", "middle"], "augmentation": "inpaint"},
     ("sweep.mask_region", "'middle'", "foreground")),
    ({"mask_region": ["background", "random"], "augmentation": ["inpaint", "ddpm"]},
     ("sweep.mask_region", "'ddpm'")),
    ({"mask_fraction": [0.1, 0.2], "augmentation": "inpaint", "synthetic_ratio": [0, 1]},
     ("sweep.mask_fraction", "synthetic_ratio 0")),
    ({"mask_fraction": {"uniform": [0.1, 0.4]}, "augmentation": "inpaint"},
     ("sweep.mask_fraction", "list")),
])
def test_mask_axes_errors(write_spec, capsys, sweep, words):
    spec = {**RATIO, "sweep": {**RATIO["sweep"], **sweep}, "tune": {"num_samples": 2}}
    expect_error(write_spec(spec), capsys, *words)


def test_unknown_cam_method_and_unusable_backbone(write_spec, capsys):
    inpaint = {**RATIO["sweep"], "augmentation": "inpaint"}
    expect_error(write_spec({**RATIO, "sweep": inpaint, "saliency": {"method": "scorecam"}}),
                 capsys, "saliency.method", "'scorecam'", "gradcam")
    expect_error(write_spec({**RATIO, "sweep": inpaint, "saliency": {"backbone": "test_vit"}}),
                 capsys, "saliency.target_layer", "test_vit")
    expect_error(write_spec({**RATIO, "sweep": inpaint,
                             "saliency": {"target_layer": "layer9"}}),
                 capsys, "saliency.target_layer", "'layer9'")


def test_ratio_spec_refuses_a_swept_mask_fraction(capsys):
    from pathlib import Path

    from test_spec import validate

    ratio = Path(__file__).resolve().parent.parent / "search_spaces" / "ratio.yaml"
    code, _, err = validate(ratio, capsys, "--set", "sweep.mask_fraction=[0,0.25,0.5]")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mask_fraction" in err


TINY_MASK_SWEEP = """
name: tinymask
dataset: {name: digits, per_class: 8}
generator:
  name: ddpm
  options: {steps: 4, block_out_channels: [8, 16], image_size: 8, sample_steps: 2,
            batch_size: 16, repaint_steps: 4, repaint_jump_length: 2}
saliency: {backbone: test_resnet, epochs: 1, input_size: 16}
synthesis: {chunk_size: 40, quality_epochs: 1}
training: {epochs: 1, batch_size: 16, input_size: 16}
tune: {cpus_per_trial: 1}
sweep:
  synthetic_ratio: [1]
  mask_fraction: 0.25
  mask_region: [background, random]
  augmentation: inpaint
  backbone: test_resnet
  seed: 0
"""


@pytest.mark.slow
def test_mask_sweep_end_to_end(in_tmp_cwd, capsys, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from raysweep.cli import main

    spec = in_tmp_cwd / "tiny.yaml"
    spec.write_text(TINY_MASK_SWEEP)
    # A fresh local Ray even where someone left `ray start` running on this machine.
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert main(["run", str(spec), "--num-cpus", "2"]) == 0
    capsys.readouterr()
    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tinymask"])
    parent = runs[runs["tags.raysweep.role"] == "sweep"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert set(runs["status"]) == {"FINISHED"} and len(children) == 2
    assert set(children["params.mask_region"]) == {"background", "random"}
    assert set(children["params.generator"]) == {"inpaint-ddpm"}
    client = MlflowClient()
    parent_metrics = client.get_run(parent["run_id"]).data.metrics
    assert parent_metrics["synthetic_images_generated"] == 2 * 80  # one pool per region
    # Inpainted pools are judged like any pool (their id once reached torch.manual_seed as a
    # tuple), on the one reference classifier that also made their masks.
    for region in ("background", "random"):
        slug = f"inpaint-ddpm_seed0_{region}0.25"
        assert parent_metrics[f"quality_{slug}_cas_balanced_accuracy"] >= 0.0
        assert f"quality/{slug}.csv" in {a.path for a in
                                         client.list_artifacts(parent["run_id"], "quality")}
    assert parent_metrics["reference_test_accuracy"] == parent_metrics["saliency_test_accuracy"]
    for row in children.itertuples():
        artifacts = {a.path for a in client.list_artifacts(row.run_id)}
        assert "inpaint_gallery.png" in artifacts
        assert client.get_run(row.run_id).data.metrics["synthetic_images_used"] == 80
    # Every pool image names its real source and its mask: a quarter of the pixels, and the
    # rest of the image is the source's.
    from raysweep.plan import build_plan
    from raysweep.spec import load_spec

    plan = build_plan(load_spec(spec))
    store = SyntheticStore(in_tmp_cwd / ".raysweep" / "cache")
    # The logged accuracy is the stored classifier's, the one the masks came from.
    from raysweep.training.reference import ensure_reference_classifier

    reference = ensure_reference_classifier(store, plan.splits.train, plan.reference,
                                            val=plan.splits.val, log=lambda _m: None)
    assert reference.reused and parent_metrics["saliency_val_accuracy"] == reference.val_accuracy
    keys = [k for k in store.pool_keys() if store.pool_meta(k).get("kind") == "inpaint"]
    assert len(keys) == 2
    for key in keys:
        pool = store.read(key, 80)
        assert sorted(pool.sources.tolist()) == list(range(80))
        assert (pool.masks.sum(axis=(1, 2)) == round(0.25 * 64)).all()
        sources = plan.splits.train.images[pool.sources]
        assert (pool.images[~pool.masks] == sources[~pool.masks]).all()


def test_trial_plan_names_the_inpainted_pool(write_spec):
    from raysweep.plan import build_plan
    from raysweep.spec import load_spec

    spec = {**RATIO, "sweep": {**RATIO["sweep"], "synthetic_ratio": [1], "augmentation":
                               ["inpaint", "blur"], "mask_region": ["background", "random"]}}
    plan = build_plan(load_spec(write_spec(spec)))
    planner = plan.trial_planner("s", "/tmp/store")
    config = {"synthetic_ratio": 1, "mask_fraction": 0.0, "mask_region": "random",
              "augmentation": "inpaint", "backbone": "resnet10t", "seed": 1}
    trial = planner.trial_plan(config)
    assert trial.pool == PoolId("inpaint-ddpm", 1, Mask(0.0, "random"))
    assert trial.service == planner.services["inpaint-ddpm"]
    assert planner.trial_plan({**config, "augmentation": "blur"}).generator == "blur"
    assert {p.pool for p in plan.pools} == {
        PoolId(g, s, Mask(0.0, r)) for g in ("blur", "inpaint-ddpm") for s in (0, 1)
        for r in ("background", "random")}


def test_sd_inpaint_repaints_saliency_masks_with_the_class_prompt(inpaint_dir, tmp_path,  # noqa: F811
                                                                 write_spec, capsys):
    """The Stable Diffusion path (a tiny pipeline through from_pretrained): masks from a
    reference classifier, the pipeline's repaint pasted back through them."""
    rng = np.random.default_rng(0)
    data = ImageDataset(rng.integers(0, 256, (8, 20, 24, 3), dtype=np.uint8), np.arange(8) % 2,
                        ("cat", "dog"), name="pets")
    generator = _fitted("sd-inpaint", inpaint_dir)
    masking = Masking(ReferenceOptions(backbone="test_resnet", epochs=1, input_size=16), "k",
                      "hirescam", None, 0.0)
    repainter = Repainter(generator, data, masking, SyntheticStore(tmp_path))
    sources, _, seeds = inpaint_order(data.labels, 0, 0, 4)
    images = repainter.repaint(sources, seeds, Mask(0.3, "foreground"))
    assert [int(m.sum()) for m in images.masks] == [round(0.3 * 20 * 24)] * 4
    kept = ~images.masks
    assert (images.images[kept] == data.images[sources][kept]).all()
    # And a sweep may ask for it: `validate` passes with the weights in a local folder.
    spec = {**RATIO, "generator": {"name": "sd-inpaint", "options": {"model": inpaint_dir}},
            "sweep": {**RATIO["sweep"], "mask_region": ["background", "foreground"]}}
    code, out, err = validate(write_spec(spec), capsys)
    assert code == 0, err
    assert "sd-inpaint" in out and "background 0" in out
