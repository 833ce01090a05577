"""`vae`: a small class-conditional VAE that raysweep trains itself (seed 001).

Self-contained on purpose (diffusers' single-file policy): the encoder, the decoder, the
training loop and the sampler for this generator all live here.

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

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raysweep.generators.base import register_generator, resolve_auto

# What "auto" means on each device: the CPU defaults fit a 2-core laptop in minutes; a GPU
# affords a wider network and more steps at the data's native resolution.
_DEVICE_DEFAULTS = {
    "cpu": {"steps": 2000, "base_channels": 32},
    "cuda": {"steps": 5000, "base_channels": 64},
}

_CONFIG_FILE = "raysweep_vae.json"
_WEIGHTS_FILE = "vae.safetensors"
_RECONSTRUCTIONS = ("bce", "mse")
_MAX_LEVELS = 3


@contextlib.contextmanager
def _threads(num_threads: int | None):
    """Use `num_threads` intra-op threads inside the block only, then restore the old count."""
    if not num_threads:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _levels(size: int) -> int:
    """How many times the networks halve/double the resolution: until it would drop below 4."""
    levels = 0
    while levels < _MAX_LEVELS and size % 2 == 0 and size // 2 >= 4:
        size //= 2
        levels += 1
    return levels


def _to_model_space(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, S, S) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)


def _to_uint8(x: torch.Tensor, height: int, width: int) -> np.ndarray:
    """float (N, C, S, S) in [0, 1] -> uint8 (N, H, W, C)."""
    x = x.float().clamp(0.0, 1.0)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > width)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class ConditionalVAE(nn.Module):
    """Encoder (image, label) -> (mu, logvar) and decoder (z, label) -> pixel logits."""

    def __init__(self, num_classes: int, channels: int, size: int, latent_dim: int,
                 base_channels: int, hidden_dim: int, embed_dim: int) -> None:
        super().__init__()
        levels = _levels(size)
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
class VAEGenerator:
    """Class-conditional VAE, trained from scratch on the train split.

    Args:
        steps: optimizer steps in `fit`.
            "auto": 2000 on CPU, 5000 on CUDA.
        batch_size: images per optimizer step (drawn with replacement, a fresh seeded draw each step).
        lr: peak Adam learning rate (cosine decay to 0 over `steps`).
        latent_dim: size of z.
        hidden_dim: width of the hidden layer between the feature map and z, both ways.
        embed_dim: size of the label embedding (shared by encoder and decoder).
        base_channels: channels of the encoder's first and the decoder's last hidden layer;
            they double at each lower resolution. "auto": 32 on CPU, 64 on CUDA.
        image_size: the square resolution the model trains and samples at; samples are resized
            back to the size of the images `fit` saw. None: the data's own size.
        beta: weight of the KL term (1 is the plain VAE bound).
        reconstruction: "bce" (per-pixel binary cross-entropy on intensities) or "mse"
            (squared error on intensities in [0, 1]).
        temperature: scale of z at sampling.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... Not part of `config()`.
        num_threads: torch intra-op threads while fitting/sampling (restored afterwards);
            None leaves torch's setting alone. Not part of `config()`.
        sample_batch_size: images per decoder call in `sample`. Not part of `config()`.
    """

    name = "vae"

    def __init__(
        self,
        *,
        steps: int | str = "auto",
        batch_size: int = 64,
        lr: float = 2e-3,
        latent_dim: int = 16,
        hidden_dim: int = 256,
        embed_dim: int = 16,
        base_channels: int | str = "auto",
        image_size: int | None = None,
        beta: float = 1.0,
        reconstruction: str = "bce",
        temperature: float = 1.0,
        device: str = "auto",
        num_threads: int | None = None,
        sample_batch_size: int = 256,
    ) -> None:
        resolved = resolve_auto(str(device), _DEVICE_DEFAULTS, steps=steps,
                                base_channels=base_channels)
        steps, base_channels = resolved["steps"], resolved["base_channels"]
        if reconstruction not in _RECONSTRUCTIONS:
            raise ValueError(f"vae: reconstruction {reconstruction!r} is not one of "
                             f"{', '.join(_RECONSTRUCTIONS)}")
        for key, value in (("steps", steps), ("batch_size", batch_size),
                           ("latent_dim", latent_dim), ("hidden_dim", hidden_dim),
                           ("embed_dim", embed_dim), ("base_channels", base_channels),
                           ("sample_batch_size", sample_batch_size)):
            if int(value) < 1:
                raise ValueError(f"vae: {key} must be >= 1, got {value!r}")
        if image_size is not None and _levels(int(image_size)) == 0:
            raise ValueError(f"vae: image_size must be even and >= 8 (or None), got {image_size!r}")
        if beta < 0:
            raise ValueError(f"vae: beta must be >= 0, got {beta!r}")
        if temperature < 0:
            raise ValueError(f"vae: temperature must be >= 0, got {temperature!r}")
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.latent_dim = int(latent_dim)
        self.hidden_dim = int(hidden_dim)
        self.embed_dim = int(embed_dim)
        self.base_channels = int(base_channels)
        self.image_size = None if image_size is None else int(image_size)
        self.beta = float(beta)
        self.reconstruction = str(reconstruction)
        self.temperature = float(temperature)
        self.device = str(device)
        self.num_threads = None if num_threads is None else int(num_threads)
        self.sample_batch_size = int(sample_batch_size)
        self.model: ConditionalVAE | None = None
        # What fit() saw, needed to sample: set by fit() or load().
        self.data_shape: tuple[int, int, int] | None = None  # (H, W, C)
        self.num_classes: int | None = None
        self.model_size: int | None = None
        self.train_seconds: float | None = None
        self.last_losses: dict[str, float] | None = None

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        """Every hyperparameter that changes the weights or the samples (hashed into pool keys)."""
        return {
            "generator": self.name,
            "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
            "latent_dim": self.latent_dim, "hidden_dim": self.hidden_dim,
            "embed_dim": self.embed_dim, "base_channels": self.base_channels,
            "image_size": self.image_size, "beta": self.beta,
            "reconstruction": self.reconstruction, "temperature": self.temperature,
        }

    # ------------------------------------------------------------------ parts
    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _build_model(self, channels: int, num_classes: int, size: int) -> ConditionalVAE:
        return ConditionalVAE(num_classes, channels, size, self.latent_dim, self.base_channels,
                              self.hidden_dim, self.embed_dim)

    def _reconstruction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction loss, summed over pixels."""
        if self.reconstruction == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            loss = (torch.sigmoid(logits) - target).square()
        return loss.flatten(1).sum(dim=1)

    # ------------------------------------------------------------------ fit
    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None) -> None:
        """Train from scratch on `images` (uint8 (N, H, W, C)) with `labels` (int, < num_classes)."""
        # 1. Check inputs
        images = np.asarray(images)
        labels = np.asarray(labels).astype(np.int64)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"vae.fit: images must be uint8 (N, H, W, C), got "
                             f"{images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],) or images.shape[0] == 0:
            raise ValueError(f"vae.fit: need one label per image and at least one image, got "
                             f"{images.shape[0]} images and labels of shape {labels.shape}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"vae.fit: labels must lie in [0, {num_classes}), got "
                             f"[{labels.min()}, {labels.max()}]")
        height, width, channels = (int(s) for s in images.shape[1:])
        size = self.image_size if self.image_size is not None else max(height, width)
        if _levels(size) == 0:
            raise ValueError(f"vae.fit: the data's size {height}x{width} cannot be halved "
                             f"down to 4 pixels; set image_size (e.g. 16 or 32)")
        started = time.perf_counter()
        device = self._torch_device()
        with _threads(self.num_threads):
            # 2. Build the model from the seed, and its optimizer
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = self._build_model(channels, num_classes, size)
            model.to(device).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
            lr_sched = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / self.steps)))
            gen = torch.Generator().manual_seed(int(seed) + 1)
            data = _to_model_space(images, size).to(device)
            targets = torch.from_numpy(labels).to(device)
            n = data.shape[0]
            report_every = max(1, self.steps // 10)
            running: dict[str, float] = {}
            # 3. Training loop
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
                values = {"recon": float(recon.detach()), "kl": float(kl.detach())}
                for key, value in values.items():
                    if not math.isfinite(value):
                        raise FloatingPointError(f"vae.fit: {key} loss became {value} at step "
                                                 f"{step}; lower lr (now {self.lr})")
                    running[key] = value if key not in running else 0.9 * running[key] + 0.1 * value
                if progress is not None and (step % report_every == 0 or step == self.steps):
                    progress(f"vae step {step}/{self.steps} recon {running['recon']:.2f} "
                             f"kl {running['kl']:.2f} ({time.perf_counter() - started:.0f}s)")
            model.eval()
        self.model = model
        self.last_losses = running
        self.data_shape = (height, width, channels)
        self.num_classes = int(num_classes)
        self.model_size = size
        self.train_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ sample
    @torch.no_grad()
    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, C) image per (label, seed), at the size of the data `fit` saw."""
        # 1. Check inputs
        if self.model is None or self.data_shape is None:
            raise RuntimeError("vae.sample: call fit() or load() first")
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        seeds = np.asarray(seeds).astype(np.int64).reshape(-1)
        if labels.shape != seeds.shape:
            raise ValueError(f"vae.sample: need one seed per label, got {labels.shape[0]} "
                             f"labels and {seeds.shape[0]} seeds")
        height, width, channels = self.data_shape
        if labels.size == 0:
            return np.zeros((0, height, width, channels), np.uint8)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"vae.sample: labels must lie in [0, {self.num_classes})")
        # 2. Decode in batches of one fixed shape (the last one padded), so that no image's
        #    float rounding depends on how many images were asked for
        device = next(self.model.parameters()).device
        batch = self.sample_batch_size
        out = []
        with _threads(self.num_threads):
            for start in range(0, labels.size, batch):
                chunk_labels = labels[start:start + batch]
                chunk_seeds = seeds[start:start + batch]
                count = chunk_labels.size
                z = torch.stack([
                    torch.randn(self.latent_dim, generator=torch.Generator().manual_seed(int(s)))
                    for s in chunk_seeds]) * self.temperature
                y = torch.from_numpy(chunk_labels)
                if count < batch:
                    z = torch.cat([z, z[:1].expand(batch - count, -1)])
                    y = torch.cat([y, y[:1].expand(batch - count)])
                x = torch.sigmoid(self.model.decode(z.to(device), y.to(device)))[:count]
                out.append(_to_uint8(x, height, width))
        return np.concatenate(out)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str) -> None:
        """Write the model's weights (safetensors) and raysweep_vae.json into `directory`."""
        from safetensors.torch import save_file

        if self.model is None:
            raise RuntimeError("vae.save: nothing to save; call fit() first")
        os.makedirs(directory, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tmp = os.path.join(directory, _WEIGHTS_FILE + ".tmp")
        save_file(state, tmp)
        os.replace(tmp, os.path.join(directory, _WEIGHTS_FILE))
        meta = {"config": self.config(), "data_shape": list(self.data_shape),
                "num_classes": self.num_classes, "model_size": self.model_size,
                "train_seconds": self.train_seconds}
        tmp = os.path.join(directory, _CONFIG_FILE + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(directory, _CONFIG_FILE))

    def load(self, directory: str) -> None:
        """Load what `save` wrote; the saved config replaces this instance's hyperparameters."""
        from safetensors.torch import load_file

        path = os.path.join(directory, _CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vae.load: {path} not found; is {directory!r} a directory "
                                    f"written by VAEGenerator.save?")
        with open(path) as handle:
            meta = json.load(handle)
        config = dict(meta["config"])
        config.pop("generator", None)
        fresh = VAEGenerator(**config, device=self.device, num_threads=self.num_threads,
                             sample_batch_size=self.sample_batch_size)
        self.__dict__.update(fresh.__dict__)
        height, width, channels = (int(s) for s in meta["data_shape"])
        num_classes, size = int(meta["num_classes"]), int(meta["model_size"])
        model = self._build_model(channels, num_classes, size)
        model.load_state_dict(load_file(os.path.join(directory, _WEIGHTS_FILE)))
        self.model = model.to(self._torch_device()).eval()
        self.data_shape = (height, width, channels)
        self.num_classes = num_classes
        self.model_size = size
        self.train_seconds = meta.get("train_seconds")
