"""The sweep's reference classifier (issue 8's, trained once on the real split and cached in the
store): the one network whose features and confidences judge synthetic images, for quality
metrics and filtering alike. The sweep trains or loads it before trials start; trials load it."""

from __future__ import annotations

from typing import Callable

from raysweep.data import DataSplits
from raysweep.training.reference import ReferenceClassifier, ensure_reference_classifier
from raysweep.store.store import SyntheticStore

# The reference classifier's training seed: fixed, so every trial and sweep on the same data
# shares one cached model.
REFERENCE_SEED = 0


def sweep_reference(store: SyntheticStore, splits: DataSplits,
                    log: Callable[[str], None] = print) -> ReferenceClassifier:
    return ensure_reference_classifier(store, splits.train, None, REFERENCE_SEED, val=splits.val,
                                       test=splits.test, log=log)
