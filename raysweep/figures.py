"""The PNGs raysweep logs: synthetic sample grids, inpainting galleries, confusion matrices.

Grids are torchvision's `make_grid` (one row per class, empty cells left blank) with the class
names along the left edge; confusion matrices are sklearn's `ConfusionMatrixDisplay`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
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
    panels = [[Panel(originals[i], class_names[labels[i]]), Panel(saliency[i], cmap="jet"),
               Panel(masks[i], top=1), Panel(repainted[i])] for i in rows]
    return panel_grid(panels, ["original", "saliency", "mask", "repainted"], path, title)


def img2img_gallery(sources: np.ndarray, source_index: np.ndarray, variants: np.ndarray,
                    targets: np.ndarray, weights: np.ndarray, train_labels: np.ndarray,
                    class_names: list[str], path: Path, per_class: int = 2,
                    columns: int = 4, title: str = "") -> Path:
    """Rows of source | its variants (up to `columns`), `per_class` sources of each class;
    each variant is titled with the class it was denoised toward and that class's share of
    its label (when below 1).

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
    panels = []
    for source in chosen:
        row = [Panel(sources[source], class_names[train_labels[source]])]
        for i in np.flatnonzero(source_index == source)[:columns]:
            name = class_names[targets[i]]
            row.append(Panel(variants[i], caption=name if weights[i] >= 1
                             else f"{name} {weights[i]:.2f}"))
        panels.append(row)
    shown = max(len(row) for row in panels) - 1  # the variants the trial read, at most columns
    return panel_grid(panels, ["source"] + ["variants"] + [""] * (shown - 1), path, title)


@dataclass(frozen=True)
class Panel:
    """One image of a gallery: uint8 (H, W[, C]) shown on 0..`top`, with an optional row
    label (first column) or caption."""

    image: np.ndarray
    label: str = ""
    cmap: str = "gray"
    top: int = 255
    caption: str = ""


def panel_grid(rows: list[list[Panel]], headers: list[str], path: Path, title: str) -> Path:
    """A grid of image panels, one list per row, column headers on top."""
    columns = len(headers)
    width = max(columns * 1.1, 3.6)  # wide enough for the title
    fig, axes = plt.subplots(len(rows), columns, figsize=(width, len(rows) * 1.15 + 0.7),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(row):
                continue
            panel = row[c]
            image = panel.image[..., 0] if panel.image.ndim == 3 and \
                panel.image.shape[-1] == 1 else panel.image
            ax.imshow(image, cmap=panel.cmap, vmin=0, vmax=panel.top)
            if panel.caption:
                ax.set_title(panel.caption, fontsize=6)
            if panel.label:
                ax.text(-0.08, 0.5, panel.label, fontsize=6, ha="right", va="center",
                        transform=ax.transAxes)
    for c, name in enumerate(headers):
        if name:
            axes[0, c].text(0.5, 1.3, name, fontsize=7, ha="center", transform=axes[0, c].transAxes)
    if title:
        fig.suptitle(textwrap.fill(title, int(width * 14)), fontsize=7)
    # Room above the column headers for the title.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_size_inches()[1]))
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
