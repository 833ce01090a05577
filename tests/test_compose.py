"""Synthetic ratio modes: nested prefixes, class balance, and what each mode keeps."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.training.compose import compose, real_indices, synthetic_count
from raysweep.synthesis.sampled import pool_order

K = 10
REAL_LABELS = np.repeat(np.arange(K), 20)
REAL = np.zeros((len(REAL_LABELS), 4, 4, 1), np.uint8)
POOL_LABELS, POOL_SEEDS = pool_order(K, seed=7, start=0, stop=600)
POOL = (np.arange(600) % 256).astype(np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)


def synthetic_rows(ratio, mode, seed=0):
    _, labels, is_synthetic = compose(REAL, REAL_LABELS, POOL, POOL_LABELS, ratio, mode, seed)
    return labels[is_synthetic], np.flatnonzero(is_synthetic) - (~is_synthetic).sum()


@pytest.mark.parametrize("mode", ["add", "only"])
def test_smaller_ratio_uses_a_prefix_of_the_larger_one(mode):
    small_labels, small_index = synthetic_rows(0.5, mode)
    large_labels, large_index = synthetic_rows(2.0, mode)
    assert len(small_index) == 100 and len(large_index) == 400
    assert np.array_equal(small_index, large_index[:100])
    assert np.array_equal(small_labels, large_labels[:100])


def test_every_prefix_is_class_balanced():
    for n in (10, 37, 100, 599):
        counts = np.bincount(POOL_LABELS[:n], minlength=K)
        assert counts.max() - counts.min() <= 1


def test_pool_seeds_are_distinct_per_pool_and_image_as_torch_reads_them():
    """torch's CPU generator keeps the low 32 bits of a seed: seeds must differ there."""
    _, other = pool_order(K, seed=8, start=0, stop=600)
    assert POOL_SEEDS.min() >= 0 and max(POOL_SEEDS.max(), other.max()) < 2**32
    assert len(np.unique(POOL_SEEDS)) == 600
    assert not set(POOL_SEEDS.tolist()) & set(other.tolist())
    _, later = pool_order(K, seed=7, start=300, stop=600)
    assert np.array_equal(later, POOL_SEEDS[300:])


def test_add_keeps_every_real_image():
    images, labels, is_synthetic = compose(REAL, REAL_LABELS, POOL, POOL_LABELS, 1.0, "add", 0)
    assert (~is_synthetic).sum() == 200 and is_synthetic.sum() == 200 and len(labels) == 400


def test_replace_keeps_the_total_and_stays_stratified():
    _, labels, is_synthetic = compose(REAL, REAL_LABELS, POOL, POOL_LABELS, 0.5, "replace", 3)
    assert len(labels) == 200 and is_synthetic.sum() == 100
    assert np.all(np.bincount(labels[~is_synthetic], minlength=K) == 10)


def test_replace_drops_are_seeded():
    a = real_indices(REAL_LABELS, 0.5, "replace", seed=1)
    b = real_indices(REAL_LABELS, 0.5, "replace", seed=1)
    c = real_indices(REAL_LABELS, 0.5, "replace", seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_only_has_no_real_images():
    _, _, is_synthetic = compose(REAL, REAL_LABELS, POOL, POOL_LABELS, 1.5, "only", 0)
    assert is_synthetic.all() and len(is_synthetic) == 300


def test_baseline_uses_no_synthetic_images():
    assert synthetic_count(0, "add", 200) == 0
    _, _, is_synthetic = compose(REAL, REAL_LABELS, POOL[:0], POOL_LABELS[:0], 0.0, "add", 0)
    assert not is_synthetic.any()


def test_too_short_a_pool_is_refused():
    with pytest.raises(ValueError, match="need 400"):
        compose(REAL, REAL_LABELS, POOL[:10], POOL_LABELS[:10], 2.0, "add", 0)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.77, 1.0])
def test_replace_keeps_the_real_total_on_uneven_classes(ratio):
    """Classes of 41, 29 and 17 images: per-class rounding of the dropped share gave one row
    too many or too few (15 images in 3 classes at 0.5 gave 14); largest remainder keeps it."""
    labels = np.repeat(np.arange(3), [41, 29, 17])
    real = np.zeros((len(labels), 2, 2, 1), np.uint8)
    pool_labels, _ = pool_order(3, seed=0, start=0, stop=len(labels))
    pool = np.ones((len(labels), 2, 2, 1), np.uint8)
    images, out_labels, is_synthetic = compose(real, labels, pool, pool_labels, ratio,
                                               "replace", seed=3)
    assert len(images) == len(out_labels) == 87
    assert is_synthetic.sum() == synthetic_count(ratio, "replace", 87)
    kept = np.bincount(out_labels[~is_synthetic], minlength=3)
    dropped = np.array([41, 29, 17]) - kept
    # Each class gives up its share of the dropped images, to within one image.
    assert np.abs(dropped - is_synthetic.sum() * np.array([41, 29, 17]) / 87).max() < 1


def test_replace_on_fifteen_images_in_three_classes_keeps_fifteen():
    labels = np.repeat(np.arange(3), [7, 5, 3])
    kept = real_indices(labels, 0.5, "replace", seed=0)
    assert len(kept) + synthetic_count(0.5, "replace", 15) == 15
