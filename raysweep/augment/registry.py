"""The augmentation registry: one name per online idea, joined with `+` into one pipeline.

A registered component is an `nn.Module` whose `forward(x, y_soft)` returns `(x, y_soft)`:
images float (B, C, H, W) in [0, 1], soft labels float (B, K). Each component declares a stage,
and `create_augmentation` applies the stages in a fixed order whatever order the name lists
them in: image transforms first, then label mixing (mixup or cutmix), label smoothing last.
So `classic+mixup` and `mixup+classic` build the same pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from raysweep.errors import UserError

STAGES = ("image", "mixing", "labels")

ParamRange = tuple[float, float, float]
"""(default, min, max), both bounds inclusive."""


@dataclass(frozen=True)
class AugmentationEntry:
    """One registered component.

    Args:
        name: the registry name (`classic`, `mixup`, …).
        stage: one of `STAGES`; decides the order of application.
        params: magnitude parameters the builder takes, name -> (default, min, max).
        build: `build(num_classes, flips, **params) -> nn.Module`.
    """

    name: str
    stage: str
    params: dict[str, ParamRange]
    build: Callable[..., nn.Module]


_REGISTRY: dict[str, AugmentationEntry] = {}

AUGMENTATION_PARAMS: dict[str, dict[str, ParamRange]] = {}
"""Every registered name -> {param name: (default, min, max)}; filled by `register_augmentation`."""


def register_augmentation(name: str, *, stage: str, params: Mapping[str, ParamRange] | None = None):
    """Decorator: make `name` buildable by `create_augmentation`.

    Args:
        name: registry name; must not contain `+`.
        stage: `image`, `mixing` or `labels`; at most one `mixing` component per pipeline.
        params: magnitude parameters, name -> (default, min, max). Names are global across the
            registry, so that one flat `params` dict configures a whole `a+b` pipeline.
    """
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    if "+" in name:
        raise ValueError(f"augmentation name {name!r} must not contain '+'")
    params = dict(params or {})
    for param, (default, low, high) in params.items():
        owner = _param_owner(param)
        if owner is not None and owner != name:
            raise ValueError(f"parameter {param!r} of {name!r} is already declared by {owner!r}")
        if not low <= default <= high:
            raise ValueError(f"default {param}={default} of {name!r} is outside [{low}, {high}]")

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = AugmentationEntry(name, stage, params, build)
        AUGMENTATION_PARAMS[name] = params
        return build

    return wrap


def list_augmentations() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def check_augmentation(name: str, params: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """Validate an augmentation value and its parameters without building anything.

    Args:
        name: one registered name or several joined with `+` (`classic+cutmix`).
        params: magnitude overrides, param name -> value. A parameter of a registered component
            that `name` does not use is accepted and ignored, so that one sweep can share one
            params dict across augmentation values; a parameter no component declares is an error.

    Returns:
        The component names in the order they are applied.

    Raises:
        UserError: unknown or repeated name, `none` combined with others, two label-mixing
            components (mixup and cutmix), unknown parameter, or a value outside its range.
    """
    entries = _parse(name)
    _resolve_params(entries, params)
    return tuple(entry.name for entry in entries)


def create_augmentation(name: str, *, num_classes: int, flips: bool = True,
                        params: Mapping[str, float] | None = None) -> "Augmentation":
    """Build the training-time augmentation pipeline `name`.

    Args:
        name: one registered name or several joined with `+`; see `check_augmentation`.
        num_classes: K, the width of the soft labels.
        flips: False where a mirrored image means another class (digits); no horizontal flips then.
        params: magnitude overrides; None or a missing key means the registered default.

    Returns:
        An `Augmentation`; call it as `x_aug, y_soft = aug(x, y)`.
    """
    if int(num_classes) < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    entries = _parse(name)
    resolved = _resolve_params(entries, params)
    components = [
        entry.build(num_classes, flips, **{key: resolved[key] for key in entry.params})
        for entry in entries
    ]
    return Augmentation(name, tuple(e.name for e in entries), components, num_classes, resolved)


class Augmentation(nn.Module):
    """A pipeline of registered components applied in stage order.

    In training mode `forward(x, y)` returns augmented images and soft labels; in eval mode it
    returns the images unchanged and one-hot labels.

    Args:
        name: the value it was built from, as given.
        component_names: the components, in order of application.
        components: the built modules, same order.
        num_classes: K, the width of the soft labels.
        params: the resolved magnitudes of the components in use (defaults filled in).
    """

    def __init__(self, name: str, component_names: tuple[str, ...], components: list[nn.Module],
                 num_classes: int, params: dict[str, float]) -> None:
        super().__init__()
        self.name = name
        self.component_names = component_names
        self.components = nn.ModuleList(components)
        self.num_classes = int(num_classes)
        self.params = params

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch.

        Args:
            x: float images (B, C, H, W) in [0, 1], on any device.
            y: int64 class indices (B,), or soft labels (B, K) whose rows sum to 1 (img2img
                variants translated toward another class), same device as `x`.

        Returns:
            Augmented images (B, C, H, W) and soft labels (B, K) whose rows sum to 1.
        """
        if x.dim() != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        y_soft = y.to(x.dtype) if y.dim() == 2 else F.one_hot(y.long(), self.num_classes).to(x.dtype)
        if not self.training:
            return x, y_soft
        for component in self.components:
            x, y_soft = component(x, y_soft)
        return x, y_soft

    def extra_repr(self) -> str:
        return f"name={self.name!r}, params={self.params}"


def _parse(name: str) -> list[AugmentationEntry]:
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"augmentation must be a name such as 'classic', got {name!r}; "
                        f"known: {', '.join(list_augmentations())}")
    parts = [part.strip() for part in name.split("+")]
    unknown = [part for part in parts if part not in _REGISTRY]
    if unknown:
        raise UserError(f"unknown augmentation {unknown[0]!r} in {name!r}; "
                        f"known: {', '.join(list_augmentations())} (join several with '+')")
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        raise UserError(f"augmentation {name!r} names {repeated[0]!r} twice")
    if "none" in parts and len(parts) > 1:
        raise UserError(f"augmentation {name!r} combines 'none' with other names; drop 'none'")
    mixing = [part for part in parts if _REGISTRY[part].stage == "mixing"]
    if len(mixing) > 1:
        raise UserError(f"augmentation {name!r} combines {' and '.join(mixing)}; "
                        f"both mix labels, pick one")
    order = list(_REGISTRY)
    return sorted((_REGISTRY[part] for part in parts),
                  key=lambda e: (STAGES.index(e.stage), order.index(e.name)))


def _resolve_params(entries: list[AugmentationEntry],
                    params: Mapping[str, float] | None) -> dict[str, float]:
    params = dict(params or {})
    known = {key: spec for entry in _REGISTRY.values() for key, spec in entry.params.items()}
    for key, value in params.items():
        if key not in known:
            raise UserError(f"unknown augmentation parameter {key!r}; "
                            f"known: {', '.join(sorted(known))}")
        default, low, high = known[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"augmentation parameter {key}={value!r} must be a number "
                            f"in [{low}, {high}]")
        if not low <= value <= high:
            raise UserError(f"augmentation parameter {key}={value} is outside [{low}, {high}]")
    return {key: float(params.get(key, default))
            for entry in entries for key, (default, _, _) in entry.params.items()}


def _param_owner(param: str) -> str | None:
    for entry in _REGISTRY.values():
        if param in entry.params:
            return entry.name
    return None
