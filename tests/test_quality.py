"""Synthetic-quality metrics on sklearn's digits, where the answers are known: a set against
itself, against the other half of its class, against another class, and planted bad images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysweep.data import create_dataset, split_dataset
from raysweep.quality import (classification_accuracy_score, distribution_metrics,
                              nearest_real_ssim, pool_quality)
from raysweep.quality.filtering import keep_confident


@pytest.fixture(scope="module")
def splits():
    return split_dataset(create_dataset("digits"), val_fraction=0.1, test_fraction=0.2,
                         per_class=None, seed=0)


def pixels(images: np.ndarray) -> torch.Tensor:
    """Features for tests: the pixels themselves (the metrics take any feature network)."""
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float64) / 16)


def of_class(splits, label: int) -> np.ndarray:
    return splits.train.images[splits.train.labels == label]


def test_identical_sets_are_zero_apart_and_fully_covered(splits):
    zeros = of_class(splits, 0)
    same = distribution_metrics(pixels(zeros), pixels(zeros))
    other = distribution_metrics(pixels(zeros), pixels(of_class(splits, 1)))
    assert abs(same["frechet_distance"]) < 1e-6 * other["frechet_distance"]
    assert abs(same["kid"]) < 0.02 * other["kid"]
    assert same["precision"] == same["recall"] == 1.0
    assert nearest_real_ssim(zeros, zeros) == pytest.approx(np.ones(len(zeros)), abs=1e-5)


def test_other_classes_are_far_and_outside_the_real_manifold(splits):
    zeros, ones = of_class(splits, 0), of_class(splits, 1)
    halves = distribution_metrics(pixels(zeros[::2]), pixels(zeros[1::2]))
    apart = distribution_metrics(pixels(zeros), pixels(ones))
    assert apart["frechet_distance"] > 5 * halves["frechet_distance"]
    assert apart["kid"] > 5 * halves["kid"]
    assert apart["precision"] < 0.2 < halves["precision"]
    assert apart["recall"] < 0.2 < halves["recall"]
    assert nearest_real_ssim(zeros, ones).mean() < nearest_real_ssim(zeros[::2], zeros[1::2]).mean()


def test_pool_quality_finds_the_class_with_planted_noise(splits):
    train = splits.train
    rng = np.random.default_rng(0)
    synthetic = train.images[1::2].copy()  # the other half of each class stands in for a generator
    labels = train.labels[1::2]
    planted = labels == 3
    synthetic[planted] = rng.integers(0, 17, synthetic[planted].shape, dtype=np.uint8)
    table = pool_quality(train.images[::2], train.labels[::2], synthetic, labels, pixels,
                         list(train.class_names)).set_index("class")
    assert list(table.index) == [*train.class_names, "all"]
    per_class = table.drop(index="all")
    assert per_class["frechet_distance"].idxmax() == "3"
    assert per_class["ssim_nearest_real"].idxmin() == "3"
    assert per_class["precision"].idxmin() == "3"
    assert table.loc["all", "synthetic_images"] == len(synthetic)


@pytest.mark.slow
def test_cas_is_high_for_real_looking_labelled_images_and_chance_for_shuffled_labels(splits):
    train, test = splits.train, splits.test
    args = dict(test_images=test.images, test_labels=test.labels, num_classes=10,
                backbone="test_resnet", epochs=8)
    faithful = classification_accuracy_score(train.images, train.labels, **args)
    shuffled = classification_accuracy_score(
        train.images, np.random.default_rng(0).permutation(train.labels), **args)
    assert faithful > 0.6 > 0.25 > shuffled


def test_filter_rejects_exactly_the_images_below_the_threshold():
    """Images encode their label in their pixels (label × 10); planted bad ones are white, and
    the stand-in classifier is unsure of them (uniform over 10 classes: confidence 0.1)."""
    labels = np.arange(40) % 10
    planted = np.zeros(40, bool)
    planted[[3, 17, 22, 38]] = True
    pixels_ = np.where(planted, 255, labels * 10).astype(np.uint8)
    images = pixels_[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)

    def logits(batch: np.ndarray) -> torch.Tensor:
        value = torch.from_numpy(batch[:, 0, 0, 0].astype(np.int64))
        sure = torch.nn.functional.one_hot(torch.where(value == 255, 0, value // 10), 10) * 10.0
        return torch.where((value == 255)[:, None], torch.zeros_like(sure), sure)

    is_synthetic = np.r_[np.zeros(10, bool), np.ones(30, bool)]
    keep = keep_confident(logits, images, labels, is_synthetic, threshold=0.5)
    assert (~keep).sum() == 3 and not keep[[17, 22, 38]].any()
    assert keep[3]  # a real row is never filtered
    assert keep_confident(logits, images, labels, is_synthetic, threshold=0.0).all()
    assert (~keep_confident(logits, images, labels, is_synthetic, threshold=0.05)).sum() == 0
