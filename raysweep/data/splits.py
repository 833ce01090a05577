"""Seeded, stratified train/val/test splits, with the low-data `per_class` cut on train only.

Each class is shuffled once with the seed and cut into test, val and train in that order, so:
val and test do not depend on `per_class`, and the train images kept for `per_class=k` are a
subset of those kept for any larger k (nested, like the synthetic pools' prefixes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from raysweep.data.base import ImageDataset
from raysweep.errors import UserError

MIN_PER_CLASS = 3  # one image each for train, val and test


@dataclass(frozen=True)
class DataSplits:
    """The three splits, and their row indices into the dataset they were cut from."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    train_index: np.ndarray
    val_index: np.ndarray
    test_index: np.ndarray

    def fingerprint(self) -> str:
        """sha256 naming exactly these three splits (data, labels and class names)."""
        digest = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            digest.update(part.fingerprint().encode())
        return digest.hexdigest()


def split_dataset(ds: ImageDataset, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
                  per_class: int | None = None, seed: int = 0) -> DataSplits:
    """Cut `ds` into stratified train, val and test splits, deterministically for `seed`.

    Args:
        ds: the full dataset.
        val_fraction: share of each class for validation, in [0, 1); 0 gives an empty split,
            otherwise every class gets at least one image.
        test_fraction: share of each class for test, same rules.
        per_class: keep at most this many train images per class (None keeps all). Val and
            test stay whole so metrics stay comparable across data regimes.
        seed: the shuffle seed.

    Raises:
        UserError: bad fractions or per_class, or a class with fewer than 3 images.
    """
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UserError(f"split: {key} must be a number in [0, 1), got {value!r}; "
                            f"set data.{key} to e.g. 0.1")
    if val_fraction + test_fraction >= 1:
        raise UserError(f"split: val_fraction + test_fraction = {val_fraction + test_fraction:g} "
                        f"leaves no training data; make their sum less than 1")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int)
                                  or per_class < 1):
        raise UserError(f"split: per_class must be a positive integer or null, got {per_class!r}; "
                        f"set dataset.per_class to e.g. 10")
    counts = ds.class_counts()
    for label, count in enumerate(counts):
        if count < MIN_PER_CLASS:
            raise UserError(f"split: class {ds.class_names[label]!r} of dataset {ds.name or '?'} has "
                            f"{count} image(s); every class needs at least {MIN_PER_CLASS} "
                            f"(train, val, test): add images or drop the class")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in range(ds.num_classes):
        members = rng.permutation(np.flatnonzero(ds.labels == label))
        n_test, n_val = _cut_sizes(len(members), test_fraction, val_fraction)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:][:per_class])
    index = {key: np.sort(np.concatenate(chunks)).astype(np.int64) for key, chunks in parts.items()}
    return DataSplits(ds.subset(index["train"]), ds.subset(index["val"]), ds.subset(index["test"]),
                      index["train"], index["val"], index["test"])


def _cut_sizes(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """Test and val sizes for a class of n images: rounded, >= 1 when asked, leaving >= 1 train."""
    sizes = [max(1, round(n * f)) if f > 0 else 0 for f in (test_fraction, val_fraction)]
    while sum(sizes) > n - 1:
        big = 0 if sizes[0] >= sizes[1] else 1
        sizes[big] -= 1
    return sizes[0], sizes[1]
