"""`sd-inpaint`: pretrained Stable Diffusion repaints masked regions of real images (diffusers).

Self-contained on purpose (diffusers' single-file policy); its twin `sd_text2img.py` repeats the
loading code rather than sharing a base class.

Nothing is trained: `fit` loads a `StableDiffusionInpaintPipeline` with `from_pretrained` (a
hub id or a local folder written by `save_pretrained`) and remembers the class names, which fill
the prompt template ("a photo of a {label}"). `sample_inpaint(images, masks, labels, seeds)`
repaints the masked pixels of real training images (mask 1 = repaint; the masks come from a
saliency map) and returns images of the sources' own shape. The pipeline's output is pasted
back into the source through the mask, so pixels outside the mask are the source's exactly:
the pipeline itself re-encodes the whole image through the VAE, which would otherwise blur
the pixels it was asked to keep, and `mask_fraction` would not mean what it says.

Offline by default: weights come from a local folder or the local hub cache, and a missing
model fails before any compute with one line that says how to provide it
(`check_available()`); RAYSWEEP_ALLOW_DOWNLOADS=1 lets diffusers download.

Determinism: image i's initial latents and its VAE posterior sample come from
`torch.Generator().manual_seed(seeds[i])` on the CPU (one generator per image, as diffusers
recommends for reproducible results across devices), so image i depends only on the weights,
the options, `images[i]`, `masks[i]`, `labels[i]` and `seeds[i]`; the first n images of a
request are the same whatever is asked after them (up to float rounding across batch sizes).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from raysweep.devices import batch_size_for_memory, cap_gpu_memory, memory_budget
from raysweep.generators.base import register_generator
from raysweep.generators.sd_common import ClassPrompts, _to_data_shape
from raysweep.hub import (check_weights_available, downloads_allowed, weights_error,
                                     weights_fingerprint)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
_CONFIG_FILE = "raysweep_sd_inpaint.json"
# Scheduler names -> diffusers classes; None keeps the scheduler saved with the pipeline.
_SCHEDULERS = {"dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler",
               "euler": "EulerDiscreteScheduler", "pndm": "PNDMScheduler"}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ATTENTION = ("sdpa", "default")
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Activation memory per image at 512x512 in fp16 with guidance: SD 1.5 inpainting peaked at
# 2.5 GiB at batch 1 and 16.1 GiB at batch 32 on an H100 (issue 7), 0.44 GiB per image.
_BYTES_PER_IMAGE_512 = 0.44 * 2**30


def _rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3) -> uint8 (..., 1) with Pillow's integer formula for convert("L"), so the
    device path gives the same pixels as the PIL path."""
    r, g, b = rgb.to(torch.int32).unbind(-1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[..., None]


def _paste_back(painted: torch.Tensor, sources: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pipeline output (N, 3, h, w) in [0, 1] -> the sources with their masked pixels replaced.

    Where the pipeline ran at the sources' size, everything stays on the pipeline's device and
    only the uint8 result crosses to the host; otherwise the output is resized with Lanczos on
    the host, as before.
    """
    height, width, channels = sources.shape[1:]
    if tuple(painted.shape[-2:]) == (height, width):
        # The same float32 rounding as the host path (np.round and torch.round: half to even).
        pixels = painted.float().permute(0, 2, 3, 1).mul(255.0).round().clamp(0, 255)
        pixels = pixels.to(torch.uint8)
        if channels == 1:
            pixels = _rgb_to_gray(pixels)
    else:
        host = painted.float().permute(0, 2, 3, 1).cpu().numpy()
        pixels = torch.from_numpy(_to_data_shape(host, height, width, channels))
    device = pixels.device
    alpha = torch.from_numpy(masks).to(device, non_blocking=True)[..., None]
    source = torch.from_numpy(sources).to(device, non_blocking=True).float()
    blended = alpha * pixels.float() + (1.0 - alpha) * source
    return blended.round().clamp(0, 255).to(torch.uint8).cpu().numpy()


@register_generator("sd-inpaint")
class StableDiffusionInpaintGenerator(ClassPrompts):
    """Pretrained Stable Diffusion inpainting (diffusers `StableDiffusionInpaintPipeline`).

    Args:
        model: hub id or local folder written by `save_pretrained` (an inpainting UNet with 9
            input channels, or a plain text-to-image one, which diffusers also inpaints with).
        prompt_template: the prompt for a class; "{label}" becomes the class's prompt name.
        negative_prompt: what to steer away from (classifier-free guidance); None: nothing.
        guidance_scale: classifier-free guidance weight (1.0 disables guidance).
        steps: denoising steps per image (diffusers runs about `strength * steps` of them).
        strength: how far the masked region is noised before denoising: 1.0 ignores what was
            there; lower values keep more of the source's structure under the mask.
        scheduler: "dpm++" (DPM-Solver++ multistep), "ddim", "euler" or "pndm"; None keeps the
            scheduler saved with the pipeline (PNDM for Stable Diffusion 1.5).
        height: generation height in pixels (a multiple of 8); None: the pipeline's default
            (512 for Stable Diffusion 1.5). Sources and masks are resized to it, and the
            results back to the sources' size.
        width: generation width, like `height`.
        dtype: "fp32", "fp16", "bf16", or "auto" (fp16 on CUDA, fp32 elsewhere).
        safety_checker: keep the pipeline's NSFW checker, which blacks out flagged images
            (each flagged image is reported with a warning); False loads the pipeline without it.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... Not part of `config()`.
        batch_size: images per pipeline call in `sample`; "auto": on CUDA the largest power
            of two up to 32 that fits this process's memory share after loading, 8 on CPU.
            Not part of `config()`.
        attention: "sdpa" (PyTorch's scaled_dot_product_attention in the UNet) or "default"
            (whatever the pipeline loads with). Not part of `config()`.
        channels_last: put the UNet and VAE in channels-last memory format (faster convolutions
            on recent GPUs). Not part of `config()`.
        compile: `torch.compile` the UNet (slow first call, faster afterwards): True, or a
            torch.compile mode: "reduce-overhead" (CUDA graphs: fewer kernel launches),
            "max-autotune", "max-autotune-no-cudagraphs". Not part of `config()`.
        gpu_memory_fraction: on CUDA, cap this process's share of GPU memory
            (`torch.cuda.set_per_process_memory_fraction`), for actors that share a GPU;
            None: no cap.
        local_files_only: never download; None: True unless RAYSWEEP_ALLOW_DOWNLOADS=1.
    """

    name = "sd-inpaint"
    families = ("inpaint",)  # it repaints masks only (see synthesis.kinds)

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        prompt_template: str = "a photo of a {label}",
        negative_prompt: str | None = None,
        guidance_scale: float = 7.5,
        steps: int = 25,
        strength: float = 1.0,
        scheduler: str | None = "dpm++",
        height: int | None = None,
        width: int | None = None,
        dtype: str = "auto",
        safety_checker: bool = True,
        device: str = "auto",
        batch_size: int | str = "auto",
        attention: str = "sdpa",
        channels_last: bool = False,
        compile: bool | str = False,
        gpu_memory_fraction: float | None = None,
        local_files_only: bool | None = None,
    ) -> None:
        if not str(model).strip():
            raise ValueError(f"{self.name}: model must be a hub id or a local folder, "
                             f"got {model!r}")
        try:
            prompt_template.format(label="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"{self.name}: prompt_template {prompt_template!r} may only use "
                             f"the field {{label}}") from err
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"{self.name}: strength must be in (0, 1], got {strength!r}")
        if scheduler is not None and scheduler not in _SCHEDULERS:
            raise ValueError(f"{self.name}: scheduler {scheduler!r} is not one of "
                             f"{', '.join(_SCHEDULERS)} (or null for the pipeline's own)")
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"{self.name}: dtype {dtype!r} is not one of auto, "
                             f"{', '.join(_DTYPES)}")
        if attention not in _ATTENTION:
            raise ValueError(f"{self.name}: attention {attention!r} is not one of "
                             f"{', '.join(_ATTENTION)}")
        if batch_size != "auto" and (isinstance(batch_size, str) or int(batch_size) < 1):
            raise ValueError(f"{self.name}: batch_size must be >= 1 or 'auto', got {batch_size!r}")
        for key, value in (("steps", steps),):
            if int(value) < 1:
                raise ValueError(f"{self.name}: {key} must be >= 1, got {value!r}")
        for key, value in (("height", height), ("width", width)):
            if value is not None and (int(value) < 8 or int(value) % 8):
                raise ValueError(f"{self.name}: {key} must be a positive multiple of 8 or null, "
                                 f"got {value!r}")
        if gpu_memory_fraction is not None and not 0.0 < float(gpu_memory_fraction) <= 1.0:
            raise ValueError(f"{self.name}: gpu_memory_fraction must be in (0, 1] or null, "
                             f"got {gpu_memory_fraction!r}")
        self.model = str(model)
        self.prompt_template = str(prompt_template)
        self.negative_prompt = None if negative_prompt is None else str(negative_prompt)
        self.guidance_scale = float(guidance_scale)
        self.steps = int(steps)
        self.strength = float(strength)
        self.scheduler = scheduler
        self.height = None if height is None else int(height)
        self.width = None if width is None else int(width)
        self.dtype = str(dtype)
        self.safety_checker = bool(safety_checker)
        self.device = str(device)
        self.batch_size = batch_size if batch_size == "auto" else int(batch_size)
        self.sample_batch_size: int | None = None  # batch_size resolved when the pipeline loads
        self.attention = str(attention)
        self.channels_last = bool(channels_last)
        if isinstance(compile, str) and compile not in _COMPILE_MODES:
            raise ValueError(f"{self.name}: compile {compile!r} is not true, false or one of "
                             f"{', '.join(_COMPILE_MODES)}")
        self.compile = compile if isinstance(compile, str) else bool(compile)
        self.gpu_memory_fraction = None if gpu_memory_fraction is None \
            else float(gpu_memory_fraction)
        self.local_files_only = (not downloads_allowed()) if local_files_only is None \
            else bool(local_files_only)
        self.pipe = None
        # What fit() saw, needed to sample: set by fit() or load().
        self.data_shape: tuple[int, int, int] | None = None  # (H, W, C)
        self.class_names: tuple[str, ...] | None = None
        self.weights_fingerprint: str | None = None
        self.load_seconds: float | None = None
        self.nsfw_flagged = 0
        # Each class's prompt through the text encoder once (set with class_names), so a batch
        # only indexes them: the text encoder is off the sampling path.
        self.prompt_embeds: torch.Tensor | None = None
        self.negative_prompt_embeds: torch.Tensor | None = None

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        """Every option that changes the samples (hashed into pool keys)."""
        return {
            "generator": self.name, "model": self.model, "prompt_template": self.prompt_template,
            "negative_prompt": self.negative_prompt, "guidance_scale": self.guidance_scale,
            "steps": self.steps, "strength": self.strength, "scheduler": self.scheduler,
            "height": self.height, "width": self.width, "dtype": self.dtype,
            "safety_checker": self.safety_checker,
        }

    def check_available(self) -> None:
        """Raise `raysweep.errors.UserError` (one line) unless the weights load offline."""
        check_weights_available(self.model, generator=self.name,
                                local_files_only=self.local_files_only)

    # ------------------------------------------------------------------ parts
    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def _load_pipeline(self):
        import diffusers
        from diffusers import StableDiffusionInpaintPipeline
        from diffusers.models.attention_processor import AttnProcessor2_0
        from huggingface_hub.errors import HFValidationError
        from packaging.version import Version

        # 1. Find the weights without the network (unless downloads are allowed).
        folder = check_weights_available(self.model, generator=self.name,
                                         local_files_only=self.local_files_only)
        device = self._torch_device()
        # 2. Cap this process's GPU memory before anything is allocated there.
        if device.type == "cuda" and self.gpu_memory_fraction is not None:
            cap_gpu_memory(self.gpu_memory_fraction, device)
        # 3. Load.
        no_checker = {} if self.safety_checker else \
            {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        # diffusers 0.40 renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns).
        dtype_key = "dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype"
        try:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                self.model, **{dtype_key: self._torch_dtype(device)},
                local_files_only=self.local_files_only, **no_checker)
        except (OSError, HFValidationError) as err:
            raise weights_error(self.name, self.model, err) from err
        if folder is None:  # downloaded just now
            folder = check_weights_available(self.model, generator=self.name)
        # 4. Scheduler, device and speed options.
        if self.scheduler is not None:
            scheduler_class = getattr(diffusers, _SCHEDULERS[self.scheduler])
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        pipe = pipe.to(device)
        if self.attention == "sdpa":
            pipe.unet.set_attn_processor(AttnProcessor2_0())
            if device.type == "cuda":
                # One matmul for q, k and v instead of three (SDPA stays the attention kernel):
                # the same sums in another order, so only on CUDA, where float rounding already
                # differs from the CPU's; CPU outputs stay what they were.
                pipe.fuse_qkv_projections()
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.compile:
            mode = self.compile if isinstance(self.compile, str) else None
            pipe.unet = torch.compile(pipe.unet, mode=mode)
        pipe.set_progress_bar_config(disable=True)
        self.sample_batch_size = self._resolve_batch_size(pipe, device)
        return pipe, weights_fingerprint(folder)

    def _resolve_batch_size(self, pipe, device: torch.device) -> int:
        """`batch_size`, or for "auto" what fits in this process's memory share (CUDA)."""
        if self.batch_size != "auto":
            return self.batch_size
        if device.type != "cuda":
            return 8
        scale = pipe.vae_scale_factor
        height = self.height or pipe.unet.config.sample_size * scale
        width = self.width or pipe.unet.config.sample_size * scale
        per_image = _BYTES_PER_IMAGE_512 * height * width / 512**2
        per_image *= pipe.unet.dtype.itemsize / 2  # measured in fp16; fp32 takes twice that
        if self.guidance_scale <= 1:
            per_image /= 2  # one UNet batch per step instead of two
        return batch_size_for_memory(0.9 * memory_budget(device), per_image)

    # ------------------------------------------------------------------ fit
    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None,
            class_names: Sequence[str] | None = None) -> None:
        """Load the pipeline and remember the class names; no training.

        Args:
            images: the training images, uint8 (N, H, W, C); only their shape is recorded (the
                sources to repaint come with each `sample_inpaint` call).
            labels: their labels (unused: nothing is trained).
            num_classes: the number of classes.
            seed: unused (nothing is trained); accepted for the Generator protocol.
            progress: called with a line of progress text.
            class_names: one prompt phrase per class, filling "{label}" in the prompt template
                (pass `ImageDataset.extra.get("prompt_names") or class_names`).
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}.fit: images must be uint8 (N, H, W, 1|3), got "
                             f"{images.dtype} {images.shape}")
        if class_names is None or len(class_names) != num_classes:
            raise ValueError(f"{self.name}.fit: class_names must give one prompt phrase per class "
                             f"({num_classes}), got {class_names!r}")
        started = time.perf_counter()
        if progress is not None:
            progress(f"{self.name}: loading {self.model}")
        self.pipe, self.weights_fingerprint = self._load_pipeline()
        self.data_shape = tuple(int(s) for s in images.shape[1:])
        self.class_names = tuple(str(c) for c in class_names)
        self._encode_class_prompts()
        self.load_seconds = time.perf_counter() - started
        if progress is not None:
            progress(f"{self.name}: loaded in {self.load_seconds:.0f}s; prompts like "
                     f"{self.prompt_template.format(label=self.class_names[0])!r}")

    # ------------------------------------------------------------------ sample
    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Not available: inpainting repaints real images, so it needs them and their masks."""
        raise TypeError(f"{self.name}: inpainting needs source images and masks; call "
                        f"sample_inpaint(images, masks, labels, seeds) instead of "
                        f"sample(labels, seeds)")

    @torch.no_grad()
    def sample_inpaint(self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       seeds: np.ndarray) -> np.ndarray:
        """Repaint the masked pixels of each source image with its class's prompt.

        Args:
            images: the sources, uint8 (N, H, W, C), C = 1 or 3.
            masks: float in [0, 1] or bool, (N, H, W); 1 = repaint. The pipeline repaints where
                mask >= 0.5; the result is blended back into the source with the mask itself.
            labels: class per image (fills the prompt template).
            seeds: seed per image.

        Returns:
            uint8 (N, H, W, C): the sources with their masked pixels repainted.
        """
        # 1. Check inputs.
        if self.pipe is None or self.class_names is None:
            raise RuntimeError(f"{self.name}.sample_inpaint: call fit() or load() first")
        images = np.asarray(images)
        masks = np.asarray(masks)
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        seeds = np.asarray(seeds).astype(np.int64).reshape(-1)
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}.sample_inpaint: images must be uint8 (N, H, W, 1|3), "
                             f"got {images.dtype} {images.shape}")
        if masks.shape != images.shape[:3]:
            raise ValueError(f"{self.name}.sample_inpaint: masks must have shape (N, H, W) = "
                             f"{images.shape[:3]}, got {masks.shape}")
        masks = masks.astype(np.float32)
        if masks.size and (masks.min() < 0.0 or masks.max() > 1.0):
            raise ValueError(f"{self.name}.sample_inpaint: masks must lie in [0, 1], got "
                             f"[{masks.min()}, {masks.max()}]")
        if not labels.shape == seeds.shape == images.shape[:1]:
            raise ValueError(f"{self.name}.sample_inpaint: need one label and one seed per image, "
                             f"got {images.shape[0]} images, {labels.shape[0]} labels and "
                             f"{seeds.shape[0]} seeds")
        if labels.size == 0:
            return images.copy()
        if labels.min() < 0 or labels.max() >= len(self.class_names):
            raise ValueError(f"{self.name}.sample_inpaint: labels must lie in "
                             f"[0, {len(self.class_names)})")
        height, width, channels = images.shape[1:]
        out = []
        for start in range(0, labels.size, self.sample_batch_size):
            chunk = slice(start, start + self.sample_batch_size)
            # 2. Sources as RGB and masks as "L" images; the pipeline resizes both.
            sources = [Image.fromarray(image[..., 0] if channels == 1 else image).convert("RGB")
                       for image in images[chunk]]
            mask_images = [Image.fromarray(np.round(mask * 255.0).astype(np.uint8))
                           for mask in masks[chunk]]
            # 3. Inpaint.
            result = self.pipe(
                **self._prompt_embeds(labels[chunk]), image=sources, mask_image=mask_images,
                height=self.height, width=self.width, strength=self.strength,
                num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                generator=[torch.Generator().manual_seed(int(s)) for s in seeds[chunk]],
                output_type="pt")
            self._count_flagged(result)
            # 4. Back to the sources' shape, pasted into the sources through the masks (on the
            #    pipeline's device when no resize is needed).
            out.append(_paste_back(result.images, images[chunk], masks[chunk]))
        return np.concatenate(out)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str) -> None:
        """Write raysweep_sd_inpaint.json (options, class names, data shape and a fingerprint of
        the weights); the weights themselves stay where `model` points."""
        if self.pipe is None:
            raise RuntimeError(f"{self.name}.save: nothing to save; call fit() first")
        os.makedirs(directory, exist_ok=True)
        state = {"config": self.config(), "data_shape": list(self.data_shape),
                 "class_names": list(self.class_names),
                 "weights_fingerprint": self.weights_fingerprint}
        tmp = os.path.join(directory, _CONFIG_FILE + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(directory, _CONFIG_FILE))

    def load(self, directory: str) -> None:
        """Load what `save` wrote; the saved options replace this instance's, the pipeline is
        loaded again from `model`."""
        path = os.path.join(directory, _CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name}.load: {path} not found; is {directory!r} a "
                                    f"directory written by {type(self).__name__}.save?")
        with open(path) as handle:
            state = json.load(handle)
        config = dict(state["config"])
        config.pop("generator", None)
        fresh = type(self)(**config, device=self.device, batch_size=self.batch_size,
                           attention=self.attention, channels_last=self.channels_last,
                           compile=self.compile, gpu_memory_fraction=self.gpu_memory_fraction,
                           local_files_only=self.local_files_only)
        self.__dict__.update(fresh.__dict__)
        started = time.perf_counter()
        self.pipe, self.weights_fingerprint = self._load_pipeline()
        if self.weights_fingerprint != state.get("weights_fingerprint"):
            warnings.warn(f"{self.name}: the weights under {self.model!r} changed since this "
                          f"generator was stored; new samples will not match earlier ones",
                          stacklevel=2)
        self.data_shape = tuple(int(s) for s in state["data_shape"])
        self.class_names = tuple(state["class_names"])
        self._encode_class_prompts()
        self.load_seconds = time.perf_counter() - started
