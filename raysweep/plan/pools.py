"""Which pools a sweep needs: the synthesis sources its trials draw from, and each pool's size.

A pool is named by its source, its seed and, for an inpainting source, its mask; the plan asks
for the first `count` images of each (the largest prefix any trial of the sweep reads).
"""

from __future__ import annotations

from dataclasses import dataclass

from raysweep.spec import Spec
from raysweep.synthesis.kinds import SynthesisSource, trial_source

# One pool larger than this is a typo in a ratio, not a study (at 32x32 RGB it is ~6 GB).
MAX_POOL_IMAGES = 2_000_000



@dataclass(frozen=True)
class PoolRequest:
    """The sweep needs the first `count` images of this source's pool for this seed (and, for
    an inpainting source, this mask)."""

    generator: str
    seed: int
    count: int
    mask_fraction: float | None = None
    mask_region: str | None = None

    @property
    def pool_id(self) -> int | tuple:
        """What the synthesis service calls this pool: the seed, or (seed, fraction, region)."""
        if self.mask_fraction is None:
            return self.seed
        return self.seed, self.mask_fraction, self.mask_region



def sources_used(spec: Spec) -> dict[str, SynthesisSource]:
    """The synthesis sources trials draw from, by name (none when every ratio is 0)."""
    if not spec.needs_synthetic:
        return {}
    sources = {trial_source(value, spec.generator.name)
               for value in spec.axes()["augmentation"].candidates()}
    return {source.name: source for source in sorted(sources, key=lambda s: s.name)}



def generators_used(spec: Spec) -> dict[str, dict]:
    """The sources trials draw from, with their generator's options."""
    return {name: spec.generator.options_for(source.generator)
            for name, source in sources_used(spec).items()}



def describe_pool(pool: PoolRequest) -> str:
    if pool.mask_fraction is None:
        return f"seed {pool.seed}"
    return f"seed {pool.seed} {pool.mask_region} {pool.mask_fraction:g}"
