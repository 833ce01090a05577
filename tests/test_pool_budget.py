"""The bound on what one sweep may ask the store to hold: pools and bytes, one line each."""

from __future__ import annotations

import pytest

from raysweep.errors import UserError
from raysweep.store.budget import MAX_POOL_BYTES, MAX_POOLS, check_pool_budget


def test_the_shipped_specs_sizes_pass():
    check_pool_budget(27, 1000, 32 * 32 * 3)  # mask.yaml: 27 inpainted pools
    check_pool_budget(MAX_POOLS, 1, 1)


def test_too_many_pools_is_one_line_naming_the_bound():
    with pytest.raises(UserError, match=f"10000 pools, more than the bound of {MAX_POOLS}") \
            as error:
        check_pool_budget(10_000, 100, 1024)
    assert "\n" not in str(error.value) and "fewer seeds" in str(error.value)


def test_too_many_bytes_is_one_line_naming_the_size_and_the_bound():
    per_image = 512 * 512 * 3
    images = MAX_POOL_BYTES // per_image // 10 + 1  # ten pools just over the bound together
    with pytest.raises(UserError, match=r"10 pools of \d+ images at 786432 bytes each need "
                                        r"1,024 GiB, more than the bound of 1,024 GiB"):
        check_pool_budget(10, images, per_image)
    check_pool_budget(10, images - 1, per_image)
