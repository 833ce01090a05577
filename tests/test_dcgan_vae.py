"""The `dcgan` and `vae` generators: tiny models fitted in-process on random 8x8 and 16x16 data."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.generators import create_generator, list_generators
from raysweep.synthesis.sampled import pool_order

TINY = {
    "dcgan": {"steps": 4, "batch_size": 8, "latent_dim": 8, "embed_dim": 4,
              "base_channels": 4, "num_threads": 1},
    "vae": {"steps": 4, "batch_size": 8, "latent_dim": 4, "hidden_dim": 16, "embed_dim": 4,
            "base_channels": 4, "num_threads": 1},
}


def tiny_data(shape: tuple[int, int, int], n: int = 12, num_classes: int = 3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % num_classes
    return images, labels, num_classes


@pytest.fixture(scope="module", params=[("dcgan", (16, 16, 1)), ("vae", (8, 8, 3))],
                ids=["dcgan-16x16x1", "vae-8x8x3"])
def fitted(request):
    name, shape = request.param
    images, labels, num_classes = tiny_data(shape)
    generator = create_generator(name, **TINY[name])
    messages: list[str] = []
    generator.fit(images, labels, num_classes, seed=0, progress=messages.append)
    return name, shape, generator, messages


def test_the_pools_of_two_seeds_hold_different_images(fitted):
    """torch keeps a seed's low 32 bits only: the store's per-image seeds must differ there."""
    _, _, generator, _ = fitted
    pools = [generator.sample(*pool_order(3, seed, 0, 6)).astype(int) for seed in (0, 1, 2)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert (np.abs(pools[a] - pools[b]).max(axis=(1, 2, 3)) > 1).all(), (a, b)


def test_registered():
    assert {"dcgan", "vae"} <= set(list_generators())


def test_fit_reports_finite_losses(fitted):
    name, _, generator, messages = fitted
    assert messages and messages[-1].startswith(f"{name} step 4/4")
    assert generator.last_losses and all(np.isfinite(v) for v in generator.last_losses.values())


def test_sample_shape_dtype_and_determinism(fitted):
    _, shape, generator, _ = fitted
    labels = np.array([0, 1, 2, 0, 1, 2, 2], dtype=np.int64)
    seeds = np.arange(100, 107)
    images = generator.sample(labels, seeds)
    assert images.shape == (7, *shape) and images.dtype == np.uint8
    assert images.std() > 0 and len(np.unique(images)) > 2  # an image, not a constant fill
    np.testing.assert_array_equal(generator.sample(labels, seeds), images)
    np.testing.assert_array_equal(generator.sample(labels[:3], seeds[:3]), images[:3])
    np.testing.assert_array_equal(generator.sample(labels[4:5], seeds[4:5]), images[4:5])
    assert not np.array_equal(images[0], images[3])  # same label, another seed
    assert generator.sample(labels[:0], seeds[:0]).shape == (0, *shape)


def test_sample_batch_size_does_not_change_images(fitted, tmp_path):
    name, _, generator, _ = fitted
    labels, seeds = np.array([2, 0, 1, 1, 0]), np.arange(5)
    generator.save(str(tmp_path))
    small = create_generator(name, num_threads=1, sample_batch_size=2)
    small.load(str(tmp_path))
    np.testing.assert_array_equal(small.sample(labels, seeds), generator.sample(labels, seeds))


def test_save_load_round_trip(fitted, tmp_path):
    name, _, generator, _ = fitted
    generator.save(str(tmp_path))
    loaded = create_generator(name, num_threads=1)  # default config; load replaces it
    loaded.load(str(tmp_path))
    assert loaded.config() == generator.config()
    labels, seeds = np.array([0, 1, 2, 1]), np.array([5, 6, 7, 8])
    np.testing.assert_array_equal(loaded.sample(labels, seeds), generator.sample(labels, seeds))


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_bad_input_names_the_value(name):
    generator = create_generator(name, **TINY[name])
    with pytest.raises(RuntimeError, match="fit"):
        generator.sample(np.array([0]), np.array([0]))
    images, labels, _ = tiny_data((8, 8, 1), n=4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        generator.fit(images, labels + 1, 2, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        create_generator(name, image_size=6)
