"""Synthesis kinds on the `augmentation` axis: `ddpm`, `gan+classic`, `inpaint`, `blur`, ...

An augmentation value joins names with `+`. At most one of them is a synthesis kind (or a
generator's registry name); it picks where the trial's synthetic images come from. The rest
are online augmentations (kornia). A value without a synthesis kind uses the spec's `generator`.

Two families of kinds:

* class-conditional (`ddpm`, `gan`, `vae`, `text2img`): images sampled from (label, seed);
* inpainting (`inpaint`, `blur`, `erase`, or naming `sd-inpaint`): real training images with a
  saliency mask repainted (`mask_fraction`, `mask_region`). `inpaint` repaints with the spec's
  generator (`ddpm` by default, by RePaint; `sd-inpaint` when `generator.name` says so);
  `blur` and `erase` are the non-generative controls of the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysweep.errors import UserError

# Kind -> generator registry name. Kept here, not read from the registry, so that trials can
# parse their augmentation value without importing every generator (diffusers takes seconds).
SYNTHESIS_KINDS = {"ddpm": "ddpm", "gan": "dcgan", "vae": "vae", "text2img": "sd-text2img"}
# Inpainting kinds -> generator; None: the spec's generator.
INPAINT_KINDS = {"inpaint": None, "blur": "blur", "erase": "erase"}
# Generators that can only repaint masks (no class-conditional sampling).
INPAINT_ONLY = frozenset({"sd-inpaint", "blur", "erase"})
GENERATOR_NAMES = frozenset(SYNTHESIS_KINDS.values()) | INPAINT_ONLY


@dataclass(frozen=True)
class SynthesisSource:
    """Where a trial's synthetic images come from: a generator, sampling or repainting."""

    generator: str
    inpaint: bool

    @property
    def name(self) -> str:
        """Unique per source: `ddpm` samples, `inpaint-ddpm` repaints with the same weights."""
        if self.inpaint and self.generator not in INPAINT_ONLY:
            return f"inpaint-{self.generator}"
        return self.generator


def split_augmentation(value: str) -> tuple[str | None, str]:
    """(synthesis kind or generator registry name or None, the online part, "none" when empty)."""
    kinds, online = [], []
    for part in (p.strip() for p in str(value).split("+")):
        if part in SYNTHESIS_KINDS:
            kinds.append(SYNTHESIS_KINDS[part])
        elif part in INPAINT_KINDS or part in GENERATOR_NAMES:
            kinds.append(part)
        else:
            online.append(part)
    if len(kinds) > 1:
        raise UserError(f"sweep.augmentation: {value!r} names {len(kinds)} synthesis kinds "
                        f"({', '.join(kinds)}); a trial draws from one generator")
    return (kinds[0] if kinds else None), ("+".join(online) or "none")


def trial_source(augmentation: str, default: str) -> SynthesisSource:
    """The source a trial with this augmentation value takes its synthetic images from."""
    kind = split_augmentation(augmentation)[0]
    if kind in INPAINT_KINDS:
        return SynthesisSource(INPAINT_KINDS[kind] or default, True)
    generator = kind or default
    return SynthesisSource(generator, generator in INPAINT_ONLY)

