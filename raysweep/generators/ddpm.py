"""`ddpm`: a small class-conditional diffusion model that raysweep trains itself (diffusers).

The UNet, the training loop and the samplers live here (what every generator raysweep trains
shares, options recorded from the constructor, fit's checks and save/load, is `TrainedGenerator`
in `trained.py`), built from diffusers parts:

* `UNet2DModel` with a class embedding (`num_class_embeds = num_classes + 1`; the extra id is
  the "no label" token used for classifier-free guidance),
* `DDPMScheduler` (cosine `squaredcos_cap_v2` betas) to noise the training images,
* `DPMSolverMultistepScheduler` (DPM-Solver++, deterministic) or `DDIMScheduler` (eta = 0) to
  sample in a handful of steps,
* `EMAModel` for the weights that are saved and sampled from.

The defaults were chosen by measurement on a 2-core CPU with `benchmarks/generator_cas.py`
(mnist5k, 50 real images per class = 500 training images): a 0.6M-parameter attention-free UNet
(16/32/64 channels, one ResNet block per level) at 16x16, v-prediction with min-SNR-5 loss
weighting, cosine betas, AdamW 3e-3 with warm-up and cosine decay, 1,000 steps of 64, EMA,
classifier-free guidance 2.0 and 15 DPM-Solver++ steps. Measured: training 2.2 min wall with
2 threads on an idle machine (2.8-3.5 min with 1 thread); sampling 1,000 images 17 s (2 threads)
to 33 s (1 thread); a classifier trained on 1,000 samples only scores ~0.90-0.92 on the real
test split, against ~0.93 for the real training images passed through 16x16 and ~0.97 for the
real training images themselves. Training at 16x16 costs a third of 28x28 per step; at 20x20
the same budget bought half the steps and no better score.

Inpainting (`sample_inpaint`, the `inpaint` synthesis kind's offline default) is RePaint
(Lugmayr et al. 2022) through diffusers' `RePaintScheduler`: at every step the known pixels are
the source noised to that step and the masked ones come from the model; resampling jumps
(`repaint_jump_length`, `repaint_jump_n_sample`) let the two agree. The scheduler takes epsilon,
so the UNet's v- or x0-prediction is converted first. The result is pasted back into the source
through the full-resolution mask, so unmasked pixels are the source's exactly.

Variations of real images (`sample_img2img`, the `img2img` synthesis kind) are SDEdit (Meng et
al. 2022) the way diffusers' img2img pipelines run it: the source is noised to the sampler's
timestep at `strength` of its schedule (`get_timesteps`: int(strength * sample_steps) steps
from the end, at least one) and denoised toward its target class through the same scheduler
and guidance as `sample`, from that step on (`set_begin_index`). It runs only those steps, so
its cost scales with strength; strength 1 starts from (nearly) pure noise.

Determinism: `fit` with the same data, config and seed gives the same weights on the same
device and thread count. `sample` draws image i's initial noise from
`torch.Generator().manual_seed(seeds[i])` on the CPU and the sampler adds no noise, so image i
depends only on the weights, `labels[i]` and `seeds[i]` (and for `sample_img2img` on
`images[i]` and the strength); the first n images of a request are the same whatever is asked
after them (up to float rounding across batch sizes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raysweep.data.tensors import to_nchw, to_uint8_nhwc
from raysweep.generators.base import denoising_steps, register_generator, register_to_config
from raysweep.generators.trained import TrainedGenerator, TrainingLog, torch_threads

_UNET_DIR = "unet"
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_SAMPLERS = ("dpmsolver++", "ddim")
# What "auto" means on each device. The CPU defaults fit a 2-core laptop in minutes; on a GPU
# the native resolution, a wider UNet and 4x the steps fit in under 3 minutes on an H100 for a
# CAS of 0.960 against 0.910 (issue 7's measurement, benchmarks/generator_cas.py).
_DEVICE_DEFAULTS = {
    "cpu": {"steps": 1000, "image_size": 16, "block_out_channels": (16, 32, 64)},
    "cuda": {"steps": 4000, "image_size": None, "block_out_channels": (32, 64, 128)},
}


@register_generator("ddpm")
class DDPMGenerator(TrainedGenerator):
    """Class-conditional DDPM (diffusers `UNet2DModel`), trained from scratch on the train split.

    Args:
        steps: optimizer steps in `fit`. "auto": 1000 on CPU, 4000 on CUDA.
        batch_size: images per optimizer step (drawn with replacement, a fresh seeded draw each step).
        lr: peak AdamW learning rate (linear warm-up over `warmup_steps`, then cosine to 0).
        warmup_steps: learning-rate warm-up steps.
        weight_decay: AdamW weight decay.
        image_size: the square resolution the model trains and samples at; samples are resized
            back to the size of the images `fit` saw. None: the data's own size (rounded up to a
            multiple of 4). "auto": 16 on CPU, None (native) on CUDA.
        block_out_channels: UNet channels per resolution level (one downsampling between levels).
            "auto": (16, 32, 64) on CPU, (32, 64, 128) on CUDA.
        layers_per_block: ResNet blocks per level.
        attention: put self-attention in the lowest-resolution down/up blocks.
        mid_attention: self-attention in the UNet's middle block.
        norm_num_groups: GroupNorm groups (must divide every entry of `block_out_channels`).
        num_train_timesteps: diffusion steps of the training noise schedule.
        beta_schedule: diffusers beta schedule name ("squaredcos_cap_v2" is the cosine one).
        prediction_type: what the UNet predicts: "epsilon", "v_prediction" or "sample".
        snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023); None: plain MSE.
        ema_decay: ceiling of the EMA decay (the EMA warms up from 0, so short runs still average).
        cond_dropout: share of training labels replaced by the "no label" id, which enables
            classifier-free guidance; 0 disables it.
        guidance_scale: classifier-free guidance weight at sampling (1.0 = plain conditional).
        sampler: "dpmsolver++" (DPM-Solver++ 2M, deterministic) or "ddim" (eta = 0).
        sample_steps: denoising steps per sample.
        augment_shift: random translation of training images by up to this many pixels (at the
            data's resolution, zero padded); 0 disables it.
        sample_batch_size: images per denoising batch. Not part of `config()`.
        repaint_steps: denoising steps of `sample_inpaint` (before resampling jumps). Part of
            `inpaint_config()`, not of `config()`: the weights do not depend on it.
        repaint_jump_length: RePaint's jump length j (steps re-noised per jump).
        repaint_jump_n_sample: RePaint's r (passes over each jump; 1 = no resampling).
        **runtime: device, num_threads (see `TrainedGenerator`).
    """

    name = "ddpm"
    families = ("sample", "inpaint", "img2img")  # see synthesis.kinds
    inpaint_options = frozenset({"repaint_steps", "repaint_jump_length", "repaint_jump_n_sample"})
    state_file = "raysweep_ddpm.json"

    @register_to_config
    def __init__(
        self,
        *,
        steps: int | str = "auto",
        batch_size: int = 64,
        lr: float = 3e-3,
        warmup_steps: int = 100,
        weight_decay: float = 0.0,
        image_size: int | None | str = "auto",
        block_out_channels: Sequence[int] | str = "auto",
        layers_per_block: int = 1,
        attention: bool = False,
        mid_attention: bool = False,
        norm_num_groups: int = 8,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "v_prediction",
        snr_gamma: float | None = 5.0,
        ema_decay: float = 0.999,
        cond_dropout: float = 0.1,
        guidance_scale: float = 2.0,
        sampler: str = "dpmsolver++",
        sample_steps: int = 15,
        augment_shift: int = 0,
        sample_batch_size: int = 250,
        repaint_steps: int = 20,
        repaint_jump_length: int = 5,
        repaint_jump_n_sample: int = 2,
        **runtime,
    ) -> None:
        super().__init__(sample_batch_size=sample_batch_size, **runtime)
        self._resolve_auto(_DEVICE_DEFAULTS, "steps", "image_size", "block_out_channels")
        self.block_out_channels = tuple(self.block_out_channels)
        if not self.block_out_channels:
            raise ValueError("ddpm: block_out_channels must name at least one level, e.g. [32, 64]")
        self._require_positive_ints(
            steps=self.steps, batch_size=batch_size, sample_steps=sample_steps,
            layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
            num_train_timesteps=num_train_timesteps, repaint_steps=repaint_steps,
            repaint_jump_length=repaint_jump_length, repaint_jump_n_sample=repaint_jump_n_sample,
            **{f"block_out_channels[{i}]": c for i, c in enumerate(self.block_out_channels)})
        if any(c % norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"ddpm: norm_num_groups={norm_num_groups} must divide every entry of "
                             f"block_out_channels={list(self.block_out_channels)}")
        if prediction_type not in _PREDICTION_TYPES:
            raise ValueError(f"ddpm: prediction_type {prediction_type!r} is not one of "
                             f"{', '.join(_PREDICTION_TYPES)}")
        if sampler not in _SAMPLERS:
            raise ValueError(f"ddpm: sampler {sampler!r} is not one of {', '.join(_SAMPLERS)}")
        if self.image_size is not None:
            self._require_positive_ints(image_size=self.image_size)
            if self.image_size < 4:
                raise ValueError(f"ddpm: image_size must be >= 4 or None, got {image_size!r}")
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"ddpm: cond_dropout must be in [0, 1), got {cond_dropout!r}")
        if guidance_scale != 1.0 and cond_dropout == 0.0:
            raise ValueError("ddpm: guidance_scale != 1 needs cond_dropout > 0 (the model must "
                             "learn the unconditional case); set guidance_scale: 1.0")
        self.unet = None

    # ------------------------------------------------------------------ config
    def inpaint_config(self) -> dict[str, Any]:
        """What changes `sample_inpaint`'s output beyond the weights (hashed into inpaint pool keys)."""
        options = self.options()
        return {key: options[key] for key in sorted(self.inpaint_options | {"guidance_scale"})}

    def img2img_config(self) -> dict[str, Any]:
        """What changes `sample_img2img`'s output beyond the weights and the strength (hashed
        into img2img pool keys): the sampler that `sample` uses too."""
        options = self.options()
        return {key: options[key] for key in ("sampler", "sample_steps", "guidance_scale")}

    # ------------------------------------------------------------------ parts
    def _build_unet(self, channels: int, num_classes: int, size: int):
        from diffusers import UNet2DModel

        levels = len(self.block_out_channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if self.attention and levels > 1:
            down[-1] = "AttnDownBlock2D"
            up[0] = "AttnUpBlock2D"
        return UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels,
            down_block_types=tuple(down), up_block_types=tuple(up),
            block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups, add_attention=self.mid_attention,
            attention_head_dim=min(self.block_out_channels[-1], 32),
            num_class_embeds=num_classes + 1,  # + the "no label" id for guidance
        )

    def _train_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.num_train_timesteps,
                             beta_schedule=self.beta_schedule,
                             prediction_type=self.prediction_type, clip_sample=False)

    def _sample_scheduler(self):
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        common = {"num_train_timesteps": self.num_train_timesteps,
                  "beta_schedule": self.beta_schedule, "prediction_type": self.prediction_type}
        if self.sampler == "ddim":
            return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=False,
                                 timestep_spacing="trailing")
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++",
                                           solver_order=2, thresholding=False,
                                           lower_order_final=True, timestep_spacing="trailing")

    def _model_size_for(self, height: int, width: int) -> int:
        """`image_size`, else the data's larger side rounded up to what the UNet's levels halve."""
        multiple = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size is None:
            return int(math.ceil(max(height, width) / multiple) * multiple)
        if self.image_size % multiple:
            raise ValueError(f"ddpm.fit: image_size {self.image_size} must be a multiple of "
                             f"{multiple} for {len(self.block_out_channels)} UNet levels; use "
                             f"{(self.image_size // multiple + 1) * multiple} or fewer "
                             f"block_out_channels")
        return self.image_size

    # ------------------------------------------------------------------ fit
    def _train(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
               size: int, log: TrainingLog) -> None:
        """Denoising loss (min-SNR weighted) on noised training images; AdamW with warm-up
        and cosine decay; the EMA of the weights is what is kept."""
        from diffusers.training_utils import EMAModel

        channels = images.shape[-1]
        device = self._torch_device()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            unet = self._build_unet(channels, num_classes, size)
        # Every random draw below comes from `gen`; the global RNG is left alone.
        unet.to(device).train()
        scheduler = self._train_scheduler()
        gen = torch.Generator().manual_seed(int(seed) + 1)
        # Shifted images are scaled after the shift (`_shift`), at the data's resolution.
        data = to_nchw(images, size, (-1.0, 1.0)) if not self.augment_shift else \
            to_nchw(images, value_range=(0.0, 255.0))
        data = data.to(device)
        targets = torch.from_numpy(labels).to(device)
        alphas = scheduler.alphas_cumprod.to(device)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=self.lr,
                                      weight_decay=self.weight_decay)
        lr_at = self._lr_lambda()
        lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
        ema = EMAModel(unet.parameters(), decay=self.ema_decay, use_ema_warmup=True,
                       inv_gamma=1.0, power=2 / 3, foreach=True)
        null_label = num_classes
        n = data.shape[0]
        for step in range(1, self.steps + 1):
            index = torch.randint(0, n, (self.batch_size,), generator=gen)
            x0 = data[index.to(device)]
            if self.augment_shift:
                x0 = self._shift(x0, gen, size)
            y = targets[index.to(device)]
            if self.cond_dropout > 0:
                drop = torch.rand(self.batch_size, generator=gen) < self.cond_dropout
                y = torch.where(drop.to(device), torch.full_like(y, null_label), y)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = torch.randint(0, self.num_train_timesteps, (self.batch_size,),
                              generator=gen).to(device)
            noisy = scheduler.add_noise(x0, noise, t)
            pred = unet(noisy, t, class_labels=y).sample
            if self.prediction_type == "epsilon":
                target = noise
            elif self.prediction_type == "v_prediction":
                target = scheduler.get_velocity(x0, noise, t)
            else:
                target = x0
            per_image = F.mse_loss(pred.float(), target.float(), reduction="none")
            per_image = per_image.mean(dim=(1, 2, 3))
            if self.snr_gamma is not None:
                snr = alphas[t] / (1 - alphas[t])
                clipped = torch.clamp(snr, max=self.snr_gamma)
                # min-SNR-gamma expressed for each target (weights on the x0-error scale).
                if self.prediction_type == "epsilon":
                    weight = clipped / snr
                elif self.prediction_type == "v_prediction":
                    weight = clipped / (snr + 1)
                else:
                    weight = clipped
                loss = (per_image * weight).mean()
            else:
                loss = per_image.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_sched.step()
            ema.step(unet.parameters())
            log.record(step, loss=float(loss.detach()))
        ema.copy_to(unet.parameters())
        self.unet = unet.eval()

    def _lr_lambda(self) -> Callable[[int], float]:
        warmup, total = max(self.warmup_steps, 0), self.steps

        def lr_at(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return lr_at

    def _shift(self, raw: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
        """Translate uint8-valued (B, C, H, W) images by up to augment_shift pixels, then scale."""
        pad = self.augment_shift
        batch, _, height, width = raw.shape
        padded = F.pad(raw, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (batch,), generator=gen).tolist()
        dx = torch.randint(0, 2 * pad + 1, (batch,), generator=gen).tolist()
        out = torch.stack([padded[i, :, dy[i]:dy[i] + height, dx[i]:dx[i] + width]
                           for i in range(batch)])
        out = out / 127.5 - 1.0
        if out.shape[-2:] != (size, size):
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)
        return out.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ sample
    @torch.no_grad()
    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, C) image per (label, seed), at the size of the data `fit` saw."""
        labels, seeds = self._check_request("sample", labels, seeds)
        return self._generate(labels, seeds)

    @torch.no_grad()
    def sample_img2img(self, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray,
                       strength: float) -> np.ndarray:
        """Vary each source image toward a class (SDEdit): noise it to `strength`, denoise.

        Args:
            images: the sources, uint8 (N, H, W, C) at the size `fit` saw.
            labels: the class each variant is denoised toward (its own or another one).
            seeds: seed per image (its noise comes from a CPU generator seeded with it).
            strength: in (0, 1]: how far along the schedule the source is noised; the sampler
                runs int(strength * sample_steps) of its steps (at least one). 1 starts from
                (nearly) pure noise and no longer depends on the source.

        Returns:
            uint8 (N, H, W, C): one variant per source.
        """
        images = np.asarray(images)
        labels, seeds = self._check_request("sample_img2img", labels, seeds, images)
        self._check_source_shape("sample_img2img", images)
        steps = denoising_steps(self.sample_steps, strength)
        return self._generate(labels, seeds, images, steps)

    def _check_source_shape(self, method: str, images: np.ndarray) -> None:
        if images.shape[1:] != tuple(self.data_shape):
            raise ValueError(f"ddpm.{method}: images must be uint8 (N, "
                             f"{', '.join(map(str, self.data_shape))}) like the data fit() saw, "
                             f"got {images.dtype} {images.shape}")

    def _generate(self, labels: np.ndarray, seeds: np.ndarray, sources: np.ndarray | None = None,
                  steps: int | None = None) -> np.ndarray:
        """Images from per-image seeded noise, in batches of `sample_batch_size`: denoised from
        pure noise, or from `sources` noised to the last `steps` of the sampler's schedule."""
        height, width, channels = self.data_shape
        if labels.size == 0:
            return np.zeros((0, height, width, channels), np.uint8)
        device = next(self.unet.parameters()).device
        size = self.model_size
        out = []
        with torch_threads(self.num_threads):
            for start in range(0, labels.size, self.sample_batch_size):
                chunk = slice(start, start + self.sample_batch_size)
                noise = torch.stack([
                    torch.randn((channels, size, size),
                                generator=torch.Generator().manual_seed(int(s)))
                    for s in seeds[chunk]]).to(device)
                source = None if sources is None else \
                    to_nchw(sources[chunk], size, (-1.0, 1.0)).to(device)
                x = self._denoise(noise, torch.from_numpy(labels[chunk]).to(device), source, steps)
                out.append(to_uint8_nhwc(x, height, width))
        return np.concatenate(out)

    def _denoise(self, noise: torch.Tensor, y: torch.Tensor, source: torch.Tensor | None = None,
                 steps: int | None = None) -> torch.Tensor:
        """Run the sampler over its whole schedule from `noise`, or (img2img) over its last
        `steps` from `source` noised to the first of them, as diffusers' `get_timesteps` does."""
        scheduler = self._sample_scheduler()
        scheduler.set_timesteps(self.sample_steps)
        timesteps, x = scheduler.timesteps, noise
        if source is not None:
            begin = (self.sample_steps - steps) * scheduler.order
            timesteps = timesteps[begin:]
            if hasattr(scheduler, "set_begin_index"):  # DPM-Solver counts its steps; DDIM does not
                scheduler.set_begin_index(begin)
            x = scheduler.add_noise(source, noise, timesteps[:1])
        labels = self._guidance_labels(y)
        for t in timesteps:
            x = scheduler.step(self._predict(x, t, labels), t, x).prev_sample
        return x

    def _guidance_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The UNet's class labels: y, then as many "no label" ids when guidance is on."""
        if self.guidance_scale == 1.0:
            return y
        return torch.cat([y, torch.full_like(y, self.num_classes)])

    def _predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction for x at t, with classifier-free guidance when it is on."""
        if self.guidance_scale == 1.0:
            return self.unet(x, t, class_labels=labels).sample
        cond, uncond = self.unet(torch.cat([x, x]), t, class_labels=labels).sample.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    @torch.no_grad()
    def sample_inpaint(self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       seeds: np.ndarray) -> np.ndarray:
        """Repaint the masked pixels of each source image with its class (RePaint).

        Args:
            images: the sources, uint8 (N, H, W, C) at the size `fit` saw.
            masks: bool or float in [0, 1], (N, H, W); 1 = repaint.
            labels: class per image (conditions the UNet).
            seeds: seed per image (its noise comes from a generator seeded with it).

        Returns:
            uint8 (N, H, W, C): the sources with their masked pixels repainted.
        """
        # 1. Check inputs.
        images = np.asarray(images)
        masks = np.asarray(masks).astype(np.float32)
        labels, seeds = self._check_request("sample_inpaint", labels, seeds, images)
        self._check_source_shape("sample_inpaint", images)
        if masks.shape != images.shape[:3]:
            raise ValueError(f"ddpm.sample_inpaint: masks must have shape {images.shape[:3]}, "
                             f"got {masks.shape}")
        if labels.size == 0:
            return images.copy()
        height, width, _ = self.data_shape
        device = next(self.unet.parameters()).device
        out = []
        with torch_threads(self.num_threads):
            for start in range(0, labels.size, self.sample_batch_size):
                chunk = slice(start, start + self.sample_batch_size)
                # 2. Sources and masks at the model's resolution; a low-res pixel is known only
                # when none of the pixels it covers is masked.
                source = to_nchw(images[chunk], self.model_size, (-1.0, 1.0)).to(device)
                masked = F.adaptive_max_pool2d(torch.from_numpy(masks[chunk])[:, None],
                                               self.model_size) if height >= self.model_size \
                    else F.interpolate(torch.from_numpy(masks[chunk])[:, None],
                                       size=(self.model_size, self.model_size), mode="nearest")
                known = (masked <= 0).float().to(device)
                generators = [torch.Generator().manual_seed(int(s)) for s in seeds[chunk]]
                # 3. RePaint.
                x = self._repaint(source, known, torch.from_numpy(labels[chunk]).to(device),
                                  generators)
                # 4. Back to the data's size, pasted into the sources through the masks.
                painted = to_uint8_nhwc(x, height, width).astype(np.float32)
                alpha = masks[chunk][..., None]
                blended = alpha * painted + (1.0 - alpha) * images[chunk].astype(np.float32)
                out.append(np.clip(np.round(blended), 0, 255).astype(np.uint8))
        return np.concatenate(out)

    def _repaint(self, source: torch.Tensor, known: torch.Tensor, y: torch.Tensor,
                 generators: list[torch.Generator]) -> torch.Tensor:
        from diffusers import RePaintScheduler
        from diffusers.utils.torch_utils import randn_tensor

        scheduler = RePaintScheduler(num_train_timesteps=self.num_train_timesteps,
                                     beta_schedule=self.beta_schedule, eta=0.0, clip_sample=True)
        scheduler.set_timesteps(self.repaint_steps, jump_length=self.repaint_jump_length,
                                jump_n_sample=self.repaint_jump_n_sample, device=source.device)
        alphas = scheduler.alphas_cumprod.to(source.device)
        labels = self._guidance_labels(y)
        x = randn_tensor(source.shape, generator=generators, device=source.device)
        t_last = scheduler.timesteps[0] + 1
        for t in scheduler.timesteps:
            if t < t_last:
                epsilon = self._to_epsilon(self._predict(x, t, labels), x, alphas[t])
                x = scheduler.step(epsilon, t, x, source, known, generator=generators).prev_sample
            else:  # a resampling jump: noise forward again
                x = scheduler.undo_step(x, t_last, generator=generators)
            t_last = t
        return x

    def _to_epsilon(self, pred: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction as noise (RePaintScheduler takes epsilon only)."""
        if self.prediction_type == "epsilon":
            return pred
        if self.prediction_type == "v_prediction":
            return alpha.sqrt() * pred + (1 - alpha).sqrt() * x
        return (x - alpha.sqrt() * pred) / (1 - alpha).sqrt().clamp_min(1e-8)

    # ------------------------------------------------------------------ persistence
    def _save_weights(self, directory: str) -> None:
        """The EMA UNet, with `save_pretrained`."""
        self.unet.save_pretrained(os.path.join(directory, _UNET_DIR))

    def _load_weights(self, directory: str) -> None:
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(os.path.join(directory, _UNET_DIR),
                                           low_cpu_mem_usage=False)
        self.unet = unet.to(self._torch_device()).eval()
