"""Test-time augmentation: average (or max) a classifier's softmax over fixed views of a batch.

Every view is deterministic (a flip, one-pixel shifts, small fixed rotations), so evaluation
gives the same numbers on every run. Seed 000 did this with `ttach`; here it is a few views on
kornia's geometry functions so it runs on whatever device the batch is on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import kornia.geometry.transform as KT
import torch
import torch.nn.functional as F

from raysweep.errors import UserError

TTA_TRANSFORMS = ("identity", "hflip", "shift", "rotate")
"""identity: the batch itself. hflip: mirrored left-right (skipped when flips=False).
shift: four views moved by `shift_px` pixels left, right, up and down, borders replicated.
rotate: two views rotated by -`rotate_degrees` and +`rotate_degrees`, borders reflected."""


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move content by (dx, dy) pixels, replicating the border it uncovers."""
    height, width = x.shape[-2:]
    pad = max(abs(dx), abs(dy))
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - dy, pad - dx
    return padded[..., top:top + height, left:left + width]


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    angle = torch.full((x.shape[0],), float(degrees), device=x.device, dtype=x.dtype)
    return KT.rotate(x, angle, padding_mode="reflection", align_corners=True)


class TestTimeAugmentation:
    """Softmax of a classifier reduced over deterministic views of each image.

    Args:
        transforms: which view families to use, from `TTA_TRANSFORMS`.
        reduce: `mean` averages the probabilities over views; `max` takes the per-class maximum
            and renormalises each row to sum to 1.
        flips: False where a mirrored image means another class; `hflip` is then skipped.
        shift_px: pixels per shift view (1 or 2 suit 28-32 px images).
        rotate_degrees: angle of the two rotation views.

    Example:
        >>> tta = TestTimeAugmentation(("identity", "hflip", "shift"), flips=False)
        >>> probs = tta(model, images)   # (B, K), rows sum to 1
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, transforms: Sequence[str] = ("identity", "hflip", "shift"),
                 reduce: str = "mean", flips: bool = True, shift_px: int = 1,
                 rotate_degrees: float = 5.0) -> None:
        if isinstance(transforms, str):
            transforms = (transforms,)
        unknown = [name for name in transforms if name not in TTA_TRANSFORMS]
        if unknown:
            raise UserError(f"unknown test-time transform {unknown[0]!r}; "
                            f"known: {', '.join(TTA_TRANSFORMS)}")
        if not transforms:
            raise UserError(f"test-time augmentation needs at least one transform from "
                            f"{', '.join(TTA_TRANSFORMS)}")
        if reduce not in ("mean", "max"):
            raise UserError(f"test-time reduce must be 'mean' or 'max', got {reduce!r}")
        if isinstance(shift_px, bool) or not isinstance(shift_px, int) or not 1 <= shift_px <= 8:
            raise UserError(f"test-time shift_px={shift_px!r} must be an integer in [1, 8]")
        if not 0 < rotate_degrees <= 45:
            raise UserError(f"test-time rotate_degrees={rotate_degrees} is outside (0, 45]")
        self.reduce = reduce
        self.views: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        for name in dict.fromkeys(transforms):
            if name == "identity":
                self.views["identity"] = lambda x: x
            elif name == "hflip" and flips:
                self.views["hflip"] = lambda x: x.flip(-1)
            elif name == "shift":
                for label, (dx, dy) in {"left": (-1, 0), "right": (1, 0),
                                        "up": (0, -1), "down": (0, 1)}.items():
                    self.views[f"shift_{label}"] = (
                        lambda x, dx=dx * shift_px, dy=dy * shift_px: _shift(x, dx, dy))
            elif name == "rotate":
                for sign in (-1, 1):
                    self.views[f"rotate_{sign * rotate_degrees:+g}"] = (
                        lambda x, deg=sign * rotate_degrees: _rotate(x, deg))
        if not self.views:
            raise UserError(f"test-time transforms {tuple(transforms)} leave no view "
                            f"(hflip is skipped when flips change the label); add 'identity'")

    @property
    def view_names(self) -> list[str]:
        """The views evaluated, in order (e.g. `identity`, `shift_left`, …)."""
        return list(self.views)

    @torch.no_grad()
    def __call__(self, model: Callable[[torch.Tensor], torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
        """Class probabilities of `model` on `x`, reduced over the views.

        Args:
            model: maps images (B, C, H, W) to logits (B, K); put it in eval mode first.
            x: float images (B, C, H, W), preprocessed as the model expects.

        Returns:
            Probabilities (B, K) whose rows sum to 1.
        """
        # One forward per view rather than one stacked batch: memory stays that of plain eval.
        probs = torch.stack([F.softmax(model(view(x)).float(), dim=1)
                             for view in self.views.values()])
        if self.reduce == "mean":
            return probs.mean(dim=0)
        top = probs.amax(dim=0)
        return top / top.sum(dim=1, keepdim=True)
