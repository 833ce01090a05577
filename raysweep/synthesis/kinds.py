"""Synthesis kinds on the `augmentation` axis: `ddpm`, `gan+classic`, `vae+mixup`, ...

An augmentation value joins names with `+`. At most one of them is a synthesis kind (or a
generator's registry name); it picks the generator whose pool the trial's synthetic images come
from. The rest are online augmentations (kornia). A value without a synthesis kind uses the
spec's `generator`.
"""

from __future__ import annotations

from raysweep.errors import UserError

# Kind -> generator registry name. Kept here, not read from the registry, so that trials can
# parse their augmentation value without importing every generator (diffusers takes seconds).
SYNTHESIS_KINDS = {"ddpm": "ddpm", "gan": "dcgan", "vae": "vae", "text2img": "sd-text2img",
                   "inpaint": "sd-inpaint"}
GENERATOR_NAMES = frozenset(SYNTHESIS_KINDS.values())


def split_augmentation(value: str) -> tuple[str | None, str]:
    """(generator registry name or None, the online part, "none" when empty)."""
    generators, online = [], []
    for part in (p.strip() for p in str(value).split("+")):
        if part in SYNTHESIS_KINDS:
            generators.append(SYNTHESIS_KINDS[part])
        elif part in GENERATOR_NAMES:
            generators.append(part)
        else:
            online.append(part)
    if len(generators) > 1:
        raise UserError(f"sweep.augmentation: {value!r} names {len(generators)} synthesis kinds "
                        f"({', '.join(generators)}); a trial draws from one generator")
    return (generators[0] if generators else None), ("+".join(online) or "none")


def trial_generator(augmentation: str, default: str) -> str:
    """The generator a trial with this augmentation value takes its synthetic images from."""
    return split_augmentation(augmentation)[0] or default
