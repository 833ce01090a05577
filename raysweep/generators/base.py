"""What every generator offers, and the registry that names them (timm-style)."""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np


class Generator(Protocol):
    """A class-conditional image generator that raysweep fits itself or loads.

    Images go in and come out as uint8 arrays of shape (N, H, W, C), the same layout as
    `raysweep.data.ImageDataset.images`.
    """

    name: str
    # What it can do, first what it does when named on its own: "sample" (from scratch),
    # "inpaint" (repaint masks of real images), "img2img" (vary real images).
    families: tuple[str, ...] = ("sample",)

    def config(self) -> dict[str, Any]:
        """Every hyperparameter that changes the weights or the samples (hashed into keys)."""

    def fit(self, images: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int,
            progress: Callable[[str], None] | None = None) -> None:
        """Train on the training split only."""

    def save(self, directory: str) -> None: ...

    def load(self, directory: str) -> None: ...

    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One image per (label, seed); image i depends only on the weights, labels[i] and seeds[i]."""


AUTO = "auto"


def device_kind(device: str) -> str:
    """"cuda" or "cpu": the kind of device a generator with this `device` option runs on."""
    if device == AUTO:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if str(device).startswith("cuda") else "cpu"


def resolve_auto(device: str, defaults: dict[str, dict[str, Any]], **options: Any) -> dict:
    """Options given as "auto" take `defaults[device_kind(device)]`; the rest stay as given.

    Generators resolve this in their constructor, so `config()` (what pool keys hash) holds
    the resolved values: a pool made with GPU defaults never answers for CPU defaults.
    """
    kind = device_kind(device)
    return {key: defaults[kind][key] if isinstance(value, str) and value == AUTO else value
            for key, value in options.items()}


_REGISTRY: dict[str, Callable[..., Generator]] = {}


def register_generator(name: str):
    """Class decorator: make `create_generator(name, **kwargs)` build this class."""

    def wrap(cls):
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def list_generators() -> list[str]:
    return sorted(_REGISTRY)


def generator_class(name: str) -> Callable[..., Generator]:
    """The class `create_generator(name, ...)` builds (for checking options against its
    signature before building one)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown generator {name!r}; known: {', '.join(list_generators())}")
    return _REGISTRY[name]


def create_generator(name: str, **kwargs) -> Generator:
    if name not in _REGISTRY:
        raise KeyError(f"unknown generator {name!r}; known: {', '.join(list_generators())}")
    return _REGISTRY[name](**kwargs)
