"""Label-changing augmentations: `mixup`, `cutmix`, `label_smoothing` (soft labels that
`F.cross_entropy` takes as probability targets).

Mixup is a few lines of torch because kornia's `RandomMixUpV2` draws its weight uniformly from a
range and has no Beta(alpha, alpha) prior, which is what `mixup_alpha` means in the paper (and
seed 003). CutMix is kornia's `RandomCutMixV2`, whose weight is the exact pasted area.
All random draws happen on the CPU generator, so `torch.manual_seed` fixes them on any device.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn

from raysweep.augment.registry import register_augmentation


def _random_partners(batch_size: int) -> torch.Tensor:
    """A random pairing with no fixed point: i -> the next index along a random cycle."""
    order = torch.randperm(batch_size)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


class Mixup(nn.Module):
    """Zhang et al.'s mixup, one Beta(alpha, alpha) weight per image.

    Every image is mixed with a different image of the batch (a random cycle), so no draw is
    wasted on mixing an image with itself.

    Args:
        mixup_alpha: Beta concentration; 0 turns mixup off.
    """

    def __init__(self, mixup_alpha: float) -> None:
        super().__init__()
        self.alpha = mixup_alpha

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = x.shape[0]
        if self.alpha == 0 or batch_size < 2:
            return x, y
        alpha = torch.tensor(self.alpha)
        lam = torch.distributions.Beta(alpha, alpha).sample((batch_size,))
        partner = _random_partners(batch_size).to(x.device)
        lam = lam.to(device=x.device, dtype=x.dtype)
        x = lam.view(-1, 1, 1, 1) * x + (1 - lam).view(-1, 1, 1, 1) * x[partner]
        y = lam.view(-1, 1) * y + (1 - lam).view(-1, 1) * y[partner]
        return x, y


class CutMix(nn.Module):
    """Yun et al.'s CutMix through kornia's `RandomCutMixV2`.

    kornia reports labels as (label, partner label, weight); feeding it the batch indices
    instead of the labels gives the partner index, so already-soft labels mix correctly.

    Args:
        cutmix_alpha: Beta concentration of the kept area; 0 turns cutmix off.
    """

    def __init__(self, cutmix_alpha: float) -> None:
        super().__init__()
        self.alpha = cutmix_alpha
        self.cutmix = None
        if cutmix_alpha > 0:
            self.cutmix = K.RandomCutMixV2(num_mix=1, beta=cutmix_alpha, p=1.0,
                                           use_correct_lambda=True, data_keys=["input", "class"])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cutmix is None or x.shape[0] < 2:
            return x, y
        index = torch.arange(x.shape[0], device=x.device)
        x, mix = self.cutmix(x, index)
        # mix: (num_mix=1, B, 3) = (own index, partner index, share of the own image).
        partner = mix[0, :, 1].round().long()
        lam = mix[0, :, 2].to(y.dtype).view(-1, 1)
        return x, lam * y + (1 - lam) * y[partner]


class LabelSmoothing(nn.Module):
    """Szegedy et al.'s label smoothing on soft targets: (1 - eps) * y + eps / K.

    Args:
        label_smoothing: eps, the mass spread evenly over all K classes.
    """

    def __init__(self, label_smoothing: float) -> None:
        super().__init__()
        self.epsilon = label_smoothing

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, (1 - self.epsilon) * y + self.epsilon / y.shape[1]


@register_augmentation("mixup", stage="mixing", params={"mixup_alpha": (0.2, 0.0, 10.0)})
def build_mixup(num_classes: int, flips: bool, mixup_alpha: float) -> nn.Module:
    """Mixup (seed 003)."""
    return Mixup(mixup_alpha)


@register_augmentation("cutmix", stage="mixing", params={"cutmix_alpha": (1.0, 0.0, 10.0)})
def build_cutmix(num_classes: int, flips: bool, cutmix_alpha: float) -> nn.Module:
    """CutMix (seed 003)."""
    return CutMix(cutmix_alpha)


@register_augmentation("label_smoothing", stage="labels",
                       params={"label_smoothing": (0.1, 0.0, 0.5)})
def build_label_smoothing(num_classes: int, flips: bool, label_smoothing: float) -> nn.Module:
    """Label smoothing (seed 003)."""
    return LabelSmoothing(label_smoothing)
