"""How synthetic images enter a trial's training set: modes `add`, `replace` and `only`.

- `add`: all real training images plus round(ratio × n_real) synthetic ones.
- `replace`: the total stays n_real; a fraction `ratio` of real images (stratified, seeded)
  is swapped for synthetic ones (seed 002's half/half is ratio 0.5).
- `only`: round(ratio × n_real) synthetic images and no real ones.

Synthetic images are always a prefix of one pool, so the set used at a smaller ratio is a
subset of the set used at a larger one (for the same seed). Images varied toward another class
(img2img, `translation: other`) carry soft labels (`soft_targets`).
"""

from __future__ import annotations

import numpy as np

MODES = ("add", "replace", "only")


def synthetic_count(ratio: float, mode: str, n_real: int) -> int:
    """How many pool images a trial with this ratio and mode reads."""
    if mode not in MODES:
        raise ValueError(f"unknown synthesis mode {mode!r}; known: {', '.join(MODES)}")
    return int(round(float(ratio) * n_real))


def real_indices(labels: np.ndarray, ratio: float, mode: str, seed: int) -> np.ndarray:
    """Which real training images a trial keeps (sorted indices)."""
    n_real = len(labels)
    if mode == "only":
        return np.arange(0)
    if mode == "add" or ratio <= 0:
        return np.arange(n_real)
    n_drop = synthetic_count(ratio, mode, n_real)
    rng = np.random.default_rng(seed)
    # Drop the same share from every class so the real part stays stratified; the per-class
    # counts are rounded by largest remainder, so they add up to n_drop exactly and the
    # training set keeps its total (per-class rounding lost one image in 15 over 3 classes).
    order = np.argsort(rng.random(n_real), kind="stable")
    classes, sizes = np.unique(labels, return_counts=True)
    per_class = largest_remainder(n_drop, sizes)
    dropped: list[int] = []
    for c, count in zip(classes, per_class):
        members = order[labels[order] == c]
        dropped.extend(members[:count].tolist())
    keep = np.setdiff1d(np.arange(n_real), np.array(dropped, dtype=np.int64))
    return np.sort(keep)


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to `weights` that sum to `total` exactly (Hamilton's method: floor
    every share, then give the units left to the largest remainders, ties to the first)."""
    weights = np.asarray(weights, dtype=np.float64)
    shares = total * weights / weights.sum()
    counts = np.floor(shares).astype(np.int64)
    left = int(total - counts.sum())
    counts[np.argsort(-(shares - counts), kind="stable")[:left]] += 1
    return counts


def compose(real_images: np.ndarray, real_labels: np.ndarray, synthetic_images: np.ndarray,
            synthetic_labels: np.ndarray, ratio: float, mode: str, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trial's training images, labels and a mask that is True for synthetic rows.

    `synthetic_images` must hold at least `synthetic_count(ratio, mode, n_real)` images; the
    first that many are used.
    """
    n_synthetic = synthetic_count(ratio, mode, len(real_labels))
    if len(synthetic_labels) < n_synthetic:
        raise ValueError(f"need {n_synthetic} synthetic images, got {len(synthetic_labels)}")
    keep = real_indices(real_labels, ratio, mode, seed)
    images = np.concatenate([real_images[keep], synthetic_images[:n_synthetic]])
    labels = np.concatenate([real_labels[keep], synthetic_labels[:n_synthetic]]).astype(np.int64)
    is_synthetic = np.concatenate([np.zeros(len(keep), bool), np.ones(n_synthetic, bool)])
    return images, labels, is_synthetic


def soft_targets(labels: np.ndarray, is_synthetic: np.ndarray, num_classes: int,
                 source_labels: np.ndarray | None, weights: np.ndarray | None) -> np.ndarray | None:
    """Probability targets (N, K) for a training set whose synthetic rows (in order) have soft
    labels: `weights` on their own label, the rest on `source_labels`; real rows stay one-hot.
    None when no row needs one (every weight is 1)."""
    if weights is None or source_labels is None or bool(np.all(weights >= 1.0)):
        return None
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    rows = np.flatnonzero(is_synthetic)
    share = weights[:len(rows)].astype(np.float32)
    targets[rows] *= share[:, None]
    targets[rows, source_labels[:len(rows)]] += 1.0 - share
    return targets
