"""The dataset registry (timm-style): `create_dataset("mnist5k")`, `list_datasets()`.

An entry is a function that returns an `ImageDataset`, registered with `@register_dataset`.
Its keyword arguments are the options a spec may set under `dataset:`. `image_size` is accepted
by every entry: entries that take it themselves get it, the others are resized afterwards.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from raysweep.data.base import ImageDataset, resize_images
from raysweep.data.splits import DataSplits, split_dataset
from raysweep.errors import UserError

__all__ = [
    "DataSplits", "ImageDataset", "create_dataset", "list_datasets", "load_splits",
    "register_dataset", "resize_images", "split_dataset",
]

DatasetFactory = Callable[..., ImageDataset]
_REGISTRY: dict[str, DatasetFactory] = {}


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Function decorator: make `create_dataset(name, **options)` call this function."""

    def wrap(factory: DatasetFactory) -> DatasetFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def dataset_options(name: str) -> list[str]:
    """The options `create_dataset(name, ...)` accepts, `image_size` included."""
    params = inspect.signature(_lookup(name)).parameters
    return sorted(set(params) | {"image_size"})


def create_dataset(name: str, **options: Any) -> ImageDataset:
    """Build the named dataset.

    Args:
        name: a registered name (see `list_datasets()`).
        **options: the entry's own options, plus `image_size: int | None` for every entry
            (resize to image_size x image_size; None keeps the entry's default size).

    Raises:
        UserError: unknown name, unknown option, bad `image_size`, or the entry's own checks.
    """
    factory = _lookup(name)
    params = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(params) - {"image_size"})
    if unknown:
        raise UserError(f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
                        f"known options: {', '.join(dataset_options(name))}")
    missing = sorted(n for n, p in params.items() if p.default is inspect.Parameter.empty
                     and p.kind is not inspect.Parameter.VAR_KEYWORD and n not in options)
    if missing:
        raise UserError(f"dataset {name!r}: missing option(s) {', '.join(missing)}; "
                        f"set dataset.{missing[0]} in the spec")
    entry_resizes = "image_size" in params
    image_size = options.get("image_size") if entry_resizes else options.pop("image_size", None)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise UserError(f"dataset {name!r}: image_size must be a positive integer or null, "
                        f"got {image_size!r}; set dataset.image_size to e.g. 32")
    dataset = factory(**options)
    if not entry_resizes and image_size is not None:
        dataset = dataset.resized(image_size)
    if not dataset.name:
        dataset = dataclasses.replace(dataset, name=name)
    return dataset


def load_splits(dataset: dict) -> DataSplits:
    """The real train/val/test splits a spec's `dataset` block names (deterministic).

    Args:
        dataset: the spec's `dataset` block as a dict (`Spec.dataset.model_dump()`).
    """
    full = create_dataset(dataset["name"], **dataset["options"])
    return split_dataset(full, val_fraction=dataset["val_fraction"],
                         test_fraction=dataset["test_fraction"],
                         per_class=dataset["per_class"], seed=dataset["split_seed"])


def _lookup(name: str) -> DatasetFactory:
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset {name!r}; set dataset.name to one of: "
                        f"{', '.join(list_datasets())}")
    return _REGISTRY[name]


# Built-in entries register themselves on import; they need register_dataset defined above.
from raysweep.data import digits, folder, mnist5k  # noqa: E402,F401
