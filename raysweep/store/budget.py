"""How much a sweep may ask the store to hold: a bound on the number of pools and their bytes.

The plan knows, before any compute, how many pools a sweep needs and how many images each
holds; `check_pool_budget` turns a typo that would fill a disk or a bucket (a seed list of
10,000, a ratio axis meant for another dataset) into one line at `validate`.
"""

from __future__ import annotations

from raysweep.errors import UserError

# More pools than any study compares (mask.yaml, the largest shipped spec, has 27).
MAX_POOLS = 1000
# What one sweep may add to a store: 1 TiB (2,000 pools' worth of ratio.yaml's, or 1.3 million
# Stable Diffusion images at 512x512).
MAX_POOL_BYTES = 2**40


def check_pool_budget(n_pools: int, images_per_pool: int, bytes_per_image: int) -> None:
    """Refuse a sweep whose pools would exceed `MAX_POOLS` or `MAX_POOL_BYTES` in all.

    Args:
        n_pools: the pools the sweep fills.
        images_per_pool: the most images any one of them holds.
        bytes_per_image: stored bytes per image, provenance included (pixels, and for an
            inpainted pool its mask and saliency map).

    Raises:
        UserError: one line with the count, the size, the bound and what to shrink.
    """
    total = n_pools * images_per_pool * bytes_per_image
    shrink = ("sweep fewer seeds, mask fractions and regions, strengths and translations, or "
              "lower synthetic_ratio")
    if n_pools > MAX_POOLS:
        raise UserError(f"synthesis: the sweep needs {n_pools} pools, more than the bound of "
                        f"{MAX_POOLS}; {shrink}")
    if total > MAX_POOL_BYTES:
        raise UserError(f"synthesis: {n_pools} pools of {images_per_pool} images at "
                        f"{bytes_per_image} bytes each need {total / 2**30:,.0f} GiB, more than "
                        f"the bound of {MAX_POOL_BYTES / 2**30:,.0f} GiB; {shrink}")
