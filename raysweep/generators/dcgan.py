"""`dcgan`: a small class-conditional DCGAN that raysweep trains itself (seeds 001 and 004).

The two networks and the training loop live here; what every generator raysweep trains shares
(options recorded from the constructor, fit's checks, save/load) is `TrainedGenerator` in
`trained.py`, and sampling from seeded latents, shared with `vae`, is `LatentGenerator` in
`latent.py`.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raysweep.data.tensors import to_nchw
from raysweep.generators.base import register_generator, register_to_config
from raysweep.generators.trained import TrainingLog
from raysweep.generators.latent import LatentGenerator, resolution_levels

# What "auto" means on each device: the CPU defaults fit a 2-core laptop in minutes; a GPU
# affords a wider network and more steps at the data's native resolution.
_DEVICE_DEFAULTS = {
    "cpu": {"steps": 1500, "base_channels": 32},
    "cuda": {"steps": 5000, "base_channels": 64},
}

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
class DCGANGenerator(LatentGenerator):
    """Class-conditional DCGAN, trained from scratch on the train split.

    Args:
        latent_dim: size of z.
        embed_dim: size of the generator's label embedding (concatenated to z).
        base_channels: channels of the generator's last hidden and the discriminator's first
            layer; they double at each lower resolution.
        image_size: the square resolution the model trains and samples at; samples are resized
            back to the size of the images `fit` saw. None: the data's own size.
        spectral_norm: spectral norm on every discriminator layer.
        loss: "hinge" or "bce" (non-saturating).
        steps: optimizer steps in `fit` (one discriminator and one generator update each).
            "auto": 1500 on CPU, 5000 on CUDA.
        batch_size: real images per step (drawn with replacement, a fresh seeded draw each step);
            as many fakes, with the same labels.
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the discriminator.
        beta1: Adam beta1 (beta2 is 0.999).
        ema_decay: decay of the moving average of the generator's weights that is saved and
            sampled; 0 uses the last weights.
        augment_shift: DiffAugment translation of real and fake images by up to this many pixels
            (at model resolution) before the discriminator; 0 disables it.
        **runtime: device, num_threads, sample_batch_size (see `TrainedGenerator`).
    """

    name = "dcgan"
    state_file = "raysweep_dcgan.json"
    weights_file = "generator.safetensors"
    divergence_hint = "lower lr_generator/lr_discriminator"

    @register_to_config
    def __init__(
        self,
        *,
        latent_dim: int = 64,
        embed_dim: int = 32,
        base_channels: int | str = "auto",
        image_size: int | None = None,
        spectral_norm: bool = False,
        loss: str = "hinge",
        steps: int | str = "auto",
        batch_size: int = 64,
        lr_generator: float = 2e-4,
        lr_discriminator: float = 2e-4,
        beta1: float = 0.5,
        ema_decay: float = 0.999,
        augment_shift: int = 2,
        **runtime,
    ) -> None:
        super().__init__(**runtime)
        self._resolve_auto(_DEVICE_DEFAULTS, "steps", "base_channels")
        if loss not in _LOSSES:
            raise ValueError(f"dcgan: loss {loss!r} is not one of {', '.join(_LOSSES)}")
        self._require_positive_ints(steps=self.steps, batch_size=batch_size, latent_dim=latent_dim,
                                    embed_dim=embed_dim, base_channels=self.base_channels)
        if image_size is not None and (not isinstance(image_size, int)
                                       or resolution_levels(image_size) == 0):
            raise ValueError(f"dcgan: image_size must be even and >= 8 (or None), "
                             f"got {image_size!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"dcgan: ema_decay must be in [0, 1), got {ema_decay!r}")
        if not isinstance(augment_shift, int) or augment_shift < 0:
            raise ValueError(f"dcgan: augment_shift must be a whole number >= 0, got "
                             f"{augment_shift!r}")

    # ------------------------------------------------------------------ parts
    def _build_network(self, channels: int, num_classes: int,
                       size: int) -> ConditionalDCGANGenerator:
        return ConditionalDCGANGenerator(self.latent_dim, num_classes, channels, size,
                                         self.base_channels, self.embed_dim)

    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss from its scores of real and fake images."""
        if self.loss == "hinge":
            return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))

    def _decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.network(z, labels)

    def _generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        if self.loss == "hinge":
            return -fake.mean()
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    # ------------------------------------------------------------------ fit
    def _train(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
               size: int, log: TrainingLog) -> None:
        """One discriminator and one generator update per step on DiffAugment-shifted images;
        the EMA of the generator, with recomputed BatchNorm statistics, is what is kept."""
        channels = images.shape[-1]
        device = self._torch_device()
        # 1. Build both networks from the seed, and their optimizers
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            gen_net = self._build_network(channels, num_classes, size)
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
        # 2. Training loop: one discriminator, then one generator update per step
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
            log.record(step, loss_d=float(loss_d.detach()), loss_g=float(loss_g.detach()))
        # 3. The weights to keep, with BatchNorm statistics that match them
        final = ema if ema is not None else gen_net
        self._recompute_batchnorm(final, num_classes, gen, device)
        final.eval()
        self.network = final

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
