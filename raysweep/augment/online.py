"""Image-space online augmentations on kornia: `none`, `classic`, `weather`, `cutout`.

Each component takes and returns `(x, y_soft)` and leaves the labels alone. Everything runs on
the device the batch is on; kornia draws its random parameters from torch's global generator on
the CPU, so `torch.manual_seed` fixes the output whatever the device.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from raysweep.augment.registry import register_augmentation


class Identity(nn.Module):
    """Returns the batch unchanged."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y


@register_augmentation("none", stage="image")
def build_none(num_classes: int, flips: bool) -> nn.Module:
    """The baseline: no online augmentation."""
    return Identity()


class ClassicAugmentation(nn.Module):
    """Seed 001's pipeline: flip (optional), rotation, color jitter, perspective.

    Rotation and perspective fill the border by reflection, as seed 001 did, so no black corners
    appear. kornia's `RandomPerspective` has no padding mode, so the batch is reflect-padded by
    the largest corner shift, warped, and cropped back: the crop never sees the warp's empty fill.

    Args:
        flips: apply a horizontal flip with probability 0.5.
        rotation_degrees: rotate by a uniform angle in [-rotation_degrees, rotation_degrees].
        brightness: brightness jitter factor (torchvision semantics).
        contrast: contrast jitter factor.
        saturation: saturation jitter factor; 3-channel images only.
        hue: hue jitter, in turns of the hue circle, at most 0.5; 3-channel images only.
        perspective: largest corner shift as a fraction of the image side.
    """

    def __init__(self, flips: bool, rotation_degrees: float, brightness: float, contrast: float,
                 saturation: float, hue: float, perspective: float) -> None:
        super().__init__()
        self.flip = K.RandomHorizontalFlip(p=0.5) if flips else None
        self.rotate = K.RandomAffine(degrees=rotation_degrees, padding_mode="reflection", p=1.0)
        self.color_rgb = K.ColorJitter(brightness, contrast, saturation, hue, p=1.0)
        self.color_gray = K.ColorJitter(brightness, contrast, 0.0, 0.0, p=1.0)
        self.perspective_fraction = perspective
        # With a pad of fraction*side on each border, kornia's shift (scale * padded side / 2)
        # equals fraction * side when scale = 2f / (1 + 2f).
        self.perspective = K.RandomPerspective(2 * perspective / (1 + 2 * perspective), p=1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flip is not None:
            x = self.flip(x)
        x = self.rotate(x)
        x = self.color_rgb(x) if x.shape[1] == 3 else self.color_gray(x)
        if self.perspective_fraction > 0:
            height, width = x.shape[-2:]
            pad_h = math.ceil(self.perspective_fraction * height)
            pad_w = math.ceil(self.perspective_fraction * width)
            padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
            x = self.perspective(padded)[..., pad_h:pad_h + height, pad_w:pad_w + width]
        return x.clamp(0.0, 1.0), y


@register_augmentation("classic", stage="image", params={
    "rotation_degrees": (15.0, 0.0, 180.0),
    "brightness": (0.2, 0.0, 1.0),
    "contrast": (0.2, 0.0, 1.0),
    "saturation": (0.2, 0.0, 1.0),
    "hue": (0.05, 0.0, 0.5),
    "perspective": (0.1, 0.0, 0.5),
})
def build_classic(num_classes: int, flips: bool, **params: float) -> nn.Module:
    """Seed 001's geometric and photometric pipeline."""
    return ClassicAugmentation(flips, **params)


class WeatherAugmentation(nn.Module):
    """Seed 000's weather: kornia's `RandomRain` and `RandomSnow`, each with probability p.

    Rain draws bright line segments whose count and length scale with the image, so a 28x28
    digit gets a few short drops rather than kornia's default of 1000+ 5-20 px drops. Snow
    brightens the darker regions; kornia's `RandomSnow` works in HLS and needs 3 channels, so a
    grayscale batch is repeated to 3 channels and averaged back (exact: gray stays gray in HLS).

    Args:
        weather_p: probability of rain, and independently of snow, per image.
        rain_drops: largest number of drops per pixel; each image draws between half and all.
        snow_coefficient: largest lightness below which a pixel gets snow; drawn in [c/2, c].
        snow_brightness: largest factor that brightens snowed pixels; drawn in [1, b].
    """

    def __init__(self, weather_p: float, rain_drops: float, snow_coefficient: float,
                 snow_brightness: float) -> None:
        super().__init__()
        self.weather_p = weather_p
        self.rain_drops = rain_drops
        self.snow = K.RandomSnow(snow_coefficient=(snow_coefficient / 2, snow_coefficient),
                                 brightness=(1.0, snow_brightness), p=weather_p)
        # RandomRain's drop sizes are absolute pixels; one module per image size, built on demand.
        self._rain: dict[tuple[int, int], K.RandomRain] = {}

    def _rain_for(self, height: int, width: int) -> K.RandomRain:
        if (height, width) not in self._rain:
            most = max(1, round(self.rain_drops * height * width))
            slant = width // 16
            self._rain[(height, width)] = K.RandomRain(
                number_of_drops=(max(1, most // 2), most),
                drop_height=(max(1, height // 8), max(1, height // 4)),
                drop_width=(-slant, slant),
                p=self.weather_p,
            )
        return self._rain[(height, width)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.weather_p == 0:
            return x, y
        if self.rain_drops > 0:
            x = self._rain_for(*x.shape[-2:])(x)
        if x.shape[1] == 3:
            x = self.snow(x)
        else:
            x = self.snow(x.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True)
        return x.clamp(0.0, 1.0), y


@register_augmentation("weather", stage="image", params={
    "weather_p": (0.5, 0.0, 1.0),
    "rain_drops": (0.01, 0.0, 0.1),
    "snow_coefficient": (0.5, 0.0, 1.0),
    "snow_brightness": (2.5, 1.0, 5.0),
})
def build_weather(num_classes: int, flips: bool, **params: float) -> nn.Module:
    """Seed 000's rain and snow."""
    return WeatherAugmentation(**params)


class Cutout(nn.Module):
    """kornia's `RandomErasing`: one rectangle per image set to 0.

    Args:
        cutout_p: probability per image.
        cutout_scale_max: largest erased area as a fraction of the image (smallest: 0.02).
    """

    def __init__(self, cutout_p: float, cutout_scale_max: float) -> None:
        super().__init__()
        self.erase = K.RandomErasing(scale=(0.02, cutout_scale_max), ratio=(0.3, 3.3), value=0.0,
                                     p=cutout_p)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.erase(x), y


@register_augmentation("cutout", stage="image", params={
    "cutout_p": (1.0, 0.0, 1.0),
    "cutout_scale_max": (0.25, 0.02, 0.9),
})
def build_cutout(num_classes: int, flips: bool, **params: float) -> nn.Module:
    """DeVries & Taylor's cutout, as seed 003 used it."""
    return Cutout(**params)
