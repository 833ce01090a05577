"""`dcgan`: a small class-conditional DCGAN that raysweep trains itself (seeds 001 and 004).

Self-contained on purpose (diffusers' single-file policy): the two networks, the training loop
and the sampler for this generator all live here.

* Generator: the label's embedding is concatenated to z, a linear layer lifts that to a small
  feature map, then transposed convolutions (stride 2) + BatchNorm + ReLU double the resolution
  and halve the channels, and a last transposed convolution + Tanh gives the image at
  `image_size`.
* Discriminator: strided convolutions + LeakyReLU(0.2), a minibatch-standard-deviation channel
  (Karras et al. 2018), spectral norm on every layer (optional, off by default), and label
  conditioning by projection (Miyato & Koyama 2018): the score is `linear(h) + <embed(y), h>`.
* Adam(2e-4, betas (0.5, 0.999)); hinge loss (or the original BCE loss).

The defaults were chosen on mnist5k with 50 real images per class, about three minutes of
training on a 2-core CPU:

* No spectral norm: with it, the discriminator stayed too weak on so little data and the
  generator drew one near-identical image per class whatever z (hinge or BCE, with or without
  the moving average); without it, samples vary in slant, thickness and style.
* The minibatch-standard-deviation channel lets the discriminator see how varied a group of
  images is, the usual guard against that collapse.
* An exponential moving average of the generator's weights is what gets saved and sampled;
  after training its BatchNorm statistics are recomputed over many generated batches (train
  mode, cumulative average), so that eval-mode samples match what the weights learnt.
* Differentiable augmentation (Zhao et al. 2020, "DiffAugment"): real and fake images get the
  same random translation before the discriminator sees them, which keeps it from memorising a
  few hundred real images.

Determinism: `fit` with the same data, config and seed gives the same weights on the same
device and thread count. `sample` draws image i's z from
`torch.Generator().manual_seed(seeds[i])` and runs the generator in eval mode in batches of a
fixed shape, so image i depends only on the weights, `labels[i]` and `seeds[i]`, and the first
n images of a request are the same whatever is asked after them.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raysweep.data.tensors import to_nchw
from raysweep.generators.base import (TrainedGenerator, register_generator, register_to_config,
                                      resolve_auto, torch_threads)
from raysweep.generators.latent import (decode_seeded_latents, load_module, resolution_levels,
                                        save_module)

# What "auto" means on each device: the CPU defaults fit a 2-core laptop in minutes; a GPU
# affords a wider network and more steps at the data's native resolution.
_DEVICE_DEFAULTS = {
    "cpu": {"steps": 1500, "base_channels": 32},
    "cuda": {"steps": 5000, "base_channels": 64},
}

_WEIGHTS_FILE = "generator.safetensors"
_LOSSES = ("hinge", "bce")
# Images per group of the discriminator's minibatch-standard-deviation channel (at most).
_STD_GROUP = 4
# Generated batches used to recompute the generator's BatchNorm statistics after training.
_BN_BATCHES = 20


def _translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each image (B, C, S, S) by shift[b] = (dy, dx) pixels, filling with -1 (black)."""
    pad = int(shift.abs().max()) if shift.numel() else 0
    if pad == 0:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    # One gather per batch: row/column indices of each output pixel in the padded image.
    base = torch.arange(size, device=x.device)
    rows = (base[None, :] + pad - shift[:, 0:1].to(x.device))  # (B, S)
    cols = (base[None, :] + pad - shift[:, 1:2].to(x.device))
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


class ConditionalDCGANGenerator(nn.Module):
    """z (latent_dim) + label embedding -> image (channels, size, size) in [-1, 1]."""

    def __init__(self, latent_dim: int, num_classes: int, channels: int, size: int,
                 base_channels: int, embed_dim: int) -> None:
        super().__init__()
        levels = resolution_levels(size)
        self.start = size // 2 ** levels
        self.start_channels = base_channels * 2 ** (levels - 1)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.project = nn.Sequential(
            nn.Linear(latent_dim + embed_dim, self.start_channels * self.start ** 2, bias=False),
            nn.BatchNorm1d(self.start_channels * self.start ** 2),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        width = self.start_channels
        for _ in range(levels - 1):
            blocks += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        blocks += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(labels)], dim=1))
        return self.blocks(h.view(-1, self.start_channels, self.start, self.start))


class ProjectionDiscriminator(nn.Module):
    """image + label -> one real/fake score per image (projection conditioning).

    The minibatch-standard-deviation channel before the last convolution is computed over
    groups of `group_size` consecutive images (1: none), so a batch of real images followed by
    as many fakes never mixes the two when the batch size is a multiple of it.
    """

    def __init__(self, num_classes: int, channels: int, size: int, base_channels: int,
                 spectral_norm: bool, group_size: int) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm if spectral_norm else (lambda module: module)
        self.group_size = group_size
        levels = resolution_levels(size)
        layers: list[nn.Module] = []
        width_in, width = channels, base_channels
        for _ in range(levels):
            layers += [sn(nn.Conv2d(width_in, width, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            width_in, width = width, width * 2
        self.features = nn.Sequential(*layers)
        extra = 1 if group_size > 1 else 0
        self.last = nn.Sequential(sn(nn.Conv2d(width_in + extra, width_in, 3, 1, 1)),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.features_dim = width_in * (size // 2 ** levels) ** 2
        self.score = sn(nn.Linear(self.features_dim, 1))
        self.embed = sn(nn.Embedding(num_classes, self.features_dim))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.group_size > 1:
            batch, channels, height, width = h.shape
            groups = h.view(batch // self.group_size, self.group_size, channels, height, width)
            spread = groups.var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))
            h = torch.cat([h, spread.repeat_interleave(self.group_size)
                           .view(batch, 1, 1, 1).expand(batch, 1, height, width)], dim=1)
        h = self.last(h).flatten(1)
        return self.score(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


@register_generator("dcgan")
class DCGANGenerator(TrainedGenerator):
    """Class-conditional DCGAN, trained from scratch on the train split.

    Args:
        steps: optimizer steps in `fit` (one discriminator and one generator update each).
            "auto": 1500 on CPU, 5000 on CUDA.
        batch_size: real images per step (drawn with replacement, a fresh seeded draw each step);
            as many fakes, with the same labels.
        latent_dim: size of z.
        embed_dim: size of the generator's label embedding (concatenated to z).
        base_channels: channels of the generator's last hidden and the discriminator's first
            layer; they double at each lower resolution.
        image_size: the square resolution the model trains and samples at; samples are resized
            back to the size of the images `fit` saw. None: the data's own size.
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the discriminator.
        beta1: Adam beta1 (beta2 is 0.999).
        loss: "hinge" or "bce" (non-saturating).
        spectral_norm: spectral norm on every discriminator layer.
        ema_decay: decay of the moving average of the generator's weights that is saved and
            sampled; 0 uses the last weights.
        augment_shift: DiffAugment translation of real and fake images by up to this many pixels
            (at model resolution) before the discriminator; 0 disables it.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... Not part of `config()`.
        num_threads: torch intra-op threads while fitting/sampling (restored afterwards);
            None leaves torch's setting alone. Not part of `config()`.
        sample_batch_size: images per generator call in `sample`. Not part of `config()`.
    """

    name = "dcgan"
    runtime_options = frozenset({"device", "num_threads", "sample_batch_size"})
    state_file = "raysweep_dcgan.json"

    @register_to_config
    def __init__(
        self,
        *,
        steps: int | str = "auto",
        batch_size: int = 64,
        latent_dim: int = 64,
        embed_dim: int = 32,
        base_channels: int | str = "auto",
        image_size: int | None = None,
        lr_generator: float = 2e-4,
        lr_discriminator: float = 2e-4,
        beta1: float = 0.5,
        loss: str = "hinge",
        spectral_norm: bool = False,
        ema_decay: float = 0.999,
        augment_shift: int = 2,
        device: str = "auto",
        num_threads: int | None = None,
        sample_batch_size: int = 256,
    ) -> None:
        resolved = resolve_auto(str(device), _DEVICE_DEFAULTS, steps=steps,
                                base_channels=base_channels)
        steps, base_channels = resolved["steps"], resolved["base_channels"]
        if loss not in _LOSSES:
            raise ValueError(f"dcgan: loss {loss!r} is not one of {', '.join(_LOSSES)}")
        for key, value in (("steps", steps), ("batch_size", batch_size),
                           ("latent_dim", latent_dim), ("embed_dim", embed_dim),
                           ("base_channels", base_channels),
                           ("sample_batch_size", sample_batch_size)):
            if int(value) < 1:
                raise ValueError(f"dcgan: {key} must be >= 1, got {value!r}")
        if image_size is not None and resolution_levels(int(image_size)) == 0:
            raise ValueError(f"dcgan: image_size must be even and >= 8 (or None), "
                             f"got {image_size!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"dcgan: ema_decay must be in [0, 1), got {ema_decay!r}")
        if int(augment_shift) < 0:
            raise ValueError(f"dcgan: augment_shift must be >= 0, got {augment_shift!r}")
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.latent_dim = int(latent_dim)
        self.embed_dim = int(embed_dim)
        self.base_channels = int(base_channels)
        self.image_size = None if image_size is None else int(image_size)
        self.lr_generator = float(lr_generator)
        self.lr_discriminator = float(lr_discriminator)
        self.beta1 = float(beta1)
        self.loss = str(loss)
        self.spectral_norm = bool(spectral_norm)
        self.ema_decay = float(ema_decay)
        self.augment_shift = int(augment_shift)
        self.device = str(device)
        self.num_threads = None if num_threads is None else int(num_threads)
        self.sample_batch_size = int(sample_batch_size)
        self.generator: ConditionalDCGANGenerator | None = None
        # What fit() saw, needed to sample: set by fit() or load().
        self.data_shape: tuple[int, int, int] | None = None  # (H, W, C)
        self.num_classes: int | None = None
        self.model_size: int | None = None
        self.train_seconds: float | None = None
        self.last_losses: dict[str, float] | None = None

    # ------------------------------------------------------------------ parts
    def _build_generator(self, channels: int, num_classes: int, size: int):
        return ConditionalDCGANGenerator(self.latent_dim, num_classes, channels, size,
                                         self.base_channels, self.embed_dim)

    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss from its scores of real and fake images."""
        if self.loss == "hinge":
            return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def _generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "hinge":
            return -fake.mean()
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    # ------------------------------------------------------------------ fit
    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None) -> None:
        """Train from scratch on `images` (uint8 (N, H, W, C)) with `labels` (int, < num_classes)."""
        # 1. Check inputs
        images, labels = self._check_fit_inputs(images, labels, num_classes)
        height, width, channels = (int(s) for s in images.shape[1:])
        size = self.image_size if self.image_size is not None else max(height, width)
        if resolution_levels(size) == 0:
            raise ValueError(f"dcgan.fit: the data's size {height}x{width} cannot be halved "
                             f"down to 4 pixels; set image_size (e.g. 16 or 32)")
        started = time.perf_counter()
        device = self._torch_device()
        with torch_threads(self.num_threads):
            # 2. Build both networks from the seed, and their optimizers
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                gen_net = self._build_generator(channels, num_classes, size)
                disc_net = ProjectionDiscriminator(num_classes, channels, size,
                                                   self.base_channels, self.spectral_norm,
                                                   math.gcd(self.batch_size, _STD_GROUP))
            gen_net.to(device).train()
            disc_net.to(device).train()
            ema = copy.deepcopy(gen_net).requires_grad_(False) if self.ema_decay else None
            betas = (self.beta1, 0.999)
            opt_g = torch.optim.Adam(gen_net.parameters(), lr=self.lr_generator, betas=betas)
            opt_d = torch.optim.Adam(disc_net.parameters(), lr=self.lr_discriminator, betas=betas)
            gen = torch.Generator().manual_seed(int(seed) + 1)
            data = to_nchw(images, size, (-1.0, 1.0)).to(device)
            targets = torch.from_numpy(labels).to(device)
            n = data.shape[0]
            report_every = max(1, self.steps // 10)
            running: dict[str, float] = {}
            # 3. Training loop: one discriminator, then one generator update per step
            for step in range(1, self.steps + 1):
                index = torch.randint(0, n, (self.batch_size,), generator=gen).to(device)
                real, y = data[index], targets[index]
                z = torch.randn((self.batch_size, self.latent_dim), generator=gen).to(device)
                fake = gen_net(z, y)
                if self.augment_shift:
                    shift = torch.randint(-self.augment_shift, self.augment_shift + 1,
                                          (self.batch_size, 2), generator=gen)
                    real_in, fake_in = _translate(real, shift), _translate(fake, shift)
                else:
                    real_in, fake_in = real, fake
                # Real and fake in one pass (the discriminator has no batch statistics).
                scores = disc_net(torch.cat([real_in, fake_in.detach()]), torch.cat([y, y]))
                loss_d = self._discriminator_loss(*scores.chunk(2))
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                loss_g = self._generator_loss(disc_net(fake_in, y))
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                if ema is not None:
                    # Warm-up so that short runs still average over their own later steps.
                    decay = min(self.ema_decay, (1.0 + step) / (10.0 + step))
                    with torch.no_grad():
                        for avg, cur in zip(ema.parameters(), gen_net.parameters()):
                            avg.lerp_(cur, 1.0 - decay)
                values = {"d": float(loss_d.detach()), "g": float(loss_g.detach())}
                for key, value in values.items():
                    if not math.isfinite(value):
                        raise FloatingPointError(f"dcgan.fit: {key} loss became {value} at step "
                                                 f"{step}; lower lr_generator/lr_discriminator")
                    running[key] = value if key not in running else 0.9 * running[key] + 0.1 * value
                if progress is not None and (step % report_every == 0 or step == self.steps):
                    progress(f"dcgan step {step}/{self.steps} loss_d {running['d']:.3f} "
                             f"loss_g {running['g']:.3f} ({time.perf_counter() - started:.0f}s)")
            # 4. The weights to keep, with BatchNorm statistics that match them
            final = ema if ema is not None else gen_net
            self._recompute_batchnorm(final, num_classes, gen, device)
            final.eval()
        self.generator = final
        self.last_losses = running
        self.data_shape = (height, width, channels)
        self.num_classes = int(num_classes)
        self.model_size = size
        self.train_seconds = time.perf_counter() - started

    @torch.no_grad()
    def _recompute_batchnorm(self, net: nn.Module, num_classes: int, gen: torch.Generator,
                             device: torch.device) -> None:
        """Replace the running BatchNorm statistics by their exact average over generated batches."""
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average
        net.train()
        for _ in range(_BN_BATCHES):
            z = torch.randn((self.batch_size, self.latent_dim), generator=gen).to(device)
            y = torch.randint(0, num_classes, (self.batch_size,), generator=gen).to(device)
            net(z, y)
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum

    # ------------------------------------------------------------------ sample
    @torch.no_grad()
    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, C) image per (label, seed), at the size of the data `fit` saw."""
        labels, seeds = self._check_request("sample", labels, seeds)
        self.generator.eval()
        with torch_threads(self.num_threads):
            return decode_seeded_latents(
                self.generator, labels, seeds, latent_dim=self.latent_dim,
                batch_size=self.sample_batch_size, device=next(self.generator.parameters()).device,
                data_shape=self.data_shape, value_range=(-1.0, 1.0))

    # ------------------------------------------------------------------ persistence
    def _save_weights(self, directory: str) -> None:
        save_module(self.generator, os.path.join(directory, _WEIGHTS_FILE))

    def _load_weights(self, directory: str) -> None:
        net = self._build_generator(self.data_shape[2], self.num_classes, self.model_size)
        load_module(net, os.path.join(directory, _WEIGHTS_FILE))
        self.generator = net.to(self._torch_device()).eval()
