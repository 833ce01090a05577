"""sd-text2img and sd-inpaint through their real `from_pretrained` path, on tiny pipelines.

The pipelines are built in-process the way diffusers' own tests build them, with random weights
(`tiny.save_tiny_sd_pipeline`, offline), then round-tripped through `save_pretrained`. 2
inference steps, 32x32 generation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import save_tiny_sd_pipeline

from raysweep.errors import UserError
from raysweep.generators import create_generator, list_generators

STEPS = 2
SIZE = 32  # generation size in pixels (16x16 latents)


@pytest.fixture(scope="module")
def text2img_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sd-text2img") / "pipeline"
    save_tiny_sd_pipeline(directory, inpaint=False)
    return str(directory)


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sd-inpaint") / "pipeline"
    save_tiny_sd_pipeline(directory, inpaint=True)
    return str(directory)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.delenv("RAYSWEEP_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _fitted(name: str, model: str, shape=(20, 24, 3), **options):
    generator = create_generator(name, model=model, steps=STEPS, height=SIZE, width=SIZE,
                                 device="cpu", **options)
    images = np.zeros((4, *shape), np.uint8)
    generator.fit(images, np.array([0, 1, 0, 1]), 2, seed=0, class_names=["cat", "dog"])
    return generator


def test_registered():
    assert {"sd-text2img", "sd-inpaint"} <= set(list_generators())


def test_text2img_shape_seeds_and_prefix(text2img_dir):
    generator = _fitted("sd-text2img", text2img_dir)
    three = generator.sample(np.array([0, 1, 0]), np.array([5, 6, 7]))
    assert three.shape == (3, 20, 24, 3) and three.dtype == np.uint8
    two = generator.sample(np.array([0, 1]), np.array([5, 6]))
    # The first images do not depend on what is asked after them (batch 3 vs batch 2).
    assert np.abs(two.astype(int) - three[:2].astype(int)).max() <= 2
    # Image 0 again, next to another seed: same image; another seed, another image.
    again = generator.sample(np.array([0, 0]), np.array([5, 8]))
    assert np.abs(again[0].astype(int) - three[0].astype(int)).max() <= 2
    assert np.abs(again[1].astype(int) - three[0].astype(int)).max() > 10
    assert generator.sample(np.zeros(0), np.zeros(0)).shape == (0, 20, 24, 3)


def test_text2img_grayscale_and_save_load(text2img_dir, tmp_path):
    generator = _fitted("sd-text2img", text2img_dir, shape=(28, 28, 1), guidance_scale=1.0)
    first = generator.sample(np.array([1, 0]), np.array([3, 4]))
    assert first.shape == (2, 28, 28, 1) and first.dtype == np.uint8
    generator.save(str(tmp_path / "stored"))
    loaded = create_generator("sd-text2img", device="cpu")
    loaded.load(str(tmp_path / "stored"))
    assert loaded.config() == generator.config()
    assert loaded.class_names == ("cat", "dog")
    np.testing.assert_array_equal(loaded.sample(np.array([1, 0]), np.array([3, 4])), first)


@pytest.mark.parametrize("scheduler, expected", [
    ("dpm++", "DPMSolverMultistepScheduler"), ("ddim", "DDIMScheduler"),
    ("euler", "EulerDiscreteScheduler"), ("pndm", "PNDMScheduler"), (None, "PNDMScheduler"),
])
def test_scheduler_option(text2img_dir, scheduler, expected):
    generator = _fitted("sd-text2img", text2img_dir, scheduler=scheduler)
    assert type(generator.pipe.scheduler).__name__ == expected
    assert generator.sample(np.array([0]), np.array([1])).shape == (1, 20, 24, 3)


def test_bad_options_and_missing_class_names(text2img_dir):
    with pytest.raises(ValueError, match="'unipc' is not one of"):
        create_generator("sd-text2img", scheduler="unipc")
    with pytest.raises(ValueError, match="only use the field"):
        create_generator("sd-inpaint", prompt_template="a photo of a {name}")
    generator = create_generator("sd-text2img", model=text2img_dir)
    with pytest.raises(ValueError, match="class_names"):
        generator.fit(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1), 2, seed=0)


def test_inpaint_keeps_pixels_outside_the_mask(inpaint_dir):
    generator = _fitted("sd-inpaint", inpaint_dir)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    masks = np.zeros((3, 20, 24), bool)
    masks[:, :, 12:] = True  # repaint the right half
    out = generator.sample_inpaint(images, masks, np.array([0, 1, 0]), np.array([5, 6, 7]))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :12], images[:, :, :12])
    assert np.abs(out[:, :, 12:].astype(int) - images[:, :, 12:].astype(int)).mean() > 10
    prefix = generator.sample_inpaint(images[:2], masks[:2], np.array([0, 1]), np.array([5, 6]))
    assert np.abs(prefix.astype(int) - out[:2].astype(int)).max() <= 2
    # Grayscale sources and soft masks.
    gray = images[:2, :, :, :1]
    soft = np.full((2, 20, 24), 0.25, np.float32)
    soft[:, :, 12:] = 1.0
    out_gray = generator.sample_inpaint(gray, soft, np.array([1, 0]), np.array([1, 2]))
    assert out_gray.shape == (2, 20, 24, 1)


def test_inpaint_needs_images_and_masks(inpaint_dir):
    generator = _fitted("sd-inpaint", inpaint_dir)
    with pytest.raises(TypeError, match="inpainting needs source images and masks"):
        generator.sample(np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="masks must have shape"):
        generator.sample_inpaint(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 4, 4)),
                                 np.array([0]), np.array([1]))


@pytest.mark.parametrize("name", ["sd-text2img", "sd-inpaint"])
def test_missing_weights_fail_with_one_line(name, tmp_path):
    generator = create_generator(name, model="raysweep-tests/no-such-model")
    with pytest.raises(UserError) as info:
        generator.check_available()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    assert "hf download raysweep-tests/no-such-model" in message
    assert "save_pretrained" in message and "RAYSWEEP_ALLOW_DOWNLOADS=1" in message
    # The load path fails the same way, before any compute.
    with pytest.raises(UserError, match="not available offline"):
        generator.fit(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1), 1, seed=0, class_names=["x"])

    empty = tmp_path / "empty"
    empty.mkdir()
    generator = create_generator(name, model=str(empty))
    with pytest.raises(UserError) as info:
        generator.check_available()
    assert "\n" not in str(info.value) and "model_index.json" in str(info.value)
    assert "save_pretrained" in str(info.value)

    # A folder with model_index.json but no components: from_pretrained's error, as one line.
    pipeline_class = "StableDiffusionInpaintPipeline" if name == "sd-inpaint" \
        else "StableDiffusionPipeline"
    (empty / "model_index.json").write_text(json.dumps(
        {"_class_name": pipeline_class, "_diffusers_version": "0.42.0",
         "unet": ["diffusers", "UNet2DConditionModel"]}))
    generator.check_available()
    with pytest.raises(UserError) as info:
        generator.fit(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1), 1, seed=0, class_names=["x"])
    assert "\n" not in str(info.value) and "save_pretrained" in str(info.value)


def test_downloads_opt_in(monkeypatch, text2img_dir):
    monkeypatch.setenv("RAYSWEEP_ALLOW_DOWNLOADS", "1")
    generator = create_generator("sd-text2img", model="raysweep-tests/no-such-model")
    assert generator.local_files_only is False
    generator.check_available()  # would download at load time: not an error here
    create_generator("sd-text2img", model=text2img_dir).check_available()


@pytest.mark.parametrize("shape", [(3, 16, 16, 3), (3, 16, 16, 1), (2, 20, 24, 3), (2, 20, 24, 1)])
def test_paste_back_on_tensors_matches_the_pil_path(shape):
    """The device path (no resize) and the Lanczos path give the pixels the numpy/PIL code gave."""
    from raysweep.generators.sd_inpaint import _paste_back, _to_data_shape

    rng = np.random.default_rng(1)
    sources = rng.integers(0, 256, shape, dtype=np.uint8)
    masks = rng.random(shape[:3]).astype(np.float32)
    masks[0] = masks[0] > 0.5
    painted = torch.rand(shape[0], 3, 16, 16, generator=torch.Generator().manual_seed(2))
    painted[0, :, 0, 0] = torch.tensor([0.5 / 255, 1.5 / 255, 254.5 / 255])  # ties round to even
    expected = _to_data_shape(painted.permute(0, 2, 3, 1).numpy(), *shape[1:]).astype(np.float32)
    alpha = masks[..., None]
    expected = np.clip(np.round(alpha * expected + (1 - alpha) * sources), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(_paste_back(painted, sources, masks), expected)


def test_auto_batch_size_on_cpu_and_an_explicit_one(inpaint_dir):
    assert _fitted("sd-inpaint", inpaint_dir).sample_batch_size == 8
    assert _fitted("sd-inpaint", inpaint_dir, batch_size=3).sample_batch_size == 3
    with pytest.raises(ValueError, match="batch_size must be >= 1 or 'auto', got 'big'"):
        create_generator("sd-text2img", batch_size="big")


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("batch_size", ["auto", 1])
def test_text2img_on_cuda_in_fp16(text2img_dir, batch_size):
    generator = create_generator("sd-text2img", model=text2img_dir, steps=STEPS, height=SIZE,
                                 width=SIZE, device="cuda", dtype="fp16", batch_size=batch_size,
                                 gpu_memory_fraction=0.5)
    generator.fit(np.zeros((4, 20, 24, 3), np.uint8), np.array([0, 1, 0, 1]), 2, seed=0,
                  class_names=["cat", "dog"])
    assert generator.pipe.unet.dtype == torch.float16 and generator.pipe.device.type == "cuda"
    assert generator.sample_batch_size >= 1
    three = generator.sample(np.array([0, 1, 0]), np.array([1, 2, 3]))
    assert three.shape == (3, 20, 24, 3) and three.dtype == np.uint8
    # Image i depends only on its seed: a shorter request is a prefix, whatever the batch.
    one = generator.sample(np.array([0]), np.array([1]))
    assert np.abs(one.astype(int) - three[:1].astype(int)).max() <= 2


@pytest.mark.gpu
@GPU
def test_inpaint_on_cuda_in_fp16_keeps_pixels_outside_the_mask(inpaint_dir):
    generator = create_generator("sd-inpaint", model=inpaint_dir, steps=STEPS, height=SIZE,
                                 width=SIZE, device="cuda:0", dtype="fp16", batch_size=2,
                                 gpu_memory_fraction=0.5)
    generator.fit(np.zeros((4, SIZE, SIZE, 3), np.uint8), np.array([0, 1, 0, 1]), 2, seed=0,
                  class_names=["cat", "dog"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((3, SIZE, SIZE), np.float32)
    masks[:, :, SIZE // 2:] = 1.0
    out = generator.sample_inpaint(images, masks, np.array([0, 1, 0]), np.array([5, 6, 7]))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :SIZE // 2], images[:, :, :SIZE // 2])
    assert np.abs(out[:, :, SIZE // 2:].astype(int) - images[:, :, SIZE // 2:].astype(int)).mean() > 10


def test_compile_takes_a_torch_compile_mode_and_refuses_others():
    assert create_generator("sd-inpaint", compile="reduce-overhead").compile == "reduce-overhead"
    assert create_generator("sd-text2img", compile=True).compile is True
    with pytest.raises(ValueError, match="compile 'fast' is not true, false or one of default"):
        create_generator("sd-text2img", compile="fast")
