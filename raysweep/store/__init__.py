"""The synthetic store: content-addressed pools and trained models, in a directory or on S3.

    from raysweep.store import SyntheticStore, PoolImages
    store = SyntheticStore(".raysweep/cache")        # or "s3://bucket/prefix"
    store.append(key, PoolImages(images, labels, seeds)); store.read(key, n)

`store.py` holds the layout and its rules (atomic, ordered, checksummed writes), `backends.py`
the bytes (local files or S3 objects), `cache_cli.py` what `raysweep cache` prints and removes,
`budget.py` the bound on how much one sweep may ask it to hold.
"""

from raysweep.store.backends import UnsafePath
from raysweep.store.store import (CorruptGenerator, CorruptPool, PoolImages, SyntheticStore,
                                  content_key)

__all__ = ["CorruptGenerator", "CorruptPool", "PoolImages", "SyntheticStore", "UnsafePath",
           "content_key"]
