"""What the Stable Diffusion generators share: loading a pretrained diffusers pipeline offline,
per-class prompt embeddings, the safety checker's count, and images back at the data's shape.

`sd-text2img`, `sd-inpaint` and `sd-img2img` differ only in the diffusers pipeline class they
load and the method that samples from it; everything else is `StableDiffusionGenerator`.

Nothing is trained: `fit` loads the pipeline with `from_pretrained` (a hub id or a local folder
written by `save_pretrained`) and remembers the class names, which fill the prompt template
("a photo of a {label}"), and the shape of the training images, which every output is resized
and converted to (grayscale data gets grayscale images) so that synthetic images mix with real
ones. Each class's prompt goes through the text encoder once; a batch only indexes the
embeddings.

Offline by default: weights come from a local folder or the local hub cache, and a missing
model fails before any compute with one line that says how to provide it
(`check_available()`); RAYSWEEP_ALLOW_DOWNLOADS=1 lets diffusers download.

Determinism: image i's random draws (initial latents, VAE posterior samples) come from
`torch.Generator().manual_seed(seeds[i])` on the CPU (one generator per image, as diffusers
recommends for reproducible results across devices), so image i depends only on the weights,
the options, its own inputs and `seeds[i]`; the first n images of a request are the same
whatever is asked after them (up to float rounding across batch sizes).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from raysweep.devices import batch_size_for_memory, cap_gpu_memory, memory_budget
from raysweep.generators.base import BaseGenerator, register_to_config
from raysweep.hub import (check_weights_available, downloads_allowed, weights_error,
                          weights_fingerprint)

STABLE_DIFFUSION_1_5 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# Scheduler names -> diffusers classes; None keeps the scheduler saved with the pipeline.
_SCHEDULERS = {"dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler",
               "euler": "EulerDiscreteScheduler", "pndm": "PNDMScheduler"}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ATTENTION = ("sdpa", "default")
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Activation memory per image at 512x512 in fp16 with guidance: SD 1.5 inpainting peaked at
# 2.5 GiB at batch 1 and 16.1 GiB at batch 32 on an H100 (issue 7), 0.44 GiB per image;
# text-to-image needs a little less.
_BYTES_PER_IMAGE_512 = 0.44 * 2**30


def _to_data_shape(images: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """float (N, h, w, 3) in [0, 1] from the pipeline -> uint8 (N, height, width, channels)."""
    out = np.empty((images.shape[0], height, width, channels), np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8))
        if pil.size != (width, height):
            pil = pil.resize((width, height), Image.Resampling.LANCZOS)
        if channels == 1:
            pil = pil.convert("L")
        out[i] = np.asarray(pil).reshape(height, width, channels)
    return out


def _rgb_sources(images: np.ndarray, size: tuple[int, int] | None = None) -> list[Image.Image]:
    """uint8 (N, H, W, 1|3) -> RGB PIL images, resized (Lanczos) to size = (width, height)."""
    sources = [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
               for image in images]
    if size is None:
        return sources
    return [image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
            for image in sources]


class StableDiffusionGenerator(BaseGenerator):
    """A pretrained diffusers Stable Diffusion pipeline prompted per class.

    A subclass names `pipeline_class` (a diffusers class name) and `default_model`, and
    samples through `_run_pipeline`.

    Args:
        model: hub id or local folder written by `save_pretrained`; None: `default_model`.
        prompt_template: the prompt for a class; "{label}" becomes the class's prompt name.
        negative_prompt: what to steer away from (classifier-free guidance); None: nothing.
        guidance_scale: classifier-free guidance weight (1.0 disables guidance).
        steps: denoising steps per image (of the full schedule; image-to-image runs part of it).
        scheduler: "dpm++" (DPM-Solver++ multistep), "ddim", "euler" or "pndm"; None keeps the
            scheduler saved with the pipeline (PNDM for Stable Diffusion 1.5).
        height: generation height in pixels (a multiple of 8); None: the pipeline's default
            (512 for Stable Diffusion 1.5). Outputs are resized to the data's size afterwards.
        width: generation width, like `height`.
        dtype: "fp32", "fp16", "bf16", or "auto" (fp16 on CUDA, fp32 elsewhere).
        safety_checker: keep the pipeline's NSFW checker, which blacks out flagged images
            (each flagged image is reported with a warning); False loads the pipeline without it.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... Not part of `config()`.
        batch_size: images per pipeline call; "auto": on CUDA the largest power of two up to 32
            that fits this process's memory share after loading, 8 on CPU. Not part of
            `config()`.
        attention: "sdpa" (PyTorch's scaled_dot_product_attention in the UNet) or "default"
            (whatever the pipeline loads with). Not part of `config()`.
        channels_last: put the UNet and VAE in channels-last memory format (faster convolutions
            on recent GPUs). Not part of `config()`.
        compile: `torch.compile` the UNet (slow first call, faster afterwards): True, or a
            torch.compile mode: "reduce-overhead" (CUDA graphs: fewer kernel launches),
            "max-autotune", "max-autotune-no-cudagraphs". Not part of `config()`.
        gpu_memory_fraction: on CUDA, cap this process's share of GPU memory
            (`torch.cuda.set_per_process_memory_fraction`), for actors that share a GPU;
            None: no cap. Not part of `config()`.
        local_files_only: never download; None: True unless RAYSWEEP_ALLOW_DOWNLOADS=1. Not
            part of `config()`.
    """

    pipeline_class: ClassVar[str] = ""
    default_model: ClassVar[str] = ""
    runtime_options = frozenset({"device", "batch_size", "attention", "channels_last",
                                 "compile", "gpu_memory_fraction", "local_files_only"})

    @register_to_config
    def __init__(
        self,
        *,
        model: str | None = None,
        prompt_template: str = "a photo of a {label}",
        negative_prompt: str | None = None,
        guidance_scale: float = 7.5,
        steps: int = 25,
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
        # Every argument is an attribute already (register_to_config); these are recorded
        # resolved.
        self.model = self.default_model if model is None else model
        self.local_files_only = (not downloads_allowed()) if local_files_only is None \
            else local_files_only
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"{self.name}: model must be a hub id or a local folder, "
                             f"got {model!r}")
        try:
            prompt_template.format(label="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"{self.name}: prompt_template {prompt_template!r} may only use "
                             f"the field {{label}}") from err
        if scheduler is not None and scheduler not in _SCHEDULERS:
            raise ValueError(f"{self.name}: scheduler {scheduler!r} is not one of "
                             f"{', '.join(_SCHEDULERS)} (or null for the pipeline's own)")
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"{self.name}: dtype {dtype!r} is not one of auto, "
                             f"{', '.join(_DTYPES)}")
        if attention not in _ATTENTION:
            raise ValueError(f"{self.name}: attention {attention!r} is not one of "
                             f"{', '.join(_ATTENTION)}")
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"{self.name}: batch_size must be >= 1 or 'auto', got {batch_size!r}")
        self._require_positive_ints(steps=steps)
        for key, value in (("height", height), ("width", width)):
            if value is not None and (not isinstance(value, int) or value < 8 or value % 8):
                raise ValueError(f"{self.name}: {key} must be a positive multiple of 8 or null, "
                                 f"got {value!r}")
        if gpu_memory_fraction is not None and not 0.0 < float(gpu_memory_fraction) <= 1.0:
            raise ValueError(f"{self.name}: gpu_memory_fraction must be in (0, 1] or null, "
                             f"got {gpu_memory_fraction!r}")
        if isinstance(compile, str) and compile not in _COMPILE_MODES:
            raise ValueError(f"{self.name}: compile {compile!r} is not true, false or one of "
                             f"{', '.join(_COMPILE_MODES)}")
        self.sample_batch_size: int | None = None  # batch_size resolved when the pipeline loads
        self.pipe = None
        # What fit() saw, needed to sample (with data_shape, num_classes): set by fit() or load().
        self.class_names: tuple[str, ...] | None = None
        self.weights_fingerprint: str | None = None
        self.load_seconds: float | None = None
        self.nsfw_flagged = 0
        # Each class's prompt through the text encoder once (set with class_names), so a batch
        # only indexes them: the text encoder is off the sampling path.
        self.prompt_embeds: torch.Tensor | None = None
        self.negative_prompt_embeds: torch.Tensor | None = None

    def check_available(self) -> None:
        """Raise `raysweep.errors.UserError` (one line) unless the weights load offline."""
        check_weights_available(self.model, generator=self.name,
                                local_files_only=self.local_files_only)

    # ------------------------------------------------------------------ loading
    def _torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def _load_pipeline(self):
        import diffusers
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
            pipe = getattr(diffusers, self.pipeline_class).from_pretrained(
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

    def _generation_size(self, pipe=None) -> tuple[int, int]:
        """(height, width) the pipeline generates at: the options, else the UNet's default."""
        pipe = self.pipe if pipe is None else pipe
        default = pipe.unet.config.sample_size * pipe.vae_scale_factor
        return self.height or default, self.width or default

    def _resolve_batch_size(self, pipe, device: torch.device) -> int:
        """`batch_size`, or for "auto" what fits in this process's memory share (CUDA)."""
        if self.batch_size != "auto":
            return self.batch_size
        if device.type != "cuda":
            return 8
        height, width = self._generation_size(pipe)
        per_image = _BYTES_PER_IMAGE_512 * height * width / 512**2
        per_image *= pipe.unet.dtype.itemsize / 2  # measured in fp16; fp32 takes twice that
        if self.guidance_scale <= 1:
            per_image /= 2  # one UNet batch per step instead of two
        return batch_size_for_memory(0.9 * memory_budget(device), per_image)

    # ------------------------------------------------------------------ fit
    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None,
            class_names: Sequence[str] | None = None) -> None:
        """Load the pipeline and remember the class names and the images' (H, W, C); no training.

        Args:
            images: the training images, uint8 (N, H, W, C); only their shape is used.
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
        self._remember_data(tuple(images.shape[1:]), class_names)
        self.load_seconds = time.perf_counter() - started
        if progress is not None:
            progress(f"{self.name}: loaded in {self.load_seconds:.0f}s; prompts like "
                     f"{self.prompt_template.format(label=self.class_names[0])!r}")

    def _remember_data(self, data_shape: Sequence[int], class_names: Sequence[str]) -> None:
        self.data_shape = tuple(int(s) for s in data_shape)
        self.class_names = tuple(str(c) for c in class_names)
        self.num_classes = len(self.class_names)
        self._encode_class_prompts()

    # ------------------------------------------------------------------ prompts
    @torch.no_grad()
    def _encode_class_prompts(self) -> None:
        prompts = [self.prompt_template.format(label=name) for name in self.class_names]
        negative = None if self.negative_prompt is None else [self.negative_prompt] * len(prompts)
        # The pipeline's own encoding, as its __call__ would do it; the negative embeddings
        # are None without guidance.
        self.prompt_embeds, self.negative_prompt_embeds = self.pipe.encode_prompt(
            prompts, self.pipe.device, 1, self.guidance_scale > 1, negative_prompt=negative)

    def _prompt_embeds(self, labels: np.ndarray) -> dict[str, torch.Tensor | None]:
        """The pipeline's prompt arguments for these labels, from the per-class embeddings."""
        index = torch.from_numpy(labels).to(self.prompt_embeds.device)
        negative = self.negative_prompt_embeds
        return {"prompt_embeds": self.prompt_embeds[index],
                "negative_prompt_embeds": None if negative is None else negative[index]}

    # ------------------------------------------------------------------ sampling
    def _batches(self, count: int) -> Iterator[slice]:
        for start in range(0, count, self.sample_batch_size):
            yield slice(start, start + self.sample_batch_size)

    def _run_pipeline(self, labels: np.ndarray, seeds: np.ndarray, *, output_type: str = "np",
                      **inputs: Any):
        """One pipeline call for these labels and seeds (per-class prompt embeddings, one CPU
        generator per image); returns its images, after counting those the checker flagged."""
        result = self.pipe(
            **self._prompt_embeds(labels), **inputs, num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
            output_type=output_type)
        flagged = sum(bool(f) for f in (getattr(result, "nsfw_content_detected", None) or []))
        if flagged:
            self.nsfw_flagged += flagged
            warnings.warn(f"{self.name}: the safety checker blacked out {flagged} image(s) "
                          f"({self.nsfw_flagged} so far); set safety_checker: false to keep them",
                          stacklevel=3)
        return result.images

    # ------------------------------------------------------------------ persistence
    def _save_state(self, directory: str) -> dict[str, Any]:
        """Class names, data shape and a fingerprint of the weights; the weights themselves
        stay where `model` points."""
        return {"data_shape": list(self.data_shape), "class_names": list(self.class_names),
                "weights_fingerprint": self.weights_fingerprint}

    def _load_state(self, directory: str, state: dict[str, Any]) -> None:
        """Load the pipeline again from `model`, warning when its weights changed since."""
        started = time.perf_counter()
        self.pipe, self.weights_fingerprint = self._load_pipeline()
        if self.weights_fingerprint != state.get("weights_fingerprint"):
            warnings.warn(f"{self.name}: the weights under {self.model!r} changed since this "
                          f"generator was stored; new samples will not match earlier ones",
                          stacklevel=3)
        self._remember_data(state["data_shape"], state["class_names"])
        self.load_seconds = time.perf_counter() - started
