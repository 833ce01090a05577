"""Saliency: the CAM registry, timm target layers, exact-share masks, and masks that find
known objects (shapes drawn on textured backgrounds, a reference classifier trained on them)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from scipy import ndimage

from raysweep.data import ImageDataset
from raysweep.training.reference import ensure_reference_classifier
from raysweep.saliency import (MASK_REGIONS, create_cam, find_target_layer, list_cam_methods,
                               mask_from_cam, saliency_maps)
from raysweep.saliency.target_layer import TargetLayerError
from raysweep.store.store import SyntheticStore


@pytest.mark.parametrize("region", MASK_REGIONS)
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.33, 0.5, 0.99])
@pytest.mark.parametrize("smooth", [0.0, 2.0])
def test_mask_covers_the_fraction_to_within_one_pixel(region, fraction, smooth):
    rng = np.random.default_rng(0)
    cam = rng.random((28, 28))
    cam[10:20, 10:20] = 1.0  # a flat plateau: ties are broken, not all taken or all left
    mask = mask_from_cam(cam, fraction, region, rng, smooth=smooth)
    assert mask.dtype == bool and mask.shape == cam.shape
    assert abs(int(mask.sum()) - fraction * cam.size) <= 1


def test_background_takes_the_least_salient_and_foreground_the_most():
    cam = np.tile(np.linspace(0, 1, 20), (10, 1))  # salience grows to the right
    rng = np.random.default_rng(0)
    background = mask_from_cam(cam, 0.25, "background", rng)
    foreground = mask_from_cam(cam, 0.25, "foreground", rng)
    assert background[:, :5].all() and not background[:, 5:].any()
    assert foreground[:, 15:].all() and not foreground[:, :15].any()


def test_smoothing_makes_blobs_of_the_same_share():
    rng = np.random.default_rng(1)
    cam = np.zeros((32, 32))
    scattered = mask_from_cam(cam, 0.3, "random", np.random.default_rng(2))
    blobs = mask_from_cam(cam, 0.3, "random", np.random.default_rng(2), smooth=2.0)
    assert scattered.sum() == blobs.sum()
    assert ndimage.label(blobs)[1] < ndimage.label(scattered)[1] / 4
    del rng


def test_bad_region_and_fraction():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown mask region 'middle'"):
        mask_from_cam(np.zeros((4, 4)), 0.5, "middle", rng)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mask_from_cam(np.zeros((4, 4)), 1.0, "random", rng)


def test_cam_registry_has_the_grad_cam_family():
    assert {"gradcam", "hirescam", "gradcam++"} <= set(list_cam_methods())
    model = timm.create_model("test_resnet", num_classes=2)
    with pytest.raises(KeyError, match="unknown CAM method 'scorecam'"):
        create_cam("scorecam", model, model.layer4 if hasattr(model, "layer4") else model)


def test_target_layer_is_the_last_spatial_stage_or_the_named_one():
    model = timm.create_model("resnet10t", num_classes=3, in_chans=1, output_stride=8)
    assert find_target_layer(model, None, (1, 32, 32))[0] == "layer4"
    assert find_target_layer(model, "layer3", (1, 32, 32))[0] == "layer3"
    with pytest.raises(TargetLayerError, match="no module named 'layer9'"):
        find_target_layer(model, "layer9", (1, 32, 32))
    with pytest.raises(TargetLayerError, match="not a \\(N, C, h, w\\) feature map"):
        find_target_layer(model, "fc", (1, 32, 32))
    vit = timm.create_model("test_vit", num_classes=3)
    with pytest.raises(TargetLayerError):
        find_target_layer(vit, None, (3, *vit.default_cfg["input_size"][1:]))


def _shapes_on_texture(n_per_class: int, seed: int, size: int = 32):
    """Discs, hollow squares and crosses, bright, at random places on random dim textures;
    returns images, labels and the true object masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels, objects = [], [], []
    for label in range(3):
        for _ in range(n_per_class):
            texture = ndimage.gaussian_filter(rng.random((size, size, 3)), sigma=(1.0, 1.0, 0))
            texture = (texture - texture.min()) / (np.ptp(texture) + 1e-8)
            image = 0.1 + 0.45 * texture
            r = int(rng.integers(6, 9))
            cy, cx = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
            dy, dx = abs(yy - cy), abs(xx - cx)
            if label == 0:
                shape = dy ** 2 + dx ** 2 <= r * r
            elif label == 1:
                shape = (np.maximum(dy, dx) <= r) & (np.maximum(dy, dx) >= r - 1)
            else:
                shape = ((dy <= 1) & (dx <= r)) | ((dx <= 1) & (dy <= r))
            image[shape] = rng.uniform(0.85, 1.0, 3)
            images.append(np.round(image * 255).astype(np.uint8))
            labels.append(label)
            objects.append(shape)
    return np.stack(images), np.array(labels), np.stack(objects)


@pytest.mark.slow
def test_masks_find_known_objects(tmp_path):
    images, labels, objects = _shapes_on_texture(60, seed=0)
    train = ImageDataset(images, labels, ("circle", "square", "cross"), name="shapes")
    held_images, held_labels, held_objects = _shapes_on_texture(30, seed=1)
    held = ImageDataset(held_images, held_labels, train.class_names, name="shapes")
    reference = ensure_reference_classifier(SyntheticStore(tmp_path), train, {"epochs": 10},
                                            val=held, log=lambda _m: None)
    assert reference.val_accuracy > 0.8  # it learned the shapes, so its CAMs mean something
    fraction = 0.3
    for method in ("gradcam", "hirescam", "gradcam++"):
        maps = saliency_maps(reference, held_images, held_labels, method)
        overlap = {}
        for region in MASK_REGIONS:
            rng = np.random.default_rng(0)
            covered = [(mask_from_cam(cam, fraction, region, rng) & obj).sum() / obj.sum()
                       for cam, obj in zip(maps, held_objects)]
            overlap[region] = float(np.mean(covered))
        print(f"{method}: share of object pixels masked at fraction {fraction}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in overlap.items()))
        assert overlap["random"] == pytest.approx(fraction, abs=0.05)
        assert overlap["background"] < 0.5 * overlap["random"]
        assert overlap["foreground"] > 1.8 * overlap["random"]


def test_reference_classifier_is_trained_once_and_cached(tmp_path):
    rng = np.random.default_rng(0)
    data = ImageDataset(rng.integers(0, 256, (24, 12, 12, 1), dtype=np.uint8), np.arange(24) % 3,
                        ("a", "b", "c"), name="noise")
    store = SyntheticStore(tmp_path)
    options = {"backbone": "test_resnet", "epochs": 1, "input_size": 16}
    first = ensure_reference_classifier(store, data, options, val=data, log=lambda _m: None)
    again = ensure_reference_classifier(store, data, options, log=lambda _m: None)
    assert not first.reused and again.reused and again.key == first.key
    assert store.has_classifier(first.key) and not store.has_generator(first.key)
    assert (again.logits(data.images) == first.logits(data.images)).all()
    assert again.logits(data.images).shape == (24, 3)
    assert again.features(data.images[:5]).shape == (5, again.model.num_features)
    assert first.val_accuracy == first.accuracy(data)
    other = ensure_reference_classifier(store, data, {**options, "seed": 1}, log=lambda _m: None)
    assert other.key != first.key  # the seed is part of the key
