"""Predictions and the classification metrics every trial reports."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
                          tta=None) -> np.ndarray:
    """Softmax probabilities (N, K) for images already normalised for the model."""
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        probs = tta(model, batch) if tta is not None else torch.softmax(model(batch), dim=1)
        chunks.append(probs.float().cpu().numpy())
    return np.concatenate(chunks)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, prefix: str) -> dict[str, float]:
    """accuracy, balanced accuracy and macro F1 under `prefix_` names."""
    predicted = probabilities.argmax(axis=1)
    return {
        f"{prefix}_accuracy": float(accuracy_score(labels, predicted)),
        f"{prefix}_balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        f"{prefix}_macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def confusion(labels: np.ndarray, probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(num_classes)))
