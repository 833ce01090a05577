"""What names a pool: one frozen value the plan makes and every layer passes on unchanged.

A `PoolId` is the key of the sweep's pool table, of the synthesis service's requests and stats,
of quality judging, sample grids and progress lines. It says which synthesis source makes the
images (`ddpm`, `inpaint-ddpm`, `img2img-ddpm`, `blur`, ...), with which seed, and, for kinds
that start from real images, how: the saliency `Mask` an inpainting source repaints, or the
`Variation` (strength, translation) an img2img source makes. A pool's content key in
the store hashes this and everything else its images depend on (weights, data, options; see
`service.pool_key` and `inpaint.inpaint_pool_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mask:
    """Which pixels an inpainting source repaints: `fraction` of them, ranked on a saliency map
    (`region`: background = least salient, foreground = most, random = a control)."""

    fraction: float
    region: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraction", float(self.fraction))
        object.__setattr__(self, "region", str(self.region))

    def describe(self) -> str:
        return f"{self.region} {self.fraction:g}"


@dataclass(frozen=True)
class Variation:
    """How an img2img source varies a real image: noised to `strength` of the schedule, then
    denoised toward its own class (`same`) or another one (`other`, with a soft label)."""

    strength: float
    translation: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", float(self.strength))
        object.__setattr__(self, "translation", str(self.translation))

    def describe(self) -> str:
        return f"strength {self.strength:g} {self.translation}"


@dataclass(frozen=True)
class PoolId:
    """One pool of a sweep.

    Args:
        source: the synthesis source's name (`SynthesisSource.name`): the service that fills it.
        seed: the pool's seed (every image's noise derives from it and the image's index).
        mask: the mask an inpainting source repaints; None for other sources.
        variation: how an img2img source varies real images; None for other sources.
    """

    source: str
    seed: int
    mask: Mask | None = None
    variation: Variation | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "seed", int(self.seed))

    def describe(self) -> str:
        """For people: `ddpm seed 0`, `inpaint-ddpm seed 1 background 0.35`,
        `img2img-ddpm seed 2 strength 0.5 other`."""
        parts = [self.source, f"seed {self.seed}"]
        for detail in (self.mask, self.variation):
            if detail is not None:
                parts.append(detail.describe())
        return " ".join(parts)

    @property
    def slug(self) -> str:
        """For file and metric names: `ddpm_seed0`, `inpaint-ddpm_seed1_background0.35`,
        `img2img-ddpm_seed2_strength0.5_other`."""
        slug = f"{self.source}_seed{self.seed}"
        if self.mask is not None:
            slug += f"_{self.mask.region}{self.mask.fraction:g}"
        if self.variation is not None:
            slug += f"_strength{self.variation.strength:g}_{self.variation.translation}"
        return slug

    def sort_key(self) -> tuple:
        mask = (self.mask.region, self.mask.fraction) if self.mask is not None else ()
        variation = (self.variation.strength, self.variation.translation) \
            if self.variation is not None else ()
        return self.source, self.seed, mask, variation
