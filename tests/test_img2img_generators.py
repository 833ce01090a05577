"""Variations of real images: `ddpm.sample_img2img` (SDEdit through the sampler's scheduler) and
`sd-img2img` (diffusers' StableDiffusionImg2ImgPipeline), on tiny models built in-process.

The DDPM trains 3 steps at 8x8 on blocky random images and samples with 40 steps, so that the
last step of its schedule adds little noise (what a tiny strength runs); the Stable Diffusion
pipeline is `tiny.save_tiny_sd_pipeline`'s, at 32x32 with 4 steps.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny import save_tiny_sd_pipeline

from raysweep.errors import UserError
from raysweep.generators import create_generator
from raysweep.generators.base import denoising_steps

NUM_CLASSES = 3
SAMPLE_STEPS = 40
TINY = {"block_out_channels": (8, 16), "image_size": 8, "steps": 3, "batch_size": 8,
        "sample_steps": SAMPLE_STEPS, "warmup_steps": 1, "device": "cpu", "num_threads": 1}

# diffusers' DPM-Solver builds a numpy array from a tensor; numpy 2 warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _sources(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8x8 grey images of 2x2 blocks (so that a variant's distance to its source means
    something), and labels cycling over the classes."""
    blocks = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1)).astype(np.uint8)
    return np.repeat(np.repeat(blocks, 2, axis=1), 2, axis=2), np.arange(n) % NUM_CLASSES


@pytest.fixture(scope="module", params=["dpmsolver++", "ddim"])
def ddpm(request):
    images, labels = _sources()
    generator = create_generator("ddpm", **TINY, sampler=request.param)
    generator.fit(images, labels, NUM_CLASSES, seed=0)
    return generator


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_a_tiny_strength_stays_close_to_its_source_and_strength_1_does_not(ddpm):
    images, labels = _sources(6, seed=1)
    seeds = np.arange(6)
    close = ddpm.sample_img2img(images, labels, seeds, 0.01)
    far = ddpm.sample_img2img(images, labels, seeds, 1.0)
    assert close.shape == images.shape and close.dtype == np.uint8
    assert _mean_distance(close, images) < 10
    assert _mean_distance(far, images) > 40
    assert _mean_distance(close, images) < _mean_distance(
        ddpm.sample_img2img(images, labels, seeds, 0.5), images) < _mean_distance(far, images)


def test_at_strength_1_a_variant_no_longer_depends_on_its_source(ddpm):
    images, labels = _sources(6, seed=1)
    others, _ = _sources(6, seed=2)
    seeds = np.arange(6)
    a = ddpm.sample_img2img(images, labels, seeds, 1.0)
    b = ddpm.sample_img2img(others, labels, seeds, 1.0)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # ... and is then (nearly) what `sample` draws from the same seeds: pure noise.
    assert np.abs(a.astype(int) - ddpm.sample(labels, seeds).astype(int)).max() <= 2
    # Half way, it still does.
    assert _mean_distance(ddpm.sample_img2img(images, labels, seeds, 0.5),
                          ddpm.sample_img2img(others, labels, seeds, 0.5)) > 20


def test_variants_are_per_image_deterministic_across_batch_sizes(ddpm):
    images, labels = _sources(7, seed=3)
    targets, seeds = (labels + 1) % NUM_CLASSES, np.arange(100, 107)
    full = ddpm.sample_img2img(images, targets, seeds, 0.5)
    np.testing.assert_array_equal(ddpm.sample_img2img(images, targets, seeds, 0.5), full)
    ddpm.sample_batch_size = 2
    try:
        chunked = ddpm.sample_img2img(images, targets, seeds, 0.5)
    finally:
        ddpm.sample_batch_size = 250
    assert np.abs(chunked.astype(int) - full.astype(int)).max() <= 1
    # Image i depends on (source i, target i, seed i) only, not on its neighbours.
    moved = ddpm.sample_img2img(images[[4, 0]], targets[[4, 0]], seeds[[4, 0]], 0.5)
    assert np.abs(moved.astype(int) - full[[4, 0]].astype(int)).max() <= 1
    # Another seed or another target class gives another variant.
    for changed in (ddpm.sample_img2img(images[:1], targets[:1], np.array([999]), 0.5),
                    ddpm.sample_img2img(images[:1], (targets[:1] + 1) % NUM_CLASSES,
                                        seeds[:1], 0.5)):
        assert np.abs(changed.astype(int) - full[:1].astype(int)).max() > 1


def test_the_cost_scales_with_strength(ddpm):
    """The UNet runs once per sampler step left (guidance batches both halves into one call)."""
    images, labels = _sources(4)
    calls = []
    hook = ddpm.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        counts = []
        for strength in (0.01, 0.25, 0.5, 1.0):
            calls.clear()
            ddpm.sample_img2img(images, labels, np.arange(4), strength)
            counts.append(len(calls))
    finally:
        hook.remove()
    assert counts == [1, SAMPLE_STEPS // 4, SAMPLE_STEPS // 2, SAMPLE_STEPS]


def test_bad_requests_name_the_problem(ddpm):
    images, labels = _sources(2)
    for strength in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
            ddpm.sample_img2img(images, labels, np.arange(2), strength)
    with pytest.raises(ValueError, match=r"like the data fit\(\) saw"):
        ddpm.sample_img2img(np.zeros((2, 12, 12, 1), np.uint8), labels, np.arange(2), 0.5)
    with pytest.raises(ValueError, match="one label and one seed per image"):
        ddpm.sample_img2img(images, labels[:1], np.arange(2), 0.5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ddpm.sample_img2img(images, labels + 3, np.arange(2), 0.5)
    with pytest.raises(RuntimeError, match="fit"):
        create_generator("ddpm", **TINY).sample_img2img(images, labels, np.arange(2), 0.5)
    assert ddpm.sample_img2img(images[:0], labels[:0], np.arange(0), 0.5).shape == (0, 8, 8, 1)


def test_img2img_config_names_the_sampler_and_changes_with_it():
    config = create_generator("ddpm", **TINY).img2img_config()
    assert json.loads(json.dumps(config)) == config
    assert config == {"sampler": "dpmsolver++", "sample_steps": SAMPLE_STEPS, "guidance_scale": 2.0}
    assert create_generator("ddpm", **{**TINY, "sample_steps": 10}).img2img_config() != config


@pytest.mark.parametrize("steps, strength, expected", [
    (15, 1.0, 15), (15, 0.5, 7), (15, 0.25, 3), (15, 0.01, 1), (10, 0.3, 3), (25, 0.12, 3),
])
def test_denoising_steps_count_as_diffusers_does_with_at_least_one(steps, strength, expected):
    assert denoising_steps(steps, strength) == expected


# ---------------------------------------------------------------------- Stable Diffusion
SD_STEPS = 4
SIZE = 32  # generation size in pixels (16x16 latents)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.delenv("RAYSWEEP_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sd-img2img") / "pipeline"
    save_tiny_sd_pipeline(directory)  # plain text-to-image weights, as SD 1.5's img2img uses
    return str(directory)


def _sd(model: str, shape=(20, 24, 3), **options):
    generator = create_generator("sd-img2img", model=model, steps=SD_STEPS, height=SIZE,
                                 width=SIZE, device="cpu", **options)
    generator.fit(np.zeros((4, *shape), np.uint8), np.array([0, 1, 0, 1]), 2, seed=0,
                  class_names=["cat", "dog"])
    return generator


@pytest.fixture(scope="module")
def sd_generator(sd_dir):
    return _sd(sd_dir)


def test_sd_img2img_shapes_seeds_and_prefix(sd_generator):
    generator = sd_generator
    assert type(generator.pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    sources = np.random.default_rng(0).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    three = generator.sample_img2img(sources, np.array([0, 1, 0]), np.array([5, 6, 7]), 0.5)
    assert three.shape == sources.shape and three.dtype == np.uint8
    two = generator.sample_img2img(sources[:2], np.array([0, 1]), np.array([5, 6]), 0.5)
    assert np.abs(two.astype(int) - three[:2].astype(int)).max() <= 2
    other_seed = generator.sample_img2img(sources[:1], np.array([0]), np.array([8]), 0.5)
    assert np.abs(other_seed.astype(int) - three[:1].astype(int)).max() > 10
    with pytest.raises(TypeError, match="image-to-image needs source images"):
        generator.sample(np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        generator.sample_img2img(sources[:1], np.array([0]), np.array([1]), 0.0)


def test_sd_img2img_runs_strength_times_steps_and_keeps_grayscale(sd_dir):
    generator = _sd(sd_dir, shape=(28, 28, 1), guidance_scale=1.0)
    sources = np.random.default_rng(1).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    calls = []
    hook = generator.pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        counts = []
        for strength in (0.01, 0.5, 1.0):
            calls.clear()
            out = generator.sample_img2img(sources, np.array([1, 0]), np.array([3, 4]), strength)
            assert out.shape == (2, 28, 28, 1) and out.dtype == np.uint8
            counts.append(len(calls))
    finally:
        hook.remove()
    assert counts == [1, SD_STEPS // 2, SD_STEPS]


def test_sd_img2img_round_trips_through_save_and_load(sd_generator, tmp_path):
    generator = sd_generator
    sources = np.random.default_rng(2).integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    first = generator.sample_img2img(sources, np.array([1, 0]), np.array([3, 4]), 0.75)
    generator.save(str(tmp_path / "stored"))
    loaded = create_generator("sd-img2img", device="cpu")
    loaded.load(str(tmp_path / "stored"))
    assert loaded.config() == generator.config() and loaded.class_names == ("cat", "dog")
    assert loaded.img2img_config() == {"scheduler": "dpm++", "steps": SD_STEPS,
                                       "guidance_scale": 7.5}
    np.testing.assert_array_equal(
        loaded.sample_img2img(sources, np.array([1, 0]), np.array([3, 4]), 0.75), first)


def test_sd_img2img_without_weights_fails_with_one_line():
    generator = create_generator("sd-img2img", model="raysweep-tests/no-such-model")
    with pytest.raises(UserError) as info:
        generator.check_available()
    message = str(info.value)
    assert "\n" not in message and message.startswith("sd-img2img: ")
    assert "hf download raysweep-tests/no-such-model" in message
