"""Online augmentation registry (kornia) and test-time augmentation.

    from raysweep.augment import create_augmentation
    aug = create_augmentation("classic+cutmix", num_classes=10, flips=False,
                              params={"cutmix_alpha": 1.0}).to(device)
    x_aug, y_soft = aug(x, y)          # x (B, C, H, W) in [0, 1]; y int64 (B,)
    loss = F.cross_entropy(model(x_aug), y_soft)   # probability targets

Names: `none`, `classic`, `weather`, `cutout`, `mixup`, `cutmix`, `label_smoothing`, joined
with `+`. `AUGMENTATION_PARAMS` lists each name's magnitudes as (default, min, max).
"""

from raysweep.augment.registry import (
    AUGMENTATION_PARAMS,
    STAGES,
    Augmentation,
    check_augmentation,
    create_augmentation,
    list_augmentations,
    register_augmentation,
)
from raysweep.augment import online as _online  # noqa: F401  (registers image transforms)
from raysweep.augment import mixing as _mixing  # noqa: F401  (registers label mixing)
from raysweep.augment.tta import TTA_TRANSFORMS, TestTimeAugmentation

__all__ = [
    "AUGMENTATION_PARAMS",
    "STAGES",
    "TTA_TRANSFORMS",
    "Augmentation",
    "TestTimeAugmentation",
    "check_augmentation",
    "create_augmentation",
    "list_augmentations",
    "register_augmentation",
]
