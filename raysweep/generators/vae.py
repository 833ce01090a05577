"""`vae`: a small class-conditional VAE that raysweep trains itself (seed 001).

The encoder, the decoder and the training loop live here; what every generator raysweep
trains shares (options recorded from the constructor, fit's checks, save/load) is
`TrainedGenerator` in `trained.py`, and sampling from seeded latents, shared with `dcgan`, is
`LatentGenerator` in `latent.py`.

* Encoder q(z | x, y): strided convolutions + LeakyReLU halve the resolution down to a small
  feature map; its flattened features and the label's embedding go through a hidden layer to
  the mean and log-variance of z.
* Decoder p(x | z, y): z concatenated with the label's embedding, a hidden layer, a linear lift
  to the small feature map, then transposed convolutions (stride 2) + LeakyReLU back up to
  `image_size`; the last one gives per-pixel logits.
* Loss: reconstruction (per-pixel BCE on intensities in [0, 1], or squared error) summed over
  pixels, plus `beta` times the KL divergence to N(0, I), averaged over the batch; Adam with a
  cosine learning-rate decay.

Sampling decodes z = `temperature` * N(0, I) and returns the decoder's mean image (no pixel
noise), so samples are smooth rather than speckled; a temperature below 1 trades variety for
cleaner images. There is no batch normalisation, so nothing differs between train and eval.

Determinism: `fit` with the same data, config and seed gives the same weights on the same
device and thread count. `sample` draws image i's z from
`torch.Generator().manual_seed(seeds[i])` and decodes in batches of one fixed shape, so image i
depends only on the weights, `labels[i]` and `seeds[i]`, and the first n images of a request
are the same whatever is asked after them.
"""

from __future__ import annotations

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
    "cpu": {"steps": 2000, "base_channels": 32},
    "cuda": {"steps": 5000, "base_channels": 64},
}

_RECONSTRUCTIONS = ("bce", "mse")


class ConditionalVAE(nn.Module):
    """Encoder (image, label) -> (mu, logvar) and decoder (z, label) -> pixel logits."""

    def __init__(self, num_classes: int, channels: int, size: int, latent_dim: int,
                 base_channels: int, hidden_dim: int, embed_dim: int) -> None:
        super().__init__()
        levels = resolution_levels(size)
        self.start = size // 2 ** levels
        self.start_channels = base_channels * 2 ** (levels - 1)
        flat = self.start_channels * self.start ** 2
        self.embed = nn.Embedding(num_classes, embed_dim)
        down: list[nn.Module] = []
        width_in, width = channels, base_channels
        for _ in range(levels):
            down += [nn.Conv2d(width_in, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            width_in, width = width, width * 2
        self.encoder = nn.Sequential(*down, nn.Flatten())
        self.encoder_head = nn.Sequential(nn.Linear(flat + embed_dim, hidden_dim),
                                          nn.LeakyReLU(0.2, inplace=True),
                                          nn.Linear(hidden_dim, 2 * latent_dim))
        self.decoder_head = nn.Sequential(nn.Linear(latent_dim + embed_dim, hidden_dim),
                                          nn.LeakyReLU(0.2, inplace=True),
                                          nn.Linear(hidden_dim, flat),
                                          nn.LeakyReLU(0.2, inplace=True))
        up: list[nn.Module] = []
        width = self.start_channels
        for _ in range(levels - 1):
            up += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            width //= 2
        up += [nn.ConvTranspose2d(width, channels, 4, 2, 1)]
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.encoder(x), self.embed(labels)], dim=1)
        mu, logvar = self.encoder_head(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel logits (N, C, S, S); `sigmoid` of them is the mean image in [0, 1]."""
        h = self.decoder_head(torch.cat([z, self.embed(labels)], dim=1))
        return self.decoder(h.view(-1, self.start_channels, self.start, self.start))


@register_generator("vae")
class VAEGenerator(LatentGenerator):
    """Class-conditional VAE, trained from scratch on the train split.

    Args:
        latent_dim: size of z.
        hidden_dim: width of the hidden layer between the feature map and z, both ways.
        embed_dim: size of the label embedding (shared by encoder and decoder).
        base_channels: channels of the encoder's first and the decoder's last hidden layer;
            they double at each lower resolution. "auto": 32 on CPU, 64 on CUDA.
        image_size: the square resolution the model trains and samples at; samples are resized
            back to the size of the images `fit` saw. None: the data's own size.
        reconstruction: "bce" (per-pixel binary cross-entropy on intensities) or "mse"
            (squared error on intensities in [0, 1]).
        beta: weight of the KL term (1 is the plain VAE bound).
        steps: optimizer steps in `fit`.
            "auto": 2000 on CPU, 5000 on CUDA.
        batch_size: images per optimizer step (drawn with replacement, a fresh seeded draw each step).
        lr: peak Adam learning rate (cosine decay to 0 over `steps`).
        temperature: scale of z at sampling.
        **runtime: device, num_threads, sample_batch_size (see `TrainedGenerator`).
    """

    name = "vae"
    state_file = "raysweep_vae.json"
    weights_file = "vae.safetensors"
    value_range = (0.0, 1.0)

    @register_to_config
    def __init__(
        self,
        *,
        latent_dim: int = 16,
        hidden_dim: int = 256,
        embed_dim: int = 16,
        base_channels: int | str = "auto",
        image_size: int | None = None,
        reconstruction: str = "bce",
        beta: float = 1.0,
        steps: int | str = "auto",
        batch_size: int = 64,
        lr: float = 2e-3,
        temperature: float = 1.0,
        **runtime,
    ) -> None:
        super().__init__(**runtime)
        self._resolve_auto(_DEVICE_DEFAULTS, "steps", "base_channels")
        if reconstruction not in _RECONSTRUCTIONS:
            raise ValueError(f"vae: reconstruction {reconstruction!r} is not one of "
                             f"{', '.join(_RECONSTRUCTIONS)}")
        self._require_positive_ints(steps=self.steps, batch_size=batch_size, latent_dim=latent_dim,
                                    hidden_dim=hidden_dim, embed_dim=embed_dim,
                                    base_channels=self.base_channels)
        if image_size is not None and (not isinstance(image_size, int)
                                       or resolution_levels(image_size) == 0):
            raise ValueError(f"vae: image_size must be even and >= 8 (or None), got {image_size!r}")
        if beta < 0:
            raise ValueError(f"vae: beta must be >= 0, got {beta!r}")
        if temperature < 0:
            raise ValueError(f"vae: temperature must be >= 0, got {temperature!r}")

    # ------------------------------------------------------------------ parts
    def _build_network(self, channels: int, num_classes: int, size: int) -> ConditionalVAE:
        return ConditionalVAE(num_classes, channels, size, self.latent_dim, self.base_channels,
                              self.hidden_dim, self.embed_dim)

    def _decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image (no pixel noise) for z scaled by the temperature."""
        return torch.sigmoid(self.network.decode(z * self.temperature, labels))

    def _reconstruction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction loss, summed over pixels."""
        if self.reconstruction == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            loss = (torch.sigmoid(logits) - target).square()
        return loss.flatten(1).sum(dim=1)

    # ------------------------------------------------------------------ fit
    def _train(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
               size: int, log: TrainingLog) -> None:
        """The negative evidence lower bound (reconstruction + beta * KL) with Adam and a
        cosine learning-rate decay."""
        channels = images.shape[-1]
        device = self._torch_device()
        # 1. Build the model from the seed, and its optimizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = self._build_network(channels, num_classes, size)
        model.to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        lr_sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / self.steps)))
        gen = torch.Generator().manual_seed(int(seed) + 1)
        data = to_nchw(images, size, (0.0, 1.0)).to(device)
        targets = torch.from_numpy(labels).to(device)
        n = data.shape[0]
        # 2. Training loop
        for step in range(1, self.steps + 1):
            index = torch.randint(0, n, (self.batch_size,), generator=gen).to(device)
            x, y = data[index], targets[index]
            mu, logvar = model.encode(x, y)
            eps = torch.randn(mu.shape, generator=gen).to(device)
            z = mu + eps * torch.exp(0.5 * logvar)
            recon = self._reconstruction_loss(model.decode(z, y), x).mean()
            kl = (0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)).sum(dim=1).mean()
            loss = recon + self.beta * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # The loss is summed over pixels, so early gradients can be large; clip the outliers.
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            optimizer.step()
            lr_sched.step()
            log.record(step, recon=float(recon.detach()), kl=float(kl.detach()))
        self.network = model.eval()
