"""Which pools a sweep needs: the synthesis sources its trials draw from, and each pool's size.

Each pool is a `PoolId` (source, seed, and a mask or a variation for sources that start from
real images), made here once; the plan asks for the first `count` images of each, the largest
prefix any trial of the sweep can read.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysweep.errors import UserError
from raysweep.spec import Spec
from raysweep.synthesis.identity import Mask, PoolId, Variation
from raysweep.synthesis.kinds import SynthesisSource, trial_source
from raysweep.training.compose import synthetic_count

# One pool larger than this is a typo in a ratio, not a study (at 32x32 RGB it is ~6 GB).
MAX_POOL_IMAGES = 2_000_000


@dataclass(frozen=True)
class PoolRequest:
    """The sweep needs the first `count` images of `pool`."""

    pool: PoolId
    count: int


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


def planned_pools(spec: Spec, n_real: int) -> list[PoolRequest]:
    """Every pool the sweep's trials can read, each sized for the largest ratio.

    Raises:
        UserError: a pool would hold more than MAX_POOL_IMAGES images.
    """
    sources = sources_used(spec)
    if not sources:
        return []
    axes = spec.axes()
    ratio = axes["synthetic_ratio"].max_value
    count = synthetic_count(ratio, spec.synthesis.mode, n_real)
    if count > MAX_POOL_IMAGES:
        raise UserError(f"sweep.synthetic_ratio: {ratio:g} x {n_real} real images plans {count} "
                        f"synthetic images per pool, more than {MAX_POOL_IMAGES}; use a smaller "
                        f"ratio or dataset.per_class")
    masks = [Mask(fraction, region) for fraction in axes["mask_fraction"].candidates()
             for region in axes["mask_region"].candidates()]
    variations = [Variation(strength, translation)
                  for strength in axes["strength"].candidates()
                  for translation in axes["translation"].candidates()]
    requests = []
    for name, source in sources.items():
        for seed in axes["seed"].candidates():
            if source.inpaint:
                requests += [PoolRequest(PoolId(name, seed, mask=mask), count) for mask in masks]
            elif source.img2img:
                requests += [PoolRequest(PoolId(name, seed, variation=variation), count)
                             for variation in variations]
            else:
                requests.append(PoolRequest(PoolId(name, seed), count))
    return requests
