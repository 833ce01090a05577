"""Classification Accuracy Score: train on synthetic images only, test on real ones.

A generator whose images carry their class (not just the look of the data) yields a classifier
that works on real images. The classifier is a timm backbone trained from scratch with AdamW;
the score is balanced accuracy on the real test split (the recipe is `training/optim.py`'s), comparable with the sweep's trials.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from raysweep.backbones import create_backbone
from raysweep.data.tensors import to_nchw
from raysweep.training.optim import fit_classifier


def classification_accuracy_score(synthetic_images: np.ndarray, synthetic_labels: np.ndarray,
                                  test_images: np.ndarray, test_labels: np.ndarray,
                                  num_classes: int, backbone: str = "resnet10t", epochs: int = 5,
                                  batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> float:
    """Balanced accuracy on the real test images of a classifier trained on synthetic ones."""
    x, y = to_nchw(synthetic_images, value_range=(-1.0, 1.0)), torch.from_numpy(synthetic_labels.astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial weights depend on the seed only
        model = create_backbone(backbone, num_classes=num_classes, in_chans=x.shape[1],
                                input_size=x.shape[-1])
    fit_classifier(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.05,
                   seed=seed)
    with torch.no_grad():
        test = to_nchw(test_images, value_range=(-1.0, 1.0))
        predicted = torch.cat([model(test[i:i + 512]).argmax(1) for i in range(0, len(test), 512)])
    return float(balanced_accuracy_score(test_labels, predicted.numpy()))
