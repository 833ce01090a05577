"""Synthesis kinds on the `augmentation` axis: `ddpm`, `gan+classic`, `inpaint`, `img2img`, ...

An augmentation value joins names with `+`. At most one of them is a synthesis kind (or a
generator's registry name); it picks where the trial's synthetic images come from. The rest
are online augmentations (kornia). A value without a synthesis kind uses the spec's `generator`.

Three families of sources, by what a generator can do (the methods it has):

* `sample` (`ddpm`, `gan`, `vae`, `text2img`): images sampled from (label, seed);
* `inpaint` (`inpaint`, `blur`, `erase`, `sd-inpaint`): real training images with a saliency
  mask repainted (`mask_fraction`, `mask_region`); `inpaint` repaints with the spec's
  generator (`ddpm` by RePaint, or `sd-inpaint`), `blur` and `erase` are the non-generative
  controls of the same masks;
* `img2img` (`img2img`, `sd-img2img`): real training images noised to `strength` and denoised
  toward their own class or another (`translation`, SDEdit / Diff-Mix); `img2img` varies with
  the spec's generator (`ddpm`, or `sd-img2img`).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysweep.errors import UserError

# Short names a spec may use for a generator that samples.
KIND_ALIASES = {"gan": "dcgan", "text2img": "sd-text2img"}
# Kinds that name a family and take the spec's generator.
FAMILY_KINDS = ("inpaint", "img2img")


@dataclass(frozen=True)
class SynthesisSource:
    """Where a trial's synthetic images come from: a generator, and how it uses real images."""

    generator: str
    family: str  # "sample", "inpaint" or "img2img"

    @property
    def inpaint(self) -> bool:
        return self.family == "inpaint"

    @property
    def img2img(self) -> bool:
        return self.family == "img2img"

    @property
    def name(self) -> str:
        """Unique per source: `ddpm` samples, `inpaint-ddpm` repaints and `img2img-ddpm` varies
        real images with the same weights; a generator with one family is named as it is."""
        if self.family != "sample" and family_of(self.generator) != self.family:
            return f"{self.family}-{self.generator}"
        return self.generator


def family_of(generator: str) -> str:
    """The family a generator serves when named on its own: the first of the families it
    declares (`ddpm` samples; `sd-inpaint` and the controls repaint; `sd-img2img` varies)."""
    return families_of(generator)[0]


def families_of(generator: str) -> tuple[str, ...]:
    """The families a generator declares (`Generator.families`); unknown names sample
    (`validate` names them)."""
    from raysweep.generators import generator_class, list_generators

    if generator not in list_generators():
        return ("sample",)
    return tuple(getattr(generator_class(generator), "families", ("sample",)))


def split_augmentation(value: str) -> tuple[str | None, str]:
    """(synthesis kind or generator registry name or None, the online part, "none" when empty)."""
    from raysweep.generators import list_generators

    generators = set(list_generators())
    kinds, online = [], []
    for part in (p.strip() for p in str(value).split("+")):
        if part in KIND_ALIASES:
            kinds.append(KIND_ALIASES[part])
        elif part in FAMILY_KINDS or part in generators:
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
    if kind in FAMILY_KINDS:
        return SynthesisSource(default, kind)
    generator = kind or default
    return SynthesisSource(generator, family_of(generator))
