"""What the two latent-variable generators, `dcgan` and `vae`, share: a network that decodes
(z, label) into an image, how many times it halves the resolution, sampling from per-image
seeded latents in batches of one shape, and its weights in a safetensors file."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from raysweep.data.tensors import ValueRange, to_uint8_nhwc
from raysweep.generators.trained import TrainedGenerator, torch_threads

_MAX_LEVELS = 3


def resolution_levels(size: int) -> int:
    """How many times the networks halve/double the resolution: until it would drop below 4."""
    levels = 0
    while levels < _MAX_LEVELS and size % 2 == 0 and size // 2 >= 4:
        size //= 2
        levels += 1
    return levels


class LatentGenerator(TrainedGenerator):
    """A trained network (`network`) decodes z ~ N(0, I) and a label into an image.

    A subclass builds the network (`_build_network`), trains it (`_train`) and decodes with it
    (`_decode`, images in `value_range`); it has the options `latent_dim` and `image_size`.

    Determinism: image i's z comes from `torch.Generator().manual_seed(seeds[i])`, and every
    decoding batch has the same shape (the last one is padded), so that no image's float
    rounding depends on how many images were asked for: image i depends only on the weights,
    labels[i] and seeds[i], and the first n images of a request are the same whatever is asked
    after them.
    """

    weights_file: ClassVar[str] = ""
    value_range: ClassVar[ValueRange] = (-1.0, 1.0)
    network: nn.Module | None = None

    def _build_network(self, channels: int, num_classes: int, size: int) -> nn.Module:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images (N, C, S, S) in `value_range` for latents z (N, latent_dim)."""
        raise NotImplementedError

    def _model_size_for(self, height: int, width: int) -> int:
        size = self.image_size if self.image_size is not None else max(height, width)
        if resolution_levels(size) == 0:
            raise ValueError(f"{self.name}.fit: the data's size {height}x{width} cannot be "
                             f"halved down to 4 pixels; set image_size (e.g. 16 or 32)")
        return size

    @torch.no_grad()
    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, C) image per (label, seed), at the size of the data `fit` saw."""
        labels, seeds = self._check_request("sample", labels, seeds)
        height, width, channels = self.data_shape
        device = next(self.network.parameters()).device
        batch = self.sample_batch_size
        self.network.eval()
        out = [np.zeros((0, height, width, channels), np.uint8)]
        with torch_threads(self.num_threads):
            for start in range(0, labels.size, batch):
                chunk_labels = labels[start:start + batch]
                count = chunk_labels.size
                z = torch.stack([
                    torch.randn(self.latent_dim, generator=torch.Generator().manual_seed(int(s)))
                    for s in seeds[start:start + batch]])
                y = torch.from_numpy(chunk_labels)
                if count < batch:
                    z = torch.cat([z, z[:1].expand(batch - count, -1)])
                    y = torch.cat([y, y[:1].expand(batch - count)])
                x = self._decode(z.to(device), y.to(device))[:count]
                out.append(to_uint8_nhwc(x, height, width, self.value_range))
        return np.concatenate(out)

    def _save_weights(self, directory: str) -> None:
        """The network's weights, as safetensors (via a temporary file: a file at the final
        name is always complete)."""
        from safetensors.torch import save_file

        path = os.path.join(directory, self.weights_file)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, path + ".tmp")
        os.replace(path + ".tmp", path)

    def _load_weights(self, directory: str) -> None:
        from safetensors.torch import load_file

        network = self._build_network(self.data_shape[2], self.num_classes, self.model_size)
        network.load_state_dict(load_file(os.path.join(directory, self.weights_file)))
        self.network = network.to(self._torch_device()).eval()
