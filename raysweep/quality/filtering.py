"""Filtering as a sweep stage: keep the synthetic images the reference classifier recognises.

A synthetic image is dropped when the reference classifier (trained on the real split) gives its
own label a probability below `filter_threshold`. Filtering selects rows of a trial's training
set in memory; the pool in the store is never changed, so trials with other thresholds (and
later sweeps) read the same images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# uint8 images (N,H,W,C) -> class logits (N,K): the reference classifier's `logits`.
LogitsFn = Callable[[np.ndarray], torch.Tensor]


def own_label_confidence(logits: LogitsFn, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The probability the classifier gives each image's own label."""
    if not len(images):
        return np.zeros(0, np.float32)
    probabilities = torch.softmax(logits(images).float(), dim=1).numpy()
    return probabilities[np.arange(len(labels)), labels]


def keep_confident(logits: LogitsFn, images: np.ndarray, labels: np.ndarray,
                   is_synthetic: np.ndarray, threshold: float) -> np.ndarray:
    """Row mask over a training set: every real row, and the synthetic rows whose own-label
    confidence reaches `threshold` (threshold 0 keeps everything without a forward pass)."""
    keep = np.ones(len(labels), bool)
    if threshold <= 0 or not is_synthetic.any():
        return keep
    rows = np.flatnonzero(is_synthetic)
    keep[rows] = own_label_confidence(logits, images[rows], labels[rows]) >= threshold
    return keep
