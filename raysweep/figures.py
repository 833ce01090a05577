"""The PNGs raysweep logs: synthetic sample grids, inpainting galleries, confusion matrices.

Grids are torchvision's `make_grid` (one row per class, empty cells left blank) with the class
names along the left edge; confusion matrices are sklearn's `ConfusionMatrixDisplay`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

PADDING = 2


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path,
                per_class: int = 8, title: str = "") -> Path:
    """One row per class with up to `per_class` images (uint8, N×H×W×C)."""
    height, width, channels = images.shape[1:]
    cells = torch.zeros((len(class_names) * per_class, channels, height, width), dtype=torch.uint8)
    for row in range(len(class_names)):
        members = np.flatnonzero(labels == row)[:per_class]
        if len(members):
            cells[row * per_class:row * per_class + len(members)] = \
                torch.from_numpy(images[members]).permute(0, 3, 1, 2)
    grid = make_grid(cells, nrow=per_class, padding=PADDING, pad_value=255).permute(1, 2, 0)
    fig, ax = plt.subplots(figsize=(per_class * 0.9, len(class_names) * 0.9 + 0.4))
    ax.imshow(grid.numpy() if channels == 3 else grid[..., 0].numpy(), cmap="gray",
              vmin=0, vmax=255)
    ax.set_yticks([PADDING + (height + PADDING) * (r + 0.5) for r in range(len(class_names))],
                  class_names, fontsize=7)
    ax.set_xticks([])
    if title:
        ax.set_title(title, fontsize=9)
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
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation="vertical")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def img2img_gallery(sources: np.ndarray, source_index: np.ndarray, variants: np.ndarray,
                    targets: np.ndarray, weights: np.ndarray, train_labels: np.ndarray,
                    class_names: list[str], path: Path, per_class: int = 2,
                    columns: int = 4, title: str = "") -> Path:
    """Rows of source | its variants (up to `columns`), `per_class` sources of each class.

    Args:
        sources: the training images (uint8, N x H x W x C) the variants start from.
        source_index: each variant's source (an index into `sources`).
        variants, targets, weights: the variants, the class each was denoised toward and the
            target's share of its soft label.
        train_labels: the sources' classes.
    """
    chosen = []
    for c in range(len(class_names)):
        used = [s for s in dict.fromkeys(source_index.tolist()) if train_labels[s] == c]
        chosen += used[:per_class]
    fig, axes = plt.subplots(len(chosen), columns + 1,
                             figsize=((columns + 1) * 1.1, len(chosen) * 1.15 + 0.5),
                             squeeze=False)
    gray = lambda image: image[..., 0] if image.shape[-1] == 1 else image  # noqa: E731
    for row, source in enumerate(chosen):
        panels = [(sources[source], class_names[train_labels[source]])]
        for i in np.flatnonzero(source_index == source)[:columns]:
            name = class_names[targets[i]]
            panels.append((variants[i], name if weights[i] >= 1 else f"{name} {weights[i]:.2f}"))
        for col in range(columns + 1):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(panels):
                ax.imshow(gray(panels[col][0]), cmap="gray", vmin=0, vmax=255)
                ax.set_title(panels[col][1], fontsize=6)
    axes[0, 0].text(0.5, 1.35, "source", fontsize=7, ha="center",
                    transform=axes[0, 0].transAxes)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
