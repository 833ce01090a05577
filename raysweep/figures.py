"""The PNGs raysweep logs: synthetic sample grids, inpainting galleries, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path,
                per_class: int = 8, title: str = "") -> Path:
    """One row per class with up to `per_class` images (uint8, N×H×W×C)."""
    rows = len(class_names)
    fig, axes = plt.subplots(rows, per_class, figsize=(per_class * 0.9, rows * 0.9 + 0.4),
                             squeeze=False)
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(members):
                image = images[members[col]]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray",
                          vmin=0, vmax=255)
        axes[row, 0].set_title(name, fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def inpaint_gallery(originals: np.ndarray, saliency: np.ndarray, masks: np.ndarray,
                    repainted: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path,
                    per_class: int = 2, title: str = "") -> Path:
    """Rows of original | saliency map | mask | repainted, `per_class` rows for each class."""
    rows = [i for c in range(len(class_names)) for i in np.flatnonzero(labels == c)[:per_class]]
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * 1.1, len(rows) * 1.1 + 0.5),
                             squeeze=False)
    for row, i in enumerate(rows):
        gray = lambda image: image[..., 0] if image.shape[-1] == 1 else image  # noqa: E731
        panels = [(gray(originals[i]), "gray", 255), (saliency[i], "jet", 255),
                  (masks[i], "gray", 1), (gray(repainted[i]), "gray", 255)]
        for col, (image, cmap, top) in enumerate(panels):
            axes[row, col].imshow(image, cmap=cmap, vmin=0, vmax=top)
            axes[row, col].axis("off")
        axes[row, 0].text(-0.08, 0.5, class_names[labels[i]], fontsize=6, ha="right",
                          va="center", transform=axes[row, 0].transAxes)
    for col, name in enumerate(("original", "saliency", "mask", "repainted")):
        axes[0, col].set_title(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], path: Path,
                            title: str = "") -> Path:
    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=6,
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
