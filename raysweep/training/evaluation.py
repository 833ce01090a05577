"""Predictions and the classification metrics every trial reports."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             roc_auc_score)


@torch.no_grad()
def predict_probabilities(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                          batch_size: int = 256, tta=None) -> np.ndarray:
    """Softmax probabilities (N, K); `model` maps a batch of images to logits, `tta` (optional)
    maps (model, batch) to probabilities averaged over its views."""
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
        f"{prefix}_macro_auc": macro_auc(labels, probabilities),
    }


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over classes (seeds 001, 003); NaN if a class is absent."""
    num_classes = probabilities.shape[1]
    if len(np.unique(labels)) < num_classes:
        return float("nan")
    if num_classes == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    rows = probabilities / np.clip(probabilities.sum(axis=1, keepdims=True), 1e-12, None)
    return float(roc_auc_score(labels, rows, multi_class="ovr", average="macro"))


def confusion(labels: np.ndarray, probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(num_classes)))
