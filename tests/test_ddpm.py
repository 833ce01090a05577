"""The `ddpm` generator: fit, sample, per-image seeds, nested prefixes, save/load, registry; and
every generator's config, read from its constructor.

A tiny config (two UNet levels of 8 and 16 channels at 8x8, 3 training steps, 2 sampling
steps) keeps the whole file to a few seconds on a CPU.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch

from raysweep.generators import create_generator, list_generators
from raysweep.generators.ddpm import DDPMGenerator
from raysweep.synthesis.sampled import pool_order

# One thread: two threads on a busy 2-core machine can make tiny ops ten times slower.
TINY = {"block_out_channels": (8, 16), "image_size": 8, "steps": 3, "batch_size": 8,
        "sample_steps": 2, "warmup_steps": 1, "device": "cpu", "num_threads": 1}
NUM_CLASSES = 3

# diffusers' DPM-Solver builds a numpy array from a tensor; numpy 2 warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _data(n: int = 24, size: int = 12, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % NUM_CLASSES
    return images, labels


@pytest.fixture(scope="module")
def fitted() -> tuple[DDPMGenerator, list[str]]:
    images, labels = _data()
    messages: list[str] = []
    gen = create_generator("ddpm", **TINY)
    gen.fit(images, labels, NUM_CLASSES, seed=0, progress=messages.append)
    return gen, messages


def test_fit_reports_progress_and_finite_loss(fitted):
    gen, messages = fitted
    assert math.isfinite(gen.last_losses["loss"])
    assert messages and "step 3/3" in messages[-1] and "loss" in messages[-1]


def test_sample_shape_dtype_and_range(fitted):
    gen, _ = fitted
    out = gen.sample(np.array([0, 1, 2, 0]), np.array([5, 6, 7, 8]))
    assert out.shape == (4, 12, 12, 1)  # resized back from the 8x8 model to the data's 12x12
    assert out.dtype == np.uint8
    assert out.std() > 0 and len(np.unique(out)) > 2  # an image, not a constant fill
    assert gen.sample(np.array([], np.int64), np.array([], np.int64)).shape == (0, 12, 12, 1)


def test_per_image_seed_determinism_and_nested_prefix(fitted):
    gen, _ = fitted
    labels = np.array([0, 1, 2, 2, 1, 0, 1])
    seeds = np.array([10, 11, 12, 13, 14, 15, 16])
    full = gen.sample(labels, seeds)
    again = gen.sample(labels, seeds)
    np.testing.assert_array_equal(full, again)
    prefix = gen.sample(labels[:3], seeds[:3])
    assert np.abs(prefix.astype(int) - full[:3].astype(int)).max() <= 1
    # Image i depends on (label i, seed i) only, not on its position or its neighbours.
    moved = gen.sample(np.array([labels[4], labels[0]]), np.array([seeds[4], seeds[0]]))
    assert np.abs(moved.astype(int) - full[[4, 0]].astype(int)).max() <= 1
    # Another seed gives another image.
    other = gen.sample(labels[:1], np.array([999]))
    assert np.abs(other.astype(int) - full[:1].astype(int)).max() > 1


def test_the_pools_of_two_seeds_hold_different_images(fitted):
    """Per-image seeds as the store orders them: torch keeps a seed's low 32 bits only, and
    seeds `s << 32 | i` made every seed's pool the same images (ratio.yaml's three pools)."""
    gen, _ = fitted
    pools = [gen.sample(*pool_order(NUM_CLASSES, seed, 0, 6)).astype(int) for seed in (0, 1, 2)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert (np.abs(pools[a] - pools[b]).max(axis=(1, 2, 3)) > 1).all(), (a, b)


def test_small_sample_batches_give_the_same_images(fitted):
    gen, _ = fitted
    labels, seeds = np.array([0, 1, 2, 0, 1]), np.arange(5)
    full = gen.sample(labels, seeds)
    gen.sample_batch_size = 2
    try:
        chunked = gen.sample(labels, seeds)
    finally:
        gen.sample_batch_size = 250
    assert np.abs(chunked.astype(int) - full.astype(int)).max() <= 1


def test_save_load_round_trip(fitted, tmp_path):
    gen, _ = fitted
    gen.save(str(tmp_path))
    assert (tmp_path / "unet" / "config.json").is_file()
    loaded = create_generator("ddpm")  # default config: load() restores the saved one
    loaded.load(str(tmp_path))
    assert loaded.config() == gen.config()
    labels, seeds = np.array([0, 1, 2]), np.array([1, 2, 3])
    np.testing.assert_array_equal(loaded.sample(labels, seeds), gen.sample(labels, seeds))


def test_fit_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    images, labels = _data(n=12)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = DDPMGenerator(**{**TINY, "steps": 2})
    a.fit(images, labels, NUM_CLASSES, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = DDPMGenerator(**{**TINY, "steps": 2})
    b.fit(images, labels, NUM_CLASSES, seed=7)
    for pa, pb in zip(a.unet.parameters(), b.unet.parameters()):
        assert torch.equal(pa, pb)


def test_rgb_and_no_guidance():
    images, labels = _data(n=12, size=8, channels=3)
    gen = DDPMGenerator(**{**TINY, "steps": 1, "cond_dropout": 0.0, "guidance_scale": 1.0,
                           "sampler": "ddim", "image_size": None})
    gen.fit(images, labels, NUM_CLASSES, seed=0)
    assert gen.sample(np.array([0, 2]), np.array([0, 1])).shape == (2, 8, 8, 3)


# A valid value other than the default's (or the resolved "auto"'s) for the options a generic
# change (a flipped bool, int + 1, float / 2) does not fit.
OTHER_VALUES = {
    "block_out_channels": [8, 16], "norm_num_groups": 4, "image_size": 8, "weight_decay": 0.01,
    "beta_schedule": "linear", "prediction_type": "epsilon", "sampler": "ddim", "loss": "bce",
    "reconstruction": "mse", "model": "raysweep-tests/another-model",
    "prompt_template": "a picture of a {label}", "negative_prompt": "blurry", "scheduler": "ddim",
    "height": 64, "width": 64, "dtype": "fp16", "attention": "default", "batch_size": 4,
    "compile": "reduce-overhead", "gpu_memory_fraction": 0.5, "device": "cuda:1",
    "num_threads": 2, "fill": 0.5,
}


def _other_value(name: str, value):
    if name in OTHER_VALUES and OTHER_VALUES[name] != value:
        return OTHER_VALUES[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float) and value:
        return value / 2
    raise AssertionError(f"add a valid value other than {value!r} for {name!r} to OTHER_VALUES")


def _keys(generator) -> dict[str, str]:
    from raysweep.store.store import content_key

    return {"config": content_key(generator.config()),
            "inpaint": content_key(getattr(generator, "inpaint_config", dict)()),
            "img2img": content_key(getattr(generator, "img2img_config", dict)())}


@pytest.mark.parametrize("name", list_generators())
def test_every_constructor_argument_is_hashed_or_declared_runtime(name):
    """config() is every constructor argument (resolved) but the declared runtime and inpaint
    options; changing any hashed one changes the key, changing a runtime one changes no key."""
    from raysweep.generators import generator_class

    cls = generator_class(name)
    parameters = set(inspect.signature(cls).parameters)
    base = create_generator(name, **({"device": "cpu"} if "device" in parameters else {}))
    config = base.config()
    assert json.loads(json.dumps(config)) == config
    hashed = set(config) - {"generator"}
    assert hashed | cls.runtime_options | cls.inpaint_options == parameters
    assert not hashed & (cls.runtime_options | cls.inpaint_options)
    # The recorded options rebuild the same generator: what load() does with a saved config.
    options = base.options()
    assert set(options) == parameters
    assert create_generator(name, **options).options() == options
    for parameter in sorted(parameters):
        changed = create_generator(name, **{**options,
                                            parameter: _other_value(parameter, options[parameter])})
        assert changed.options()[parameter] != options[parameter], parameter
        keys, before = _keys(changed), _keys(base)
        if parameter in hashed:
            assert keys["config"] != before["config"], parameter
        elif parameter in cls.inpaint_options:
            assert keys == {**before, "inpaint": keys["inpaint"]} and keys != before, parameter
        else:
            assert keys == before, parameter


def test_a_number_is_one_option_however_it_is_written():
    """YAML's `2` and `2.0` give the same key, and so do a default and the same value passed."""
    written = DDPMGenerator(**{**TINY, "lr": 3e-3, "guidance_scale": 2, "steps": 3.0}).config()
    assert written == DDPMGenerator(**{**TINY, "guidance_scale": 2.0}).config()
    assert isinstance(written["guidance_scale"], float) and isinstance(written["steps"], int)
    with pytest.raises(ValueError, match="steps must be a whole number >= 1, got 2.5"):
        DDPMGenerator(steps=2.5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMGenerator(prediction_type="x0")
    with pytest.raises(ValueError, match="norm_num_groups"):
        DDPMGenerator(block_out_channels=(12, 16), norm_num_groups=8)
    with pytest.raises(ValueError, match="cond_dropout"):
        DDPMGenerator(cond_dropout=0.0, guidance_scale=3.0)
    gen = DDPMGenerator(**TINY)
    with pytest.raises(RuntimeError, match="fit"):
        gen.sample(np.array([0]), np.array([0]))
    images, labels = _data(n=6)
    with pytest.raises(ValueError, match="labels"):
        gen.fit(images, labels + 5, NUM_CLASSES, seed=0)
    with pytest.raises(ValueError, match="multiple of 2"):
        DDPMGenerator(**{**TINY, "image_size": 9}).fit(images, labels, NUM_CLASSES, seed=0)


def test_registry():
    assert "ddpm" in list_generators()
    assert isinstance(create_generator("ddpm", steps=5), DDPMGenerator)
    with pytest.raises(KeyError, match="ddpm"):
        create_generator("no-such-generator")


@pytest.mark.parametrize("name, cpu, cuda", [
    ("ddpm", {"steps": 1000, "image_size": 16, "block_out_channels": [16, 32, 64]},
     {"steps": 4000, "image_size": None, "block_out_channels": [32, 64, 128]}),
    ("dcgan", {"steps": 1500, "base_channels": 32}, {"steps": 5000, "base_channels": 64}),
    ("vae", {"steps": 2000, "base_channels": 32}, {"steps": 5000, "base_channels": 64}),
])
def test_auto_defaults_resolve_from_the_device_and_are_what_is_hashed(name, cpu, cuda):
    from raysweep.generators import create_generator
    from raysweep.store.store import content_key

    on_cpu, on_gpu = (create_generator(name, device=d).config() for d in ("cpu", "cuda:1"))
    assert {k: on_cpu[k] for k in cpu} == cpu
    assert {k: on_gpu[k] for k in cuda} == cuda
    assert content_key(on_cpu) != content_key(on_gpu)
    # An explicit value wins over the device's default, on either device.
    explicit = create_generator(name, device="cuda", steps=7).config()
    assert explicit["steps"] == 7 and content_key(explicit) != content_key(on_gpu)
    # The resolved config rebuilds the same generator (what load() does from a stored config).
    rebuilt = dict(on_gpu)
    rebuilt.pop("generator")
    assert create_generator(name, device="cpu", **rebuilt).config() == on_gpu


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_and_sample_on_cuda_and_the_pool_does_not_depend_on_the_batch_size(tmp_path):
    images, labels = _data()
    gen = DDPMGenerator(**{**TINY, "device": "cuda", "steps": 20})
    gen.fit(images, labels, NUM_CLASSES, seed=0)
    assert next(gen.unet.parameters()).device.type == "cuda" and math.isfinite(gen.last_losses["loss"])
    pool_labels, seeds = np.arange(12) % NUM_CLASSES, np.arange(12)
    whole = gen.sample(pool_labels, seeds)
    assert whole.shape == (12, 12, 12, 1) and whole.std() > 0
    for batch in (1, 5):
        gen.sample_batch_size = batch
        chunked = gen.sample(pool_labels, seeds)
        assert np.abs(chunked.astype(int) - whole.astype(int)).max() <= 1, batch
    # Weights saved on the GPU load back on the GPU and give the same images.
    gen.save(str(tmp_path))
    loaded = DDPMGenerator(device="cuda:0")
    loaded.load(str(tmp_path))
    assert loaded.config() == gen.config()
    np.testing.assert_array_equal(loaded.sample(pool_labels[:4], seeds[:4]),
                                  gen.sample(pool_labels[:4], seeds[:4]))
