"""What the two latent-variable generators, `dcgan` and `vae`, share: how many times their
networks halve the resolution, decoding per-image seeded latents in batches of one shape, and
their weights in a safetensors file."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from raysweep.data.tensors import ValueRange, to_uint8_nhwc

_MAX_LEVELS = 3


def resolution_levels(size: int) -> int:
    """How many times the networks halve/double the resolution: until it would drop below 4."""
    levels = 0
    while levels < _MAX_LEVELS and size % 2 == 0 and size // 2 >= 4:
        size //= 2
        levels += 1
    return levels


def decode_seeded_latents(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          labels: np.ndarray, seeds: np.ndarray, *, latent_dim: int,
                          batch_size: int, device: torch.device,
                          data_shape: tuple[int, int, int], value_range: ValueRange,
                          temperature: float = 1.0) -> np.ndarray:
    """uint8 (N, H, W, C) images `decode(z, y)` makes from z = temperature * N(0, I), image i's
    z drawn from `torch.Generator().manual_seed(seeds[i])`.

    Every batch has the same shape (the last one is padded), so that no image's float rounding
    depends on how many images were asked for: image i depends only on the weights, labels[i]
    and seeds[i].
    """
    height, width, channels = data_shape
    out = [np.zeros((0, height, width, channels), np.uint8)]
    for start in range(0, labels.size, batch_size):
        chunk_labels = labels[start:start + batch_size]
        count = chunk_labels.size
        z = torch.stack([
            torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds[start:start + batch_size]]) * temperature
        y = torch.from_numpy(chunk_labels)
        if count < batch_size:
            z = torch.cat([z, z[:1].expand(batch_size - count, -1)])
            y = torch.cat([y, y[:1].expand(batch_size - count)])
        x = decode(z.to(device), y.to(device))[:count]
        out.append(to_uint8_nhwc(x, height, width, value_range))
    return np.concatenate(out)


def save_module(module: nn.Module, path: str) -> None:
    """Write the module's weights to `path` (safetensors; via a temporary file, so a file at
    `path` is always complete)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_module(module: nn.Module, path: str) -> None:
    """Load weights that `save_module` wrote into `module` (of the same architecture)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(path))
