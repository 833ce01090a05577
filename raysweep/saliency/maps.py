"""Saliency maps for each image's true class, at the image's own resolution."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from raysweep.saliency.cams import create_cam
from raysweep.saliency.target_layer import find_target_layer


def saliency_maps(reference, images: np.ndarray, labels: np.ndarray, method: str = "gradcam",
                  target_layer: str | None = None, batch_size: int = 128) -> np.ndarray:
    """float32 (N, H, W) in [0, 1], one map per uint8 image (N, H, W, C), for its label.

    Args:
        reference: a `ReferenceClassifier` (its model and input transform are used).
        images: the images to explain.
        labels: the true class of each image (CAM target).
        method: a name from `list_cam_methods()`.
        target_layer: a module path in the model; None finds the last spatial stage.
        batch_size: images per CAM pass.
    """
    height, width = images.shape[1:3]
    if len(images) == 0:
        return np.zeros((0, height, width), np.float32)
    size = reference.options.input_size
    _, layer = find_target_layer(reference.model, target_layer,
                                 (reference.in_chans, size, size))
    out = []
    with create_cam(method, reference.model, layer) as cam:
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            targets = [ClassifierOutputTarget(int(y)) for y in labels[chunk]]
            grayscale = cam(input_tensor=reference.to_input(images[chunk]), targets=targets)
            out.append(np.asarray(grayscale, np.float32))
    maps = torch.from_numpy(np.concatenate(out))[:, None]
    if maps.shape[-2:] != (height, width):  # CAMs come at the model's input size
        maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
    maps = maps[:, 0].numpy()
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return ((maps - low) / np.maximum(high - low, 1e-8)).astype(np.float32)
