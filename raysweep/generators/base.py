"""What every generator offers, the registry that names them (timm-style), and the base class
raysweep's own generators share.

`BaseGenerator` plays the part of diffusers' `ConfigMixin`: a constructor decorated with
`@register_to_config` records every one of its arguments, so `config()` (what keys hash) and
`save`/`load` (what a stored generator is rebuilt from) read the constructor's arguments in one
place, and a new option cannot stay out of the key unseen. It is our own small version because
importing `diffusers.configuration_utils` costs seconds in every process that imports the
generators (`raysweep validate`, every actor), and diffusers' version also records which
arguments were left at their defaults, which would make a key depend on how they were passed.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
from typing import Any, Callable, ClassVar, Protocol

import numpy as np


class Generator(Protocol):
    """A class-conditional image generator that raysweep fits itself or loads.

    Images go in and come out as uint8 arrays of shape (N, H, W, C), the same layout as
    `raysweep.data.ImageDataset.images`. Generators that vary real images also offer
    `sample_inpaint(images, masks, labels, seeds)` with `inpaint_config()`, and
    `sample_img2img(images, labels, seeds, strength)` with `img2img_config()`.
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


def denoising_steps(steps: int, strength: float) -> int:
    """How many of a sampler's `steps` an image-to-image call runs at `strength` in (0, 1]:
    int(strength * steps), as diffusers' img2img pipelines count them (`get_timesteps`), but at
    least one, so that every strength in (0, 1] changes the image."""
    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    return max(1, min(int(steps * float(strength)), int(steps)))


def _like_default(value: Any, default: Any) -> Any:
    """A number given for an option takes the type of its default when nothing is lost: YAML's
    `2` for a float option is 2.0, `100.0` for an int option is 100; anything else stays."""
    if isinstance(value, bool) or isinstance(default, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plain(value: Any) -> Any:
    """A recorded option as a JSON value: tuples become lists (as they come back from JSON)."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value


def register_to_config(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate a generator's `__init__`: its arguments become its recorded options.

    Before the constructor's body runs, every argument, defaults filled in, is set as the
    attribute of the same name (a number takes its default's type, `_like_default`); the body
    validates them and replaces those it resolves (an "auto" made concrete for the device).
    What the attributes hold when it returns is recorded, so a key depends on the resolved
    values only, never on which arguments were passed or left at their defaults. A constructor
    that adds options to its parent's takes the parent's as `**options`; its signature is then
    both together (`BaseGenerator.__init_subclass__`).
    """

    @functools.wraps(init)
    def recording_init(self, *args: Any, **kwargs: Any) -> None:
        signature = inspect.signature(recording_init)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        names = list(signature.parameters)[1:]  # without self
        for name in names:
            setattr(self, name, _like_default(bound.arguments[name],
                                              signature.parameters[name].default))
        init(self, *args, **kwargs)
        self._options = {name: _plain(getattr(self, name)) for name in names}

    return recording_init


class BaseGenerator:
    """The part every raysweep generator shares: options recorded from the constructor,
    `config()`, `save`/`load`, and the checks of what `fit` and the samplers are given.

    A subclass decorates `__init__` with `@register_to_config`, sets `data_shape` (and
    `num_classes`) in `fit`, and writes and reads its own state (weights, class names ...) in
    `_save_state` / `_load_state`.

    Class attributes:
        runtime_options: constructor arguments that change neither the weights nor any image
            (device, threads, batch sizes, speed switches): in no key.
        inpaint_options: arguments that only `sample_inpaint` reads: in `inpaint_config()`
            instead of `config()`, so that changing them keeps the trained weights.
        state_file: the JSON file `save` writes next to the generator's own files.
        needs_sources: why `sample(labels, seeds)` is refused by a generator that only varies
            real images, and which call to make instead.
        families: what it can do, first what it does when a spec names it on its own:
            "sample" (from scratch), "inpaint" (repaint masks of real images), "img2img"
            (vary real images); see `raysweep.synthesis.kinds`.
    """

    name: ClassVar[str] = ""
    runtime_options: ClassVar[frozenset[str]] = frozenset()
    inpaint_options: ClassVar[frozenset[str]] = frozenset()
    state_file: ClassVar[str] = ""
    needs_sources: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ("sample",)
    data_shape: tuple[int, int, int] | None = None  # (H, W, C) of the images fit() saw
    num_classes: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        own = inspect.signature(init)
        if not any(p.kind is p.VAR_KEYWORD for p in own.parameters.values()):
            return
        # `def __init__(self, *, strength=1.0, **options)`: its options and the parent's.
        inherited = inspect.signature(super(cls, cls).__init__).parameters
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        params += [p for name, p in inherited.items() if name not in own.parameters]
        init.__signature__ = own.replace(parameters=params)

    def options(self) -> dict[str, Any]:
        """Every constructor argument, as recorded (JSON values)."""
        return copy.deepcopy(self._options)

    def config(self) -> dict[str, Any]:
        """The recorded options that change the weights or the samples (hashed into keys),
        with the generator's name."""
        left_out = self.runtime_options | self.inpaint_options
        return {"generator": self.name,
                **{key: value for key, value in self.options().items() if key not in left_out}}

    def sample(self, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One image per (label, seed); refused (`needs_sources`) unless a subclass samples."""
        raise TypeError(f"{self.name}: {self.needs_sources}")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str) -> None:
        """Write the generator's own files and then `state_file`: its config and state."""
        if self.data_shape is None:
            raise RuntimeError(f"{self.name}.save: nothing to save; call fit() first")
        os.makedirs(directory, exist_ok=True)
        state = {"config": self.config(), **self._save_state(directory)}
        tmp = os.path.join(directory, self.state_file + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(directory, self.state_file))

    def load(self, directory: str) -> None:
        """Rebuild from what `save` wrote: the saved config replaces this instance's, while its
        runtime and inpaint options stay; then the generator's own state and files."""
        path = os.path.join(directory, self.state_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name}.load: {path} not found; is {directory!r} a "
                                    f"directory written by {type(self).__name__}.save?")
        with open(path) as handle:
            state = json.load(handle)
        config = {key: value for key, value in state.pop("config").items() if key != "generator"}
        kept = {key: value for key, value in self._options.items()
                if key in self.runtime_options | self.inpaint_options}
        self.__dict__.update(type(self)(**config, **kept).__dict__)
        self._load_state(directory, state)

    def _save_state(self, directory: str) -> dict[str, Any]:
        """Write the generator's own files into `directory`; return what else `load` needs."""
        raise NotImplementedError

    def _load_state(self, directory: str, state: dict[str, Any]) -> None:
        """Read back what `_save_state` wrote and returned."""
        raise NotImplementedError

    # ------------------------------------------------------------------ parts
    def _resolve_auto(self, defaults: dict[str, dict[str, Any]], *names: str) -> None:
        """The options `names` given as "auto" take this device's `defaults` (`resolve_auto`),
        so that they are recorded resolved; a number given takes the default's type."""
        device_defaults = defaults[device_kind(self.device)]
        resolved = resolve_auto(self.device, defaults,
                                **{name: getattr(self, name) for name in names})
        self.__dict__.update({name: _like_default(value, device_defaults[name])
                              for name, value in resolved.items()})

    def _require_positive_ints(self, **values: Any) -> None:
        """Raise ValueError naming the first of `values` that is not a whole number >= 1."""
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be a whole number >= 1, got {value!r}")

    def _torch_device(self):
        import torch

        if self.device == AUTO:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _check_fit_inputs(self, images: np.ndarray, labels: np.ndarray,
                          num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, H, W, C), N >= 1, with one int64 label in [0, num_classes) each."""
        images = np.asarray(images)
        labels = np.asarray(labels).astype(np.int64)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"{self.name}.fit: images must be uint8 (N, H, W, C), got "
                             f"{images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],) or images.shape[0] == 0:
            raise ValueError(f"{self.name}.fit: need one label per image and at least one image, "
                             f"got {images.shape[0]} images and labels of shape {labels.shape}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{self.name}.fit: labels must lie in [0, {num_classes}), got "
                             f"[{labels.min()}, {labels.max()}]")
        return images, labels

    def _check_request(self, method: str, labels: np.ndarray, seeds: np.ndarray,
                       images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """labels and seeds as int64 vectors, one of each per image (per label without images),
        labels within the classes `fit` saw; images, when given, uint8 (N, H, W, 1|3)."""
        if self.data_shape is None:
            raise RuntimeError(f"{self.name}.{method}: call fit() or load() first")
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        seeds = np.asarray(seeds).astype(np.int64).reshape(-1)
        if images is None:
            if labels.shape != seeds.shape:
                raise ValueError(f"{self.name}.{method}: need one seed per label, got "
                                 f"{labels.shape[0]} labels and {seeds.shape[0]} seeds")
        else:
            if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
                raise ValueError(f"{self.name}.{method}: images must be uint8 (N, H, W, 1|3), "
                                 f"got {images.dtype} {images.shape}")
            if not labels.shape == seeds.shape == images.shape[:1]:
                raise ValueError(f"{self.name}.{method}: need one label and one seed per image, "
                                 f"got {images.shape[0]} images, {labels.shape[0]} labels and "
                                 f"{seeds.shape[0]} seeds")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}.{method}: labels must lie in [0, {self.num_classes})")
        return labels, seeds



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
